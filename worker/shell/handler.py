"""The batch handler: a batch of consumed messages in, its outputs sent, its states stored.

    messages --admit--> items (+ the silence checks due) --pipeline--> triggers, late events
             \\--> dead letters, events forwarded to their customer's partition

Triggers, dead letters and forwarded events are acknowledged by the broker before the
state that records them is written, and both before the batch's offsets are committed: a
crash in between redelivers the batch, which re-sends the same trigger ids instead of
finding the episode already marked fired. A batch the pipeline fails on is run again item
by item (worker.core.quarantine); an item that still fails is dead-lettered as
`processing_failed`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from worker.config import Settings
from worker.core.admission import (
    LATE_HEADER,
    ORIGIN_HEADER,
    Forward,
    Mark,
    Rules,
    admit,
    header,
    origin_header,
)
from worker.core.codec import decode_state
from worker.core.events import InvalidEvent
from worker.core.messages import dead_letter_headers, encode, erased_record
from worker.core.pipeline import Context, Item, Model, Result
from worker.core.policy import Policy
from worker.core.quarantine import run_batch, run_one_by_one, worker_at_fault
from worker.errors import WorkerAtFault
from worker.shell.metrics import Metrics, observe_many, record
from worker.shell.output import ChangelogSink, Outgoing, Sink
from worker.shell.silence import DueCheck, Silence
from worker.shell.store import RocksView, local_store, written_offsets

log = logging.getLogger("churn_worker")
Changes = dict[int, list[tuple[bytes, bytes | None]]]  # partition -> [(key, state or None: erased)] for the changelog


class BatchHandler:
    def __init__(self, settings: Settings, model: Model, policy: Policy, metrics: Metrics, table: Any,
                 silence: Silence, send: Sink, write_changelog: ChangelogSink) -> None:
        self.settings, self.model, self.policy, self.metrics = settings, model, policy, metrics
        self.table, self.silence, self.send, self.write_changelog = table, silence, send, write_changelog
        self.rules = admission_rules(settings)
        self.tracked = 0  # customers with a state in this worker's active partitions

    async def handle(self, batch: list[Any]) -> None:
        """One batch of faust messages (topic, partition, offset, key, value, headers, timestamp)."""
        started, wall = time.monotonic(), time.time()
        async with self.silence.marks.batch():  # the marks go out after the batch's forwards
            await self.silence.confirm()  # the batch is fetched: idle partitions' ends as of now
            arrived_at = self.silence.watermark()  # what this batch's events are late against
            items, outbox = self._admit(batch, wall, arrived_at - self.settings.lateness_s)
            due = self.silence.due_checks()
            try:
                pending = [await self.send(*out) for out in outbox]
                changes: Changes = await self._process(items + due, wall, pending, arrived_at) if items or due else {}
                if pending:
                    await asyncio.gather(*pending)
                if changes:
                    acks = await asyncio.gather(*await self.write_changelog(changes))
                    self._store(changes, acks)
            except BaseException:
                self.silence.rearm(due)  # taken from the index for this batch: checked again by the next
                raise
        now = time.time()
        observe_many(self.metrics.latency, [max(now - msg.timestamp, 0.0) for msg in batch])
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _admit(self, batch: list[Any], wall: float, late_before: float) -> tuple[list[Item], list[Outgoing]]:
        """The batch's inputs for the pipeline, and what to send instead of the others."""
        items: list[Item] = []
        outbox: list[Outgoing] = []
        rules, silence = self.rules, self.silence
        repartition, held = self.settings.repartition_topic, silence.held
        for msg in batch:
            silence.read(msg.topic, msg.partition, msg.offset)
            admitted = admit(msg, rules, wall)
            if isinstance(admitted, Item) and admitted.event is not None and held and msg.partition not in held:
                # an input partition whose table partition another worker holds (only if the
                # topics were not co-partitioned, which start-up refuses): the state is not
                # this worker's to write, so the event goes on to the holder, as a forward does
                admitted = Forward(admitted.customer_id.encode(), admitted.event.type, admitted.event.occurred_at)
            if isinstance(admitted, Item):
                if admitted.event is not None:
                    if not admitted.late:  # late where it was first read: it moves no clock here
                        silence.saw(msg.topic, msg.partition, admitted.event.occurred_at)
                    if msg.topic == repartition and (origin := header(msg, ORIGIN_HEADER)) is not None:
                        silence.arrived(origin)
                items.append(admitted)
            elif isinstance(admitted, Mark):
                silence.marked(msg.partition, *admitted)
            elif isinstance(admitted, Forward):
                self.metrics.repartitioned.labels(admitted.event_type).inc()
                name, origin = origin_header(msg)
                headers = [(name, origin)]
                if admitted.occurred_at < late_before:  # late here (see late_forward)
                    headers.append((LATE_HEADER, b"1"))
                else:
                    silence.saw(msg.topic, msg.partition, admitted.occurred_at)  # read there: the marks say so
                    silence.forwarded(admitted.key, origin, admitted.occurred_at)
                outbox.append(Outgoing(repartition, admitted.key, msg.value, headers))
            else:
                outbox.append(self.dead_letter(admitted, msg))
        return items, outbox

    async def _process(self, items: list[Item], wall: float, pending: list, arrived_at: float) -> Changes:
        """Run the pure pipeline; send its outputs; return the state records for the changelog."""
        s = self.settings
        # an item's message sits on its customer's partition (admitted above, or a tick sent there)
        keys = {i.customer_id: (i.customer_id.encode(), i.ref.partition) for i in items}
        stored = self._stored()
        ctx = Context(self.model, self.policy, s.lateness_s, emitted_at=wall, event_clock=s.clock == "event",
                      emit_max_age_s=s.emit_max_age_s, watermark=self.silence.watermark(), arrived_at=arrived_at)
        try:
            states = {cid: decode_state(raw) for cid, (k, _) in keys.items() if (raw := stored.get(k)) is not None}
            result, encoded = run_batch(items, states, ctx)
        except Exception:
            log.error("a batch of %d items failed; running it item by item", len(items), exc_info=True)
            one_by_one = run_one_by_one(items, lambda cid: stored.get(keys[cid][0]), ctx)
            await self._quarantine(items, one_by_one.failures, pending)
            result, encoded = one_by_one.result, one_by_one.encoded
        self.silence.reschedule({**{cid: None for cid, value in encoded.items() if value is None}, **result.deadlines})
        self.silence.waiting += result.waiting
        changes: Changes = {}
        for cid, value in encoded.items():
            key, partition = keys[cid]
            changes.setdefault(partition, []).append((key, value))
        await self._send_outputs(result, pending)
        record(self.metrics, result)
        self.silence.gauge()
        return changes

    def _stored(self) -> Any:
        """The table's store by key: for the memory store its own dict (its Mapping methods
        cost a call each on every key), for RocksDB a view (worker.shell.store)."""
        return local_store(self.table, self.settings.topic_partitions)

    def _store(self, changes: Changes, acks: list[Any]) -> None:
        """The batch's states into the table's store, once the changelog has them: a batch
        that fails before that leaves the store as it was, so running it again is clean."""
        stored = self._stored()
        self.tracked += store(stored, changes)
        if isinstance(stored, RocksView):
            stored.persisted(written_offsets(acks))
        self.metrics.customers.set(self.tracked)

    async def _send_outputs(self, result: Result, pending: list) -> None:
        topics, triggers = self.settings.trigger_topics, self.metrics.triggers
        for trigger in result.triggers:  # the control group's are recorded on the holdout topic, not sent
            held_out = trigger.get("held_out", False)
            topic = self.settings.holdout_topic if held_out else topics[trigger["type"]]
            pending.append(await self.send(topic, trigger["customer_id"].encode(), encode(trigger), None))
            triggers.labels(trigger["type"]).inc(0 if held_out else 1)
        for customer_id, erasure in result.erased:
            pending.append(await self.send(self.settings.erased_topic, customer_id.encode(),
                                           encode(erased_record(customer_id, erasure, self.model.version)), None))
        bound = self.settings.lateness_s
        for item in result.late:
            pending.append(await self.send(*self.dead_letter(late(item.ref, item.customer_id, bound), item.ref)))

    async def _quarantine(self, items: list[Item], failures: list[tuple[Item, Exception]], pending: list) -> None:
        """Dead-letter the items that failed one by one (`processing_failed`), unless most of
        a sizeable batch failed: then the fault is the worker's, and this raises."""
        if worker_at_fault(len(failures), len(items)):
            raise WorkerAtFault(f"{len(failures)} of {len(items)} items failed one by one") from failures[0][1]
        for item, error in failures:
            if isinstance(item.ref, DueCheck):  # no message to dead-letter: its next event re-arms it
                log.error("a silence check failed and is dropped (customer's partition %d)", item.ref.partition,
                          exc_info=error)
                continue
            log.error("dead-lettering an item the worker failed on: %s", item.ref, exc_info=error)
            pending.append(await self.send(*self.failed_on(item.ref, error, item.customer_id)))

    def failed_on(self, msg: Any, error: BaseException, customer_id: str | None = None) -> Outgoing:
        """The dead letter of a valid message the worker's own code failed on."""
        bad = InvalidEvent("processing_failed", f"{type(error).__name__}: {error}"[:500], msg.value or b"",
                           customer_id)
        return self.dead_letter(bad, msg)

    def dead_letter(self, bad: InvalidEvent, msg: Any) -> Outgoing:
        """Count and log a refused message; return the dead letter to send."""
        self.metrics.dead_letters.labels(bad.reason).inc()
        if bad.reason != "late":  # late events are counted under their own type and outcome
            self.metrics.events.labels("unknown", "dead_lettered").inc()
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", msg.topic, msg.partition, msg.offset, bad.reason, bad.detail)
        return Outgoing(self.settings.dead_letter_topic, msg.key, bad.raw or msg.value or b"",
                        dead_letter_headers(bad, *source_of(msg)))


# late_forward: an event that must be forwarded is judged late where it arrived, against
# that batch's watermark, since its copy may reach its customer's worker behind another
# watermark (after a restart). It goes on, marked late: there the customer's state tells a
# redelivered duplicate (counted as one, as its keyed twin would be) from a late event
# (dead-lettered, naming its original record).


def source_of(msg: Any) -> tuple[str, int, int]:
    """Where a message was first read: a forwarded copy names its original record."""
    if (raw := header(msg, ORIGIN_HEADER)) is not None:
        try:
            partition, offset, topic = raw.decode().split(":", 2)
            return topic, int(partition), int(offset)
        except (ValueError, UnicodeDecodeError):
            pass
    return msg.topic, msg.partition, msg.offset


def admission_rules(s: Settings) -> Rules:
    return Rules(frozenset(s.input_topics), s.topic_partitions, s.max_event_bytes, max_future_s=s.max_future_s,
                 bounds=(s.event_time_min.timestamp(), s.event_time_max.timestamp()))


def store(stored: Any, changes: Changes) -> int:
    """Write the records into the store; the change in the number of customers held."""
    added = 0
    for records in changes.values():
        for key, value in records:
            if value is None:  # erased: its changelog record is a tombstone
                added -= stored.pop(key, None) is not None
                continue
            added += key not in stored
            stored[key] = value
    return added


def late(msg: Any, customer_id: str, bound: float) -> InvalidEvent:
    return InvalidEvent("late", f"older than the event-time watermark by more than {bound:.0f} s", msg.value,
                        customer_id)
