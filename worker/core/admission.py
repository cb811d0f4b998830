"""What each consumed message becomes: an input for the pipeline, a dead letter, or an
event forwarded to its customer's partition. Pure: the shell sends what this decides.

A message is anything with Kafka's `topic`, `partition`, `key`, `value` and `headers`
(faust's Message in the worker, a small named tuple in tests).

    admit(message, rules, wall) -> Item | InvalidEvent | Forward | Mark

- A watermark mark (written by the workers to every repartition partition, marked by a
  header: worker.core.watermark) becomes a Mark: per input partition, how far in event
  time its reader has come. One that does not parse is dead-lettered as `bad_mark`.
- A silence tick (sent by this worker's own timer to its repartition topic, marked by a
  header) becomes an Item with no event: a producer cannot inject one on an input topic.
- A message that does not parse, or claims a time too far ahead of the wall clock,
  becomes the InvalidEvent to dead-letter. On either clock: a replay's history lies in the
  past, and one event from the far future would otherwise carry the event-time watermark
  (and with it every customer's silence checks) forward for good.
- A valid event whose message is not keyed by its customer id, or sits on another
  partition than that key's, is forwarded: all of a customer's inputs must meet on one
  partition, where its state lives. The forwarded copy carries its origin (topic,
  partition, offset) in a header, so that the state recognises it by its original record
  when it is forwarded again after a crash.

An input names its record by `source` and `offset`: the message's own topic-partition, or
for a forwarded event the origin it carries.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from worker.core.events import LIVE_BOUNDS, InvalidEvent, parse_event
from worker.core.partitioner import partition_of
from worker.core.pipeline import Item
from worker.core.state import source_code
from worker.core.watermark import IDLE, Idle

TICK = b"tick"
MARK = b"mark"
KIND_HEADER = "churn.kind"
ORIGIN_HEADER = "churn.origin"  # topic, partition, offset of a forwarded event's original record
LATE_HEADER = "churn.late"  # on a forwarded copy: late against the watermark where it was first read


@dataclass(frozen=True)
class Rules:
    input_topics: frozenset[str]
    partitions: int
    max_event_bytes: int
    max_future_s: float   # how far ahead of the wall clock an event may claim to be
    bounds: tuple[float, float] = LIVE_BOUNDS  # dates an event may carry at all


class Forward(NamedTuple):
    """A valid event to send on to its customer's partition, unchanged."""

    key: bytes
    event_type: str
    occurred_at: float


class Mark(NamedTuple):
    """Watermark marks: (input topic, partition) -> newest event time read there, or Idle
    where that partition is idle; `writer` names the worker and its assignment."""

    marks: dict[tuple[str, int], float | Idle]
    writer: str


def admit(msg: Any, rules: Rules, wall: float) -> Item | InvalidEvent | Forward | Mark:
    """The Item carries the message as its `ref` (for a dead letter later)."""
    if msg.topic not in rules.input_topics:
        kind = header(msg, KIND_HEADER)
        if kind == TICK and (tick := parse_tick(msg.key, msg.value)) is not None:
            return tick._replace(ref=msg)
        if kind == MARK:
            return parse_mark(msg.value)
    parsed = parse_event(msg.value, rules.max_event_bytes, rules.bounds)
    if isinstance(parsed, InvalidEvent):
        return parsed
    if parsed.occurred_at > wall + rules.max_future_s:
        return InvalidEvent("timestamp_out_of_range", f"occurred_at is {parsed.occurred_at - wall:.0f} s in the future",
                            msg.value, parsed.customer_id)
    key = parsed.customer_id.encode()
    if msg.key != key or msg.partition != partition_of(key, rules.partitions):
        return Forward(key, parsed.type, parsed.occurred_at)
    source, offset, forwarded = _origin(msg, rules)
    late = forwarded and header(msg, LATE_HEADER) == b"1"
    return Item(parsed.customer_id, parsed, ref=msg, source=source, offset=offset, forwarded=forwarded, late=late)


def origin_header(msg: Any) -> tuple[str, bytes]:
    """The header a forwarded copy of `msg` carries: where the event was first read."""
    return ORIGIN_HEADER, f"{msg.partition}:{msg.offset}:{msg.topic}".encode()


def _origin(msg: Any, rules: Rules) -> tuple[int, int, bool]:
    if msg.topic not in rules.input_topics and (raw := header(msg, ORIGIN_HEADER)) is not None:
        try:
            partition, offset, topic = raw.decode().split(":", 2)
            return source_code(topic, int(partition), forwarded=True), int(offset), True
        except (ValueError, UnicodeDecodeError):
            pass  # not written by this worker: the copy's own record names it
    return source_code(msg.topic, msg.partition), msg.offset, False


def tick_value(deadline: float) -> bytes:
    """The value of a tick message for a deadline (its key is the customer id)."""
    return orjson.dumps({"deadline": deadline})


def parse_tick(key: bytes | None, value: bytes | None) -> Item | None:
    """The silence check a tick this app sent asks for; None for anything else (which is
    then parsed as an event, and dead-lettered if it is not one)."""
    try:
        deadline = float(orjson.loads(value or b"")["deadline"])
        return Item((key or b"").decode(), None, deadline)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def mark_value(marks: Mapping[tuple[str, int], float | Idle], writer: str) -> bytes:
    """The value of a mark message. An idle partition is null in `marks` (all a worker of
    an older version reads) and has its reader's offset and newest event time in `idle`."""
    ordered = sorted(marks.items())
    return orjson.dumps({
        "writer": writer,
        "marks": [[topic, partition, None if isinstance(at, Idle) else at] for (topic, partition), at in ordered],
        "idle": [[topic, partition, at.end, at.newest] for (topic, partition), at in ordered if isinstance(at, Idle)],
    })


def parse_mark(value: bytes | None) -> Mark | InvalidEvent:
    try:
        body = orjson.loads(value or b"")
        marks: dict[tuple[str, int], float | Idle] = {}
        for topic, partition, at in body["marks"]:
            _check_partition(topic, partition)
            marks[(topic, partition)] = IDLE if at is None else float(at)
        for topic, partition, end, newest in body.get("idle", ()):
            _check_partition(topic, partition)
            if end is not None and type(end) is not int:
                raise ValueError(f"not an offset: {end!r}")
            marks[(topic, partition)] = Idle(end, None if newest is None else float(newest))
        return Mark(marks, str(body["writer"]))
    except (ValueError, KeyError, TypeError) as exc:
        return InvalidEvent("bad_mark", f"a watermark mark that cannot be read: {exc}"[:300], value or b"")


def _check_partition(topic: Any, partition: Any) -> None:
    if not isinstance(topic, str) or type(partition) is not int:
        raise ValueError(f"not a topic and partition: {topic!r}, {partition!r}")


def header(msg: Any, name: str) -> bytes | None:
    for key, value in msg.headers or ():
        if key == name:
            return value
    return None
