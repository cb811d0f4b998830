"""One batch of customer inputs -> new states, triggers and outcomes. No faust, no I/O.

The app feeds it what a `take_events` batch delivered (valid events and silence
ticks), with the current states; it scores every decision point in one
`predict_proba` call and returns everything the app must write. Benchmarks and
tests drive the same function.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from worker.core.events import Event
from worker.core.features import FEATURE_NAMES, features
from worker.core.messages import build_trigger
from worker.core.policy import Policy
from worker.core.state import (
    EMPTY,
    CustomerState,
    apply_keyed,
    event_key,
    is_late,
    is_redelivered,
    with_fired,
)
from worker.core.triggers import (
    CHECKED,
    Fire,
    Suppressed,
    decide_memory,
    earliest_possible_deadline,
    pending_deadline,
)

MAX_CATCH_UP = 64  # deadlines one event can close: 3 + open tickets (at most MAX_TICKETS)


class Item(NamedTuple):
    """One input: a valid event, or a silence tick at `deadline` (event is None). An event
    read from Kafka names its record: `source` (worker.core.state.source_code of its
    topic-partition, the original one for a forwarded event) and `offset`."""

    customer_id: str
    event: Event | None = None
    deadline: float = 0.0
    ref: Any = None  # the app's handle on the source message (for dead letters)
    source: int = 0
    offset: int = -1  # -1: no record (replays, training): only event ids de-duplicate


@dataclass
class Result:
    states: dict[str, CustomerState] = field(default_factory=dict)
    deadlines: dict[str, float | None] = field(default_factory=dict)
    triggers: list[dict] = field(default_factory=list)
    holdouts: Counter = field(default_factory=Counter)
    quiet: Counter = field(default_factory=Counter)  # decided on old history, not sent
    suppressed: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # (event type, outcome)
    late: list[Item] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class _Point(NamedTuple):
    customer_id: str
    state: CustomerState
    now: float
    cause: Event | None
    quiet: bool  # decide and remember, but send nothing (history older than emit_max_age_s)


class Model(Protocol):
    """What the pipeline needs of a model (worker.model.artifact.ModelArtifact is one; tests
    build small ones): churn probabilities and the reasons behind them, a batch at a time."""

    @property
    def version(self) -> str: ...

    def score(self, rows: np.ndarray) -> np.ndarray: ...

    def explain(self, rows: np.ndarray) -> list[list[dict]]: ...


@dataclass(frozen=True)
class Context:
    model: Model
    policy: Policy
    lateness_s: float
    emitted_at: float                 # wall time of this batch, stamped on triggers
    event_clock: bool = False         # True: "now" is event time (replays); False: wall time
    emit_max_age_s: float = float("inf")

    @property
    def wall_now(self) -> float | None:
        return None if self.event_clock else self.emitted_at


def process(items: list[Item], states: Mapping[str, CustomerState], ctx: Context) -> Result:
    result = Result()
    points: list[_Point] = []
    current: dict[str, CustomerState] = {}
    for item in items:
        state = current.get(item.customer_id) or states.get(item.customer_id) or EMPTY
        current[item.customer_id] = _advance(item, state, ctx, points, result)
    # an explicit width: a batch of only duplicates, late events or early ticks has no rows
    rows = np.array([features(p.state, p.now) for p in points], dtype=float).reshape(len(points), len(FEATURE_NAMES))
    result.scores = ctx.model.score(rows).tolist()  # Python floats: indexed per point below
    _decide_all(points, rows, result.scores, current, ctx, result)
    # a tick for a customer this worker no longer holds must not create an empty record; such
    # a customer's state is EMPTY itself (compared by identity: equality compares every field)
    result.states = {cid: s for cid, s in current.items() if s is not EMPTY}
    result.deadlines = {cid: pending_deadline(ctx.policy, s) for cid, s in result.states.items()}
    return result


def merge(into: Result, other: Result) -> None:
    """Add `other` (a later run over later items) to `into`."""
    into.states.update(other.states)
    into.deadlines.update(other.deadlines)
    into.triggers += other.triggers
    into.late += other.late
    into.scores += other.scores
    for counts, more in ((into.holdouts, other.holdouts), (into.quiet, other.quiet),
                         (into.suppressed, other.suppressed), (into.outcomes, other.outcomes)):
        counts.update(more)


def _advance(item: Item, state: CustomerState, ctx: Context, points: list[_Point], result: Result) -> CustomerState:
    event = item.event
    if event is None:
        return _close_due(item.customer_id, state, item.deadline, ctx, points)
    key = event_key(event.event_id)
    if (item.offset >= 0 and is_redelivered(state, item.source, item.offset)) or key in state.recent_ids:
        result.outcomes[(event.type, "duplicate")] += 1
        return state
    if is_late(state, event, ctx.lateness_s):
        result.outcomes[(event.type, "late")] += 1
        result.late.append(item)
        return state
    # silence that ended before this event still counts, decided at its own deadline
    state = _close_due(item.customer_id, state, event.occurred_at, ctx, points)
    state = apply_keyed(state, event, key,
                        {**state.applied, item.source: item.offset} if item.offset >= 0 else state.applied)
    if event.occurred_at < state.fired.get(CHECKED, 0.0):
        # an event behind the last silence check arrived after the clock had passed it
        # (forwarded through the repartition topic while the watermark moved on, or delayed
        # by its producer): a deadline it brings before that check (its ticket's SLA, its
        # activity's follow-up check) would never come due, so silence is checked again from
        # its time. Deadlines already decided are decided again with the new state, at their
        # own times; a trigger already sent for an episode is not sent twice.
        state = _checked_until(state, event.occurred_at)
    result.outcomes[(event.type, "applied")] += 1
    quiet = _quiet(event.occurred_at, ctx)
    # old history is decided at its own time, as a replay would: deciding it at wall time
    # would judge a stale state "lapsed" and start cooldowns that block real triggers
    now = state.last_seen if ctx.event_clock or quiet else max(ctx.emitted_at, event.occurred_at)
    points.append(_Point(item.customer_id, state, now, event, quiet))
    return state


def _close_due(customer_id: str, state: CustomerState, until: float, ctx: Context,
               points: list[_Point]) -> CustomerState:
    """A decision point at every pending deadline up to `until`, each at its own time."""
    if until < earliest_possible_deadline(ctx.policy, state):
        return state  # the common case: an active customer, nothing can be due yet
    for _ in range(MAX_CATCH_UP):
        due = pending_deadline(ctx.policy, state)
        if due is None or due > until:
            break
        state = _checked_until(state, due)
        points.append(_Point(customer_id, state, due, None, _quiet(due, ctx)))
    return state


def _checked_until(state: CustomerState, t: float) -> CustomerState:
    """The state with its silence recorded as checked up to `t` (later deadlines are pending)."""
    return with_fired(state, fired={**state.fired, CHECKED: t})


def _quiet(event_time: float, ctx: Context) -> bool:
    return ctx.wall_now is not None and ctx.wall_now - event_time > ctx.emit_max_age_s


def _decide_all(points: list[_Point], rows: np.ndarray, scores: list[float], current: dict[str, CustomerState],
                ctx: Context, result: Result) -> None:
    memory = {cid: s.fired for cid, s in current.items()}
    fired: list[tuple[int, Fire]] = []
    for i, point in enumerate(points):
        decisions, memory[point.customer_id] = decide_memory(
            ctx.policy, point.customer_id, point.state, memory[point.customer_id], scores[i],
            point.now, point.cause)
        for d in decisions:
            if isinstance(d, Suppressed):
                result.suppressed[(d.type, d.reason)] += 1
            elif d.held_out:
                result.holdouts[d.type] += 1
            elif point.quiet:
                result.quiet[d.type] += 1
            else:
                fired.append((i, d))
    for cid, state in current.items():
        if memory[cid] is not state.fired:
            current[cid] = with_fired(state, fired=memory[cid])
    _build(points, rows, scores, fired, ctx, result)


def _build(points: list[_Point], rows: np.ndarray, scores: list[float], fired: list[tuple[int, Fire]],
           ctx: Context, result: Result) -> None:
    if not fired:
        return
    rows = rows[[i for i, _ in fired]]  # the scored rows of the points that fire
    reasons = ctx.model.explain(rows)
    for (i, decision), row, why in zip(fired, rows, reasons):
        p = points[i]
        result.triggers.append(build_trigger(
            decision, customer_id=p.customer_id, state=p.state, score=scores[i],
            row=row.tolist(), reasons=why, now=p.now,
            emitted_at=ctx.emitted_at,
            policy=ctx.policy, model_version=ctx.model.version,
        ))
