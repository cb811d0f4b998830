"""One batch of customer inputs -> new states, triggers and outcomes. No faust, no I/O.

The app feeds it what a `take_events` batch delivered (valid events and silence
ticks), with the current states; it scores every decision point in one
`predict_proba` call and returns everything the app must write. Benchmarks and
tests drive the same function.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from worker.core.events import ERASURE, Event, utc_offset_s
from worker.core.features import features
from worker.core.messages import build_trigger
from worker.core.policy import Policy
from worker.core.state import (
    EMPTY,
    CustomerState,
    event_key,
    fold,
    hold,
    is_redelivered,
    is_waiting,
    release,
    remember,
    with_applied,
    with_fired,
)
from worker.core.triggers import (
    CHECKED,
    TZ_OFFSET,
    Fire,
    Suppressed,
    decide_memory,
    earliest_possible_deadline,
    pending_deadline,
)
from worker.core.value import customer_value

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
    forwarded: bool = False  # a copy through the repartition topic: judged late where it arrived first,
    late: bool = False       # ... and found late there (applied here only as a duplicate check)


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
    waiting: int = 0  # change in the number of events waiting for the watermark
    unconverted: Counter = field(default_factory=Counter)  # purchases in a currency without a rate
    erased: list[tuple[str, Event]] = field(default_factory=list)  # (customer id, its erasure), in order


class _Point(NamedTuple):
    customer_id: str
    state: CustomerState
    now: float
    cause: Event | None
    quiet: bool  # decide and remember, but send nothing (history older than emit_max_age_s)


Walk = Generator[_Point, "dict[str, float]", CustomerState]  # a customer's inputs, a decision point at a time


class Model(Protocol):
    """What the pipeline needs of a model (worker.model.artifact.ModelArtifact is one; tests
    build small ones): churn probabilities and the reasons behind them, a batch at a time."""

    @property
    def version(self) -> str: ...

    def score(self, rows: np.ndarray) -> np.ndarray: ...

    def explain(self, rows: np.ndarray) -> list[list[dict]]: ...


@dataclass(frozen=True)
class Context:
    """`watermark` is the event-time watermark of the worker's inputs (worker.core.watermark)
    with this batch delivered, `arrived_at` the one it arrived at, before the batch (an
    event is late against the watermark when it arrived, as in Flink and Beam). None for a
    single pass over history in time order: nothing waits, nothing is late."""

    model: Model
    policy: Policy
    lateness_s: float
    emitted_at: float                 # wall time of this batch, stamped on triggers
    event_clock: bool = False         # True: "now" is event time (replays); False: wall time
    emit_max_age_s: float = float("inf")
    watermark: float | None = None
    arrived_at: float | None = None

    @property
    def wall_now(self) -> float | None:
        return None if self.event_clock else self.emitted_at

    @property
    def release_at(self) -> float:
        """Events up to this time are folded and decided now; later ones wait in the state.
        On the event clock the watermark: a decision at time t then sees every event before
        t, however the inputs were interleaved. On the wall clock, wall time."""
        if not self.event_clock:
            return self.emitted_at
        return float("inf") if self.watermark is None else self.watermark

    @property
    def late_before(self) -> float:
        """Events before this are late: the watermark they arrived at less the allowed lateness."""
        return float("-inf") if self.arrived_at is None else self.arrived_at - self.lateness_s


def process(items: list[Item], states: Mapping[str, CustomerState], ctx: Context) -> Result:
    """Each customer's inputs are walked in event-time order (a batch mixes sources, input and
    repartition partitions, each in order), one decision point at a time: every customer's
    next point is scored in one `predict_proba` call per round, decided, and its trigger
    memory goes back into the walk before it goes on, since the deadlines ahead (a lapse
    looked at again when a cooldown ends) depend on what was decided. So a customer's
    decisions do not depend on how its inputs were cut into batches."""
    result = Result()
    queues: dict[str, list[Item]] = {}
    for item in sorted(items, key=_item_time):
        queues.setdefault(item.customer_id, []).append(item)
    current: dict[str, CustomerState] = {}
    live: dict[str, tuple[Walk, _Point]] = {}
    for cid, queue in queues.items():
        _step(cid, _walk(cid, states.get(cid) or EMPTY, queue, ctx, result), None, live, current)
    fired: list[tuple[_Point, np.ndarray, float, Fire]] = []
    while live:
        round_ = list(live.items())
        rows = np.array([features(p.state, p.now) for _, (_, p) in round_], dtype=float)
        scores = ctx.model.score(rows).tolist()  # Python floats
        result.scores += scores
        for (cid, (walk, point)), row, score in zip(round_, rows, scores):
            _step(cid, walk, _decide(point, row, score, ctx, result, fired), live, current)
    _build(fired, ctx, result)
    # a tick for a customer this worker no longer holds must not create an empty record; such
    # a customer's state is EMPTY itself (compared by identity: equality compares every field)
    result.states = {cid: s for cid, s in current.items() if s is not EMPTY}
    result.deadlines = {cid: next_due(ctx.policy, s) for cid, s in result.states.items()}
    for cid, s in result.states.items():
        old = states.get(cid)
        if s.pending or (old is not None and old.pending):
            result.waiting += len(s.pending) - (len(old.pending) if old is not None else 0)
    for cid in {cid for cid, _ in result.erased if cid not in result.states}:  # erased: its waiting events go
        result.waiting -= len(old.pending) if (old := states.get(cid)) is not None else 0
    return result


def _step(customer_id: str, walk: Walk, memory: dict[str, float] | None, live: dict[str, tuple[Walk, _Point]],
          current: dict[str, CustomerState]) -> None:
    """Run a customer's walk on to its next decision point (or its end: its final state)."""
    try:
        live[customer_id] = (walk, walk.send(memory))  # type: ignore[arg-type]  # None starts it
    except StopIteration as done:
        live.pop(customer_id, None)
        current[customer_id] = done.value


def next_due(policy: Policy, state: CustomerState) -> float | None:
    """When this customer must be looked at next: its next silence deadline, or the time of
    its earliest event waiting for the watermark, whichever comes first."""
    due = pending_deadline(policy, state)
    if state.pending and (due is None or state.pending[0].occurred_at < due):
        return state.pending[0].occurred_at
    return due


def _item_time(item: Item) -> tuple[float, str]:
    """Time order; events at one time by id (as they wait in a state), a check before them."""
    event = item.event
    return (item.deadline, "") if event is None else (event.occurred_at, event.event_id)


def merge(into: Result, other: Result) -> None:
    """Add `other` (a later run over later items) to `into`."""
    into.states.update(other.states)
    into.deadlines.update(other.deadlines)
    into.triggers += other.triggers
    into.late += other.late
    into.scores += other.scores
    into.waiting += other.waiting
    into.erased += other.erased
    into.unconverted.update(other.unconverted)
    for counts, more in ((into.holdouts, other.holdouts), (into.quiet, other.quiet),
                         (into.suppressed, other.suppressed), (into.outcomes, other.outcomes)):
        counts.update(more)


def _walk(customer_id: str, state: CustomerState, items: list[Item], ctx: Context, result: Result) -> Walk:
    before = state  # what was applied before this batch: its items come in time order, not offset order
    seen: set[tuple[int, int]] = set()  # the records taken in this batch
    for item in items:
        state = yield from _advance(item, state, ctx, result, before, seen)
    return state


def _advance(item: Item, state: CustomerState, ctx: Context, result: Result, before: CustomerState,
             seen: set[tuple[int, int]]) -> Walk:
    event = item.event
    if event is None:
        return (yield from _catch_up(item.customer_id, state, item.deadline, ctx))
    if event.type == ERASURE:
        return erase(item.customer_id, state, event, result)
    key = event_key(event.event_id)
    # a record is redelivered if it was applied before this batch, or earlier in it: a fetch
    # holds each record once, but the copies of a forwarded event (one per forwarding: it is
    # forwarded again after a crash) name one original record. Offsets are compared with the
    # state before the batch only: within it an earlier event can sit at a later offset of
    # the same source. The event id is no proof here: a long backlog can push it out of
    # the ids kept before its copy comes.
    record = (item.source, item.offset)
    if item.offset >= 0 and (is_redelivered(before, *record) or record in seen):
        result.outcomes[(event.type, "duplicate")] += 1
        return state
    applied = state.applied
    if item.offset >= 0:
        seen.add(record)
        applied = {**applied, item.source: max(item.offset, applied.get(item.source, -1))}
    if key in state.recent_ids or (state.pending and is_waiting(state, event)):
        # a producer's duplicate: its record is taken all the same, so that a copy of it
        # forwarded again after a crash is known by its offset once the id is let go
        result.outcomes[(event.type, "duplicate")] += 1
        return with_applied(state, applied=applied) if applied is not state.applied else state
    if item.late if item.forwarded else event.occurred_at < ctx.late_before:
        result.outcomes[(event.type, "late")] += 1
        result.late.append(item)
        return state
    result.outcomes[(event.type, "applied")] += 1
    if event.type == "purchase" and ctx.policy.currency is not None:
        event = in_base_currency(event, ctx.policy, result)
    if event.occurred_at > ctx.release_at:  # counted in now (id, offset), folded once the watermark passes it
        return hold(state, event, applied)
    # silence that ended before this event still counts, decided at its own deadline
    state = yield from _catch_up(item.customer_id, state, event.occurred_at, ctx)
    ids = remember(state.recent_ids, key, event.occurred_at, ctx.late_before)
    return (yield from _decide_event(item.customer_id, fold(state, event, ids, applied), event, ctx))


def in_base_currency(event: Event, policy: Policy, result: Result | None = None) -> Event:
    """A purchase with its amount in the policy's base currency (0 without a rate: the order
    counts, its value does not; counted by currency in `result`)."""
    assert policy.currency is not None
    amount = policy.currency.convert(event.amount, event.currency)
    if amount is None:
        if result is not None:
            result.unconverted[event.currency or ""] += 1
        amount = 0.0
    return event._replace(amount=amount, currency=policy.currency.base)


def erase(customer_id: str, state: CustomerState, event: Event, result: Result) -> CustomerState:
    """Forget the customer as of the erasure's time: the state starts from nothing, keeping
    only the events waiting for the watermark that are dated after it (a batch walks events
    in time order, so those would come after it in the same batch too). Never late, never
    a duplicate: erasing again changes nothing."""
    result.outcomes[(ERASURE, "applied")] += 1
    result.erased.append((customer_id, event))
    kept = EMPTY
    for waiting in state.pending:
        if waiting.occurred_at > event.occurred_at:
            kept = hold(kept, waiting, kept.applied)
    return kept


def _decide_event(customer_id: str, state: CustomerState, event: Event, ctx: Context) -> Walk:
    """A decision point at an event just folded into `state`."""
    if event.tz:  # the customer's time zone, for quiet hours: its offset now
        state = with_fired(state, fired={**state.fired, TZ_OFFSET: utc_offset_s(event.tz, event.occurred_at)})
    if event.occurred_at < state.fired.get(CHECKED, 0.0):
        # an event behind the last silence check arrived after the clock had passed it
        # (forwarded through another worker's repartition topic, or delayed by its producer
        # past the watermark): a deadline it brings before that check (its ticket's SLA, its
        # activity's follow-up check) would never come due, so silence is checked again from
        # its time. Deadlines already decided are decided again with the new state, at their
        # own times; a trigger already sent for an episode is not sent twice.
        state = _checked_until(state, event.occurred_at)
    quiet = _quiet(event.occurred_at, ctx)
    # old history is decided at its own time, as a replay would: deciding it at wall time
    # would judge a stale state "lapsed" and start cooldowns that block real triggers
    now = state.last_seen if ctx.event_clock or quiet else max(ctx.emitted_at, event.occurred_at)
    return (yield from _point(_Point(customer_id, state, now, event, quiet)))


def _point(point: _Point) -> Walk:
    """Yield a decision point; the walk goes on from its state with the memory decided there."""
    memory = yield point
    return point.state if memory is point.state.fired else with_fired(point.state, fired=memory)


def _catch_up(customer_id: str, state: CustomerState, until: float, ctx: Context) -> Walk:
    """Everything this customer has due up to `until`, in time order, each at its own time: a
    decision point at every pending silence deadline, and the waiting events folded and
    decided (a deadline before an event at the same time)."""
    if until < earliest_possible_deadline(ctx.policy, state) and (
            not state.pending or until < state.pending[0].occurred_at):
        return state  # the common case: an active customer, nothing can be due yet
    deadlines = 0
    while deadlines < MAX_CATCH_UP:
        due = pending_deadline(ctx.policy, state)
        waiting = state.pending[0].occurred_at if state.pending else None
        if waiting is not None and waiting <= until and (due is None or waiting < due):
            event, state = release(state)
            event = event._replace(customer_id=customer_id)
            ids = remember(state.recent_ids, event_key(event.event_id), event.occurred_at, ctx.late_before)
            state = yield from _decide_event(customer_id, fold(state, event, ids, state.applied), event, ctx)
        elif due is not None and due <= until:
            state = _checked_until(state, due)
            state = yield from _point(_Point(customer_id, state, due, None, _quiet(due, ctx)))
            deadlines += 1
        else:
            break
    return state


def _checked_until(state: CustomerState, t: float) -> CustomerState:
    """The state with its silence recorded as checked up to `t` (later deadlines are pending)."""
    return with_fired(state, fired={**state.fired, CHECKED: t})


def _quiet(event_time: float, ctx: Context) -> bool:
    return ctx.wall_now is not None and ctx.wall_now - event_time > ctx.emit_max_age_s


def _decide(point: _Point, row: np.ndarray, score: float, ctx: Context, result: Result,
            fired: list[tuple[_Point, np.ndarray, float, Fire]]) -> dict[str, float]:
    """The decisions at one scored point, counted or kept for sending; the memory after them."""
    decisions, memory = decide_memory(ctx.policy, point.customer_id, point.state, point.state.fired, score,
                                      point.now, point.cause)
    for d in decisions:
        if isinstance(d, Suppressed):
            result.suppressed[(d.type, d.reason)] += 1
        elif point.quiet:
            result.quiet[d.type] += 1
        else:  # sent, or for the control group recorded as held out (`held_out: true`)
            if d.held_out:
                result.holdouts[d.type] += 1
            fired.append((point, row, score, d))
    return memory


def _build(fired: list[tuple[_Point, np.ndarray, float, Fire]], ctx: Context, result: Result) -> None:
    if not fired:
        return
    rows = np.array([row for _, row, _, _ in fired])  # the scored rows of the points that fire
    reasons = ctx.model.explain(rows)
    value = getattr(ctx.model, "value_params", None)  # the card's value model, if it has one
    for (p, row, score, decision), why in zip(fired, reasons):
        result.triggers.append(build_trigger(
            decision, customer_id=p.customer_id, state=p.state, score=score,
            row=row.tolist(), reasons=why, now=p.now,
            emitted_at=ctx.emitted_at,
            policy=ctx.policy, model_version=ctx.model.version,
            value=customer_value(value, p.state, p.now),
        ))
