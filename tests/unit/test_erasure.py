"""Erasure (a `customer_erased` event): the customer's state is deleted (a tombstone for the
changelog), subscribers are told, and what comes after starts from nothing."""
from __future__ import annotations

import json

import pytest

from worker.core.codec import decode_state, encode_state
from worker.core.events import ERASURE, Event, parse_event
from worker.core.messages import erased_record
from worker.core.pipeline import Context, Item, process
from worker.core.quarantine import run_batch, run_one_by_one

from .conftest import DAY, at, fold, login, make_event, purchase, wire
from .fakes import SilenceModel


def erasure(t: float, customer_id: str = "c-1") -> Event:
    return make_event(ERASURE, customer_id, t, event_id=f"erase-{customer_id}-{t:.0f}")


@pytest.fixture
def ctx(policy) -> Context:
    return Context(SilenceModel(), policy, 3 * DAY, emitted_at=at(200), event_clock=True)


def test_an_erasure_parses_with_the_common_fields_only():
    event = parse_event(json.dumps(wire(ERASURE, "c-9", at(3))).encode())
    assert isinstance(event, Event) and (event.type, event.customer_id, event.occurred_at) == (ERASURE, "c-9", at(3))


def test_an_erased_customer_is_deleted_and_announced(ctx):
    stored = {"c-1": fold([login(at(1)), purchase(at(2))]), "c-2": fold([login(at(1), "c-2")])}
    result, encoded = run_batch([Item("c-1", erasure(at(5))), Item("c-2", login(at(6), "c-2"))], stored, ctx)
    assert encoded["c-1"] is None  # a tombstone
    assert encoded["c-2"] is not None and decode_state(encoded["c-2"]).logins == 2
    assert "c-1" not in result.states and result.erased == [("c-1", erasure(at(5)))]
    assert result.deadlines.keys() == {"c-2"} and result.outcomes[(ERASURE, "applied")] == 1
    record = erased_record("c-1", erasure(at(5)), "m1")
    assert (record["type"], record["customer_id"]) == ("customer_erased", "c-1")
    assert record["erasure_id"] == f"erase-c-1-{at(5):.0f}"


def test_events_after_the_erasure_start_from_nothing_in_the_same_batch_or_later(ctx):
    before = [Item("c-1", login(at(1))), Item("c-1", purchase(at(2)))]
    after = [Item("c-1", login(at(6))), Item("c-1", purchase(at(7)))]
    one = process([*before, Item("c-1", erasure(at(5))), *after], {}, ctx)
    assert (one.states["c-1"].logins, one.states["c-1"].orders) == (1, 1)
    first = process([*before, Item("c-1", erasure(at(5)))], {}, ctx)
    assert "c-1" not in first.states
    second = process(after, {}, ctx)
    assert (second.states["c-1"].logins, second.states["c-1"].orders) == (1, 1)
    assert one.states["c-1"].first_seen == at(6)  # nothing of before is left


def test_events_waiting_for_the_watermark_survive_only_if_dated_after_the_erasure(policy):
    held = Context(SilenceModel(), policy, 3 * DAY, emitted_at=at(200), event_clock=True, watermark=at(3))
    waiting = process([Item("c-1", login(at(1))), Item("c-1", login(at(4))), Item("c-1", purchase(at(8)))], {}, held)
    state = waiting.states["c-1"]
    assert len(state.pending) == 2
    result = process([Item("c-1", erasure(at(5)))], {"c-1": state}, held)
    kept = result.states["c-1"]
    assert kept.logins == 0 and [e.occurred_at for e in kept.pending] == [at(8)]
    assert result.waiting == -1


def test_an_erasure_is_never_late_and_erasing_twice_changes_nothing(ctx, policy):
    late = Context(SilenceModel(), policy, 3 * DAY, emitted_at=at(200), event_clock=True, arrived_at=at(100))
    stored = {"c-1": fold([login(at(90))])}
    result, encoded = run_batch([Item("c-1", erasure(at(10))), Item("c-1", erasure(at(10)))], stored, late)
    assert encoded == {"c-1": None} and not result.late and len(result.erased) == 2


def test_one_by_one_erases_as_the_batch_does(ctx):
    items = [Item("c-1", login(at(1))), Item("c-1", erasure(at(5))), Item("c-1", login(at(6)))]
    stored = {"c-1": fold([purchase(at(0.5))])}
    raw = {cid: encode_state(s) for cid, s in stored.items()}
    _, batch = run_batch(items, stored, ctx)
    one = run_one_by_one(items, raw.get, ctx)
    assert not one.failures and one.encoded == batch
