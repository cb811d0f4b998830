"""What each consumed message becomes: an input, a dead letter, or a forward (pure)."""
from __future__ import annotations

import json
from typing import NamedTuple

import orjson

from worker.core.admission import KIND_HEADER, MARK, TICK, Forward, Mark, Rules, admit, mark_value, tick_value
from worker.core.events import Event, InvalidEvent
from worker.core.partitioner import partition_of
from worker.core.pipeline import Item
from worker.core.watermark import IDLE, Idle

from .conftest import DAY, T0, at, encode, wire

RULES = Rules(frozenset({"customer-events"}), partitions=4, max_event_bytes=65_536, max_future_s=300.0)
REPARTITION = "churn-worker-events-by-customer"


class Message(NamedTuple):
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: list = []
    offset: int = 0


def keyed(value: bytes, customer: str = "c-1", topic: str = "customer-events") -> Message:
    return Message(topic, partition_of(customer.encode(), 4), customer.encode(), value)


def test_a_keyed_event_on_its_customers_partition_is_an_input():
    msg = keyed(encode(wire("login", "c-1", at(1))))
    item = admit(msg, RULES, wall=at(2))
    assert isinstance(item, Item) and isinstance(item.event, Event)
    assert (item.customer_id, item.event.occurred_at, item.ref) == ("c-1", at(1), msg)


def test_an_event_elsewhere_is_forwarded_to_its_customers_partition():
    value = encode(wire("purchase", "c-1", at(1)))
    unkeyed = Message("customer-events", 0, None, value)
    other_partition = Message("customer-events", (partition_of(b"c-1", 4) + 1) % 4, b"c-1", value)
    for msg in (unkeyed, other_partition):
        assert admit(msg, RULES, wall=at(2)) == Forward(b"c-1", "purchase", at(1))


def test_a_message_that_is_not_an_event_is_a_dead_letter():
    bad = admit(keyed(b'{"schema_version":1'), RULES, wall=at(2))
    assert isinstance(bad, InvalidEvent) and bad.reason == "bad_json"


def test_an_event_too_far_ahead_of_the_wall_clock_is_refused_on_either_clock():
    """A replay's history is in the past; one event from the far future would carry the
    event-time watermark forward for good."""
    wall = T0 + 400 * DAY
    assert isinstance(admit(keyed(encode(wire("login", "c-1", wall + 300))), RULES, wall), Item)
    bad = admit(keyed(encode(wire("login", "c-1", wall + 301))), RULES, wall)
    assert isinstance(bad, InvalidEvent) and bad.reason == "timestamp_out_of_range" and bad.customer_id == "c-1"


def test_a_tick_on_the_workers_own_topic_is_a_silence_check():
    msg = Message(REPARTITION, partition_of(b"c-1", 4), b"c-1", tick_value(at(30)), [(KIND_HEADER, TICK)])
    item = admit(msg, RULES, wall=at(2))
    assert item == Item("c-1", None, at(30), ref=msg)


def test_a_tick_header_on_an_input_topic_or_a_tick_that_does_not_parse_is_read_as_an_event():
    forged = keyed(json.dumps({"deadline": at(30)}).encode())._replace(headers=[(KIND_HEADER, TICK)])
    garbled = Message(REPARTITION, 0, b"c-1", b"not json", [(KIND_HEADER, TICK)])
    for msg in (forged, garbled):
        assert isinstance(admit(msg, RULES, wall=at(2)), InvalidEvent)


def test_an_unkeyed_event_from_its_customers_own_partition_is_not_taken_for_a_redelivery(policy):
    """An unkeyed event read from its customer's own input partition at offset 8 is forwarded;
    its copy arrives behind a keyed event of the same partition at offset 10. The copies keep
    offsets of their own, so the copy is applied, not taken for a record already applied."""
    from worker.core.admission import origin_header
    from worker.core.pipeline import Context, process

    from .fakes import SilenceModel

    home = partition_of(b"c-1", 4)
    unkeyed = Message("customer-events", home, None, encode(wire("login", "c-1", at(1))), [], 8)
    assert isinstance(admit(unkeyed, RULES, wall=at(5)), Forward)
    copy = Message(REPARTITION, home, b"c-1", unkeyed.value, [origin_header(unkeyed)], 0)
    direct = keyed(encode(wire("login", "c-1", at(2))))._replace(offset=10)
    items = [admit(direct, RULES, wall=at(5)), admit(copy, RULES, wall=at(5))]
    ctx = Context(SilenceModel(), policy, 3 * DAY, emitted_at=at(5), event_clock=True)
    state = process(items[:1], {}, ctx).states
    state = process(items[1:], state, ctx).states["c-1"]
    assert state.logins == 2 and len(state.applied) == 2
    again = process(items, {"c-1": state}, ctx)  # both redelivered after a crash: nothing changes
    assert again.states["c-1"] == state


def test_a_watermark_mark_is_read_as_one_and_a_broken_one_is_dead_lettered():
    marks = {("customer-events", 0): at(3), ("customer-events", 1): Idle(17, at(2)), ("customer-events", 2): IDLE}
    msg = Message(REPARTITION, 2, None, mark_value(marks, "w-1"), [(KIND_HEADER, MARK)])
    assert admit(msg, RULES, wall=at(4)) == Mark(marks, "w-1")
    # a worker of the earlier version reads three fields a partition, null where idle
    assert [len(m) for m in orjson.loads(msg.value)["marks"]] == [3, 3, 3]
    older = b'{"writer": "w-0", "marks": [["customer-events", 0, 5.0], ["customer-events", 1, null]]}'
    assert admit(msg._replace(value=older), RULES, wall=at(4)) == Mark(
        {("customer-events", 0): 5.0, ("customer-events", 1): IDLE}, "w-0")
    for broken in (b"{", b'{"writer": "w", "marks": [["customer-events", "0", 1.0]]}', b'{"writer": "w", "marks": 3}',
                   b'{"marks": []}', b"{}",
                   b'{"writer": "w", "marks": [], "idle": [["customer-events", 1, "7", null]]}'):
        refused = admit(msg._replace(value=broken), RULES, wall=at(4))
        assert isinstance(refused, InvalidEvent) and refused.reason == "bad_mark", broken
    # on an input topic the header means nothing: a producer cannot move the watermark
    forged = admit(msg._replace(topic="customer-events"), RULES, wall=at(4))
    assert isinstance(forged, InvalidEvent) and forged.reason != "bad_mark"
