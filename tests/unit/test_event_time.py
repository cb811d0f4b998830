"""Event time as stream processors define it: the same history gives the same states and the
same trigger ids whatever share of it arrives unkeyed (through the repartition hop) and
however the sources are interleaved.

A worker is simulated around the real pure parts (worker.core.watermark, admission's
rule of which message is forwarded, pipeline.process): two input partitions and two
repartition partitions; every step is one fetch, a random chunk of each source that has
records, in a random order; an unkeyed event lands on a random input partition and is
forwarded to its customer's repartition partition, where a later fetch reads it; after
every batch the customers due by the watermark are checked, as the worker's due checks do.
The reference is one pass over the history sorted by time.
"""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.events import Event, parse_valid
from worker.core.partitioner import partition_of
from worker.core.pipeline import Context, Item, next_due, process
from worker.core.state import CustomerState
from worker.core.watermark import Watermark
from worker.tools.generate import generate

from .conftest import DAY, encode

PARTITIONS = 2
IDLE_STEPS = 3  # a source with records delivers every step: only an empty one goes idle


def history() -> list[Event]:
    events = [parse_valid(encode(e)) for e in generate(customers=30, days=120, seed=5,
                                                        start="2026-01-05T00:00:00+00:00")]
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


EVENTS = history()


def comparable(state: CustomerState) -> CustomerState:
    """Everything but the bookkeeping of what arrived how (the last ids in arrival order, offsets)."""
    return replace(state, recent_ids={}, applied={})


def sorted_pass(ctx: Context) -> tuple[dict, set]:
    states: dict = {}
    triggers: set = set()
    for e in EVENTS:
        result = process([Item(e.customer_id, e)], states, ctx)
        states.update(result.states)
        triggers |= {t["trigger_id"] for t in result.triggers}
    end = EVENTS[-1].occurred_at
    result = process([Item(c, None, end) for c in sorted(states)], states, ctx)
    states.update(result.states)
    return states, triggers | {t["trigger_id"] for t in result.triggers}


def simulated_worker(ctx: Context, unkeyed: float, rng: random.Random) -> tuple[dict, set, int]:
    queues: dict[tuple, list] = {(t, p): [] for t in ("in", "re") for p in range(PARTITIONS)}
    for e in EVENTS:
        home = partition_of(e.customer_id.encode(), PARTITIONS)
        keyed = rng.random() >= unkeyed
        queues[("in", home if keyed else rng.randrange(PARTITIONS))].append(e)
    clock = Watermark(idle_s=IDLE_STEPS)
    clock.reset(queues, at=0)
    states: dict = {}
    triggers: set = set()
    late = 0
    step = 0
    while True:
        step += 1
        sources = [s for s, q in queues.items() if q]
        rng.shuffle(sources)
        batch = []
        for source in sources:
            take = rng.randint(1, 6)
            batch += [(source, e) for e in queues[source][:take]]
            del queues[source][:take]
        arrived_at = clock.current(step)
        items = []
        for source, e in batch:
            clock.saw(source, e.occurred_at, step)
            home = partition_of(e.customer_id.encode(), PARTITIONS)
            origin = e.event_id.encode()
            if source[0] == "in" and source[1] != home:  # forwarded to its customer's partition
                queues[("re", home)].append(e)
                clock.forwarded(origin, e.occurred_at)
                continue
            if source[0] == "re":
                clock.arrived(origin)
            items.append(Item(e.customer_id, e))
        watermark = clock.current(step)
        due = [Item(c, None, watermark) for c, s in states.items()
               if (d := next_due(ctx.policy, s)) is not None and d <= watermark]
        result = process(items + due, states, replace(ctx, watermark=watermark, arrived_at=arrived_at))
        states.update(result.states)
        triggers |= {t["trigger_id"] for t in result.triggers}
        late += len(result.late)
        if not any(queues.values()) and not batch and not due and watermark >= EVENTS[-1].occurred_at:
            return states, triggers, late


@pytest.fixture(scope="module")
def reference(policy, artifact) -> tuple[dict, set]:
    return sorted_pass(Context(artifact, policy, 3 * DAY, emitted_at=0.0, event_clock=True))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unkeyed=st.sampled_from([0.0, 0.1, 0.5, 1.0]), seed=st.integers(0, 2**32))
def test_any_share_unkeyed_and_any_interleaving_gives_the_sorted_result(policy, artifact, reference,
                                                                           unkeyed, seed):
    ctx = Context(artifact, policy, 3 * DAY, emitted_at=0.0, event_clock=True)
    want_states, want_triggers = reference
    states, triggers, late = simulated_worker(ctx, unkeyed, random.Random(seed))
    assert late == 0
    assert triggers == want_triggers
    assert {c: comparable(s) for c, s in states.items()} == {c: comparable(s) for c, s in want_states.items()}
    assert all(not s.pending for s in states.values())


def test_the_history_is_a_real_test(reference):
    """Enough triggers of each kind, and enough out-of-order arrival, for the test above to
    mean something."""
    states, triggers = reference
    assert len(states) == 30 and len(triggers) >= 20


def test_everything_released_in_one_walk_gives_the_sorted_result(policy, artifact, reference):
    """The whole history waits (the watermark has not moved), then one check per customer at
    the end releases it: each customer's walk runs through months in one batch. A decision on
    the way (a win-back, and the cooldown that then brings a later check) must shape the
    deadlines after it exactly as it does when the history comes a little at a time."""
    ctx = Context(artifact, policy, 3 * DAY, emitted_at=0.0, event_clock=True)
    start, end = EVENTS[0].occurred_at, EVENTS[-1].occurred_at
    held = process([Item(e.customer_id, e) for e in EVENTS], {}, replace(ctx, watermark=start, arrived_at=start))
    assert sum(len(s.pending) for s in held.states.values()) >= len(EVENTS) - 5
    released = process([Item(c, None, end) for c in sorted(held.states)], held.states,
                       replace(ctx, watermark=end, arrived_at=end))
    want_states, want_triggers = reference
    assert {t["trigger_id"] for t in held.triggers + released.triggers} == want_triggers
    assert {c: comparable(s) for c, s in released.states.items()} == {c: comparable(s) for c, s in want_states.items()}
