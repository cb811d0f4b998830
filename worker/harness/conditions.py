"""Conditions the harness waits for, so that nothing waits for a fixed time.

Kafka side: a consumer group has committed every message on its topics (committed offset
= the partition's end), and a topic read back to its end. The end of a partition is the
high watermark of a fetch response, never ListOffsets "latest": the embedded broker (Tansu
0.6) answers that with the last batch's base offset + 1, short of the end whenever the last
produce carried several records (docs: /work/shared/FAUST_NOTES.md, "The embedded broker").

Worker side, from its /metrics samples: the silence timer has taken every check the stream
implies (no pending deadline at or before the worker's clock), and the count of ticks it has
sent (each one a message on the repartition topic that a batch must still take).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

FETCH_WAIT_MS = 50  # how long the broker holds a fetch at the end of a partition before answering
READ_TIMEOUT_S = 60.0


# ---- the worker's metrics ----------------------------------------------------------------------
def ticks_sent(samples: Mapping[tuple, float]) -> float:
    """Silence ticks the worker's timer has sent to its repartition topic so far."""
    return samples.get(("churn_silence_checks_total", ("path", "timer")), 0.0)


def overdue_silence(samples: Mapping[tuple, float], clock: str) -> str | None:
    """None when the silence timer has taken every check due by the worker's clock (the
    event-time watermark with CHURN_CLOCK=event, else wall time): the earliest pending
    deadline is none (0) or later than now, and on the event clock the watermark has
    reached the newest event time delivered (every source idle: nothing more is coming).
    Otherwise what is overdue.

    While the timer sends ticks the gauge still shows the deadlines it took (it is set once
    they are acknowledged), so a tick under way reads as overdue here."""
    earliest = samples.get(("churn_deadline_next_seconds",), 0.0)
    watermark = samples.get(("churn_event_time_watermark_seconds",), 0.0)
    newest = samples.get(("churn_event_time_newest_seconds",), 0.0)
    if clock == "event" and watermark < newest:
        # a source still holds event time back (until it delivers, or has been idle for
        # CHURN_IDLE_SOURCE_S): the deadlines and the waiting events up to the newest event
        # time are still to be decided
        return f"the watermark ({watermark:.0f}) has not reached the newest event time ({newest:.0f})"
    now = watermark if clock == "event" else time.time()
    if earliest == 0.0 or earliest > now:
        return None
    return f"a silence deadline at {earliest:.0f} is due by the worker's clock ({now:.0f}) and not yet checked"


# ---- the broker --------------------------------------------------------------------------------
async def uncommitted(bootstrap: str, group: str, topics: Iterable[str],
                      options: dict[str, Any] | None = None) -> list[str]:
    """What `group` has not committed yet on `topics`, one line a partition ('topic[p]: committed
    c of end e'), or a topic that does not exist; [] when every message has been committed.

    The committed offsets are read before the ends, so [] also means that nothing was
    appended between the two reads."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS,
                                **(options or {}))
    await consumer.start()
    try:
        tps, missing = await _partitions(consumer, topics)
        committed = await committed_offsets(bootstrap, group, tps, options)
        ends = await _high_watermarks(consumer, tps, committed)
    finally:
        await consumer.stop()
    return missing + [f"{tp.topic}[{tp.partition}]: committed {committed[tp]} of end {ends[tp]}"
                      for tp in tps if committed[tp] < ends[tp]]


async def committed_offsets(bootstrap: str, group: str, tps: list[TopicPartition],
                            options: dict[str, Any] | None = None) -> dict[TopicPartition, int]:
    """The group's committed offset (the next offset it will read) per partition; 0 where none.
    Partitions are named: Tansu answers an OffsetFetch for 'all partitions' in a form aiokafka
    cannot decode."""
    if not tps:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options or {}))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp: max(offsets[tp].offset, 0) if tp in offsets else 0 for tp in tps}


async def read_to_end(bootstrap: str, topic: str, timeout_s: float = READ_TIMEOUT_S,
                      options: dict[str, Any] | None = None) -> list:
    """Every record of `topic`, from the beginning to each partition's end as a fetch reports
    it (its high watermark), ordered by partition and offset; [] when there is no such topic.
    `options`: TLS and SASL (worker.kafka_security)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=FETCH_WAIT_MS, **(options or {}))
    await consumer.start()
    records: list = []
    try:
        tps, _ = await _partitions(consumer, [topic])
        if not tps:
            return []  # no such topic: nothing was ever sent to it
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while not await _at_end(consumer, tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:.0f} s")
            for batch in (await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 4)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        end = consumer.highwater(tp)
        if end is None or await consumer.position(tp) < end:
            return False
    return True


async def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> tuple[list[TopicPartition], list[str]]:
    await consumer.topics()  # refreshes the metadata: a topic created a moment ago is seen
    tps, missing = [], []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            missing.append(f"{topic}: no such topic (yet)")
        tps += [TopicPartition(topic, p) for p in sorted(parts or ())]
    return tps, missing


async def _high_watermarks(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                           start: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Each partition's end from a fetch at `start` (no older data is read). The consumer
    fetches in the background once assigned; its first answer for a partition sets the mark."""
    if not tps:
        return {}
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, start.get(tp, 0))
    deadline = time.monotonic() + READ_TIMEOUT_S
    while any(consumer.highwater(tp) is None for tp in tps):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fetch answered for {[tp for tp in tps if consumer.highwater(tp) is None]}")
        await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 2)
    return {tp: int(consumer.highwater(tp) or 0) for tp in tps}

