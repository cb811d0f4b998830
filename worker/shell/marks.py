"""Watermark marks out: what this worker has read of each input partition, written to every
repartition partition, so that the workers reading those see how far it has come
(worker.core.watermark says why and how the marks are read).

Marks go out between batches only, after a batch's forwards are acknowledged, so that in
each repartition partition they come after the events they cover; when they say something
new, at most every CHURN_MARK_INTERVAL_S; and at once after each rebalance (every worker of
the group is assigned again, so a worker that joins gets every other's marks). A send
that fails is tried again by the next call.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

from worker.config import Settings
from worker.core.admission import KIND_HEADER, MARK, mark_value
from worker.core.watermark import Watermark
from worker.core.watermark import reading as clock_reading
from worker.shell.metrics import Metrics
from worker.shell.output import Headers

MarkSink = Callable[[str, int, bytes, Headers], Awaitable[Any]]  # (topic, partition, value, headers) -> ack
log = logging.getLogger("churn_worker")


class MarkWriter:
    def __init__(self, settings: Settings, metrics: Metrics, clock: Watermark, send: MarkSink | None,
                 unread: Callable[[Hashable], int | None], ready: Callable[[], bool]) -> None:
        self.settings, self.metrics, self.clock, self.send = settings, metrics, clock, send
        self.unread, self.ready = unread, ready
        self.last: dict | None = None  # what the last marks said; None: none sent since the assignment
        self.process, self.assignments = uuid.uuid4().hex[:12], 0
        self.writer = f"{self.process}-0"  # this worker and its assignment, in each mark it writes
        self.sent_at = 0.0
        self.open = 0  # batches under way

    def reset(self) -> None:
        """A new assignment: the next marks go out at once, under a writer name of its own."""
        self.last = None
        self.assignments += 1
        self.writer = f"{self.process}-{self.assignments}"

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Around a batch: no marks while it runs; after it (if it went through), the marks."""
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
        await self.write()

    async def write(self) -> None:
        s = self.settings
        if self.send is None or self.open or not self.clock.marks or not self.ready():
            return
        at = time.monotonic()
        if self.last is not None and at - self.sent_at < s.mark_interval_s:
            return
        reading = clock_reading(self.clock, at, self.unread)
        if reading == self.last:
            return
        value, headers = mark_value(reading, self.writer), [(KIND_HEADER, MARK)]  # type: ignore[arg-type]
        try:
            sent = [await self.send(s.repartition_topic, p, value, headers) for p in range(s.topic_partitions)]
            failed = [r for r in await asyncio.gather(*sent, return_exceptions=True) if isinstance(r, BaseException)]
        except Exception as exc:  # the producer closed (shutdown): nothing more to say
            failed = [exc]
        if failed:
            log.warning("watermark marks were not sent (%r); trying again later", failed[0])
            return
        self.last, self.sent_at = reading, at
        self.metrics.marks_sent.inc(len(sent))
