"""Properties of the pure core, checked on inputs hypothesis makes up.

- `parse_event` never raises: whatever the bytes (random, or a valid event truncated,
  bit-flipped or with a field's type confused), it returns an Event or an InvalidEvent
  with a known reason.
- `admit` never raises on any message a topic could carry.
- Delivery order within the lateness bound does not change a customer's state: any
  permutation of events that keeps each within the bound of the newest seen folds to the
  same state as time order.
"""
from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.admission import KIND_HEADER, TICK, Forward, Rules, admit
from worker.core.events import REASONS, Event, InvalidEvent, parse_event
from worker.core.pipeline import Item
from worker.core.state import EMPTY, apply_event

from .conftest import DAY, T0, at, encode, login, purchase, support, wire

LATENESS = 3 * DAY
VALID = [encode(wire("login", "c-1", at(1))),
         encode(wire("purchase", "c-1", at(2), amount="12.50")),
         encode(wire("support", "c-1", at(3), action="resolved", csat=2, nps=6))]
FIELDS = ("schema_version", "event_id", "type", "customer_id", "occurred_at", "amount", "currency", "order_id",
          "ticket_id", "action", "csat", "nps", "channel")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def _known(parsed: Event | InvalidEvent) -> None:
    assert isinstance(parsed, Event | InvalidEvent)
    if isinstance(parsed, InvalidEvent):
        assert parsed.reason in REASONS, parsed.reason


@given(st.binary(max_size=400))
def test_parse_event_never_raises_on_any_bytes(raw):
    _known(parse_event(raw))


@given(st.sampled_from(VALID), st.integers(min_value=0, max_value=400))
def test_parse_event_never_raises_on_a_truncated_event(raw, cut):
    _known(parse_event(raw[:cut]))


@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=6))
def test_parse_event_never_raises_on_a_bit_flipped_event(raw, flips):
    data = bytearray(raw)
    for at_byte, bit in flips:
        data[at_byte % len(data)] ^= 1 << bit
    _known(parse_event(bytes(data)))


@given(st.sampled_from(VALID), st.sampled_from(FIELDS), JSON_VALUES)
def test_parse_event_never_raises_on_a_field_of_another_type(raw, field, value):
    obj = json.loads(raw)
    obj[field] = value
    try:
        text = json.dumps(obj).encode()
    except ValueError:  # out-of-range floats the json module will not write
        return
    _known(parse_event(text))


RULES = Rules(frozenset({"customer-events"}), partitions=4, max_event_bytes=65_536, max_future_s=300.0)


@given(topic=st.sampled_from(["customer-events", "churn-worker-events-by-customer"]),
       partition=st.integers(0, 3), offset=st.integers(0, 2**40), key=st.none() | st.binary(max_size=20),
       value=st.none() | st.binary(max_size=200) | st.sampled_from(VALID),
       headers=st.lists(st.tuples(st.sampled_from([KIND_HEADER, "churn.origin", "x"]),
                                  st.sampled_from([TICK, b"", b"0:5:customer-events", b"::", b"\xff"])), max_size=3))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_admit_never_raises_on_any_message(topic, partition, offset, key, value, headers):
    class Message:
        pass

    msg = Message()
    msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers = (
        topic, partition, offset, key, value, headers)
    assert isinstance(admit(msg, RULES, wall=T0 + 400 * DAY), Item | InvalidEvent | Forward)


EVENTS = sorted([login(at(0, 8)), purchase(at(0, 9), "19.99"), login(at(1, 21)), support(at(1, 22), "opened", "t-a"),
                 support(at(2, 9), "replied", "t-a"), login(at(3, 7)), purchase(at(3, 18), "42.00"),
                 support(at(4, 10), "resolved", "t-a", csat=2, nps=4), login(at(5, 3)), purchase(at(6, 20), "12.50"),
                 support(at(6, 21), "opened", "t-b"), login(at(7, 8)), support(at(8, 9), "resolved", "t-b", csat=5),
                 login(at(9, 10))], key=lambda e: e.occurred_at)


def _fold(events) -> object:
    state = EMPTY
    for event in events:
        assert event.occurred_at >= state.last_seen - LATENESS  # within the bound of the newest seen
        state = apply_event(state, event)
    return state


@given(st.lists(st.floats(min_value=0, max_value=LATENESS * 0.999), min_size=len(EVENTS), max_size=len(EVENTS)))
@settings(max_examples=300)
def test_any_order_within_the_lateness_bound_folds_to_the_same_state(jitter):
    """Delivered in order of time plus a jitter under the bound: every such order (and only
    such orders keep each event within the bound of the newest one seen)."""
    order = [e for _, e in sorted(zip((e.occurred_at + j for e, j in zip(EVENTS, jitter)), EVENTS),
                                  key=lambda pair: pair[0])]
    state, expected = _fold(order), _fold(EVENTS)
    # the id window keeps the last ids in arrival order; everything else is order-free
    assert replace(state, recent_ids={}) == replace(expected, recent_ids={})
    assert sorted(state.recent_ids) == sorted(expected.recent_ids)
