"""A batch that fails outside the pipeline's own quarantine is narrowed down, not retried
forever.

The pipeline and the state codec already run a failed batch item by item
(worker.core.quarantine). A failure elsewhere in the handler (building or encoding a
trigger, a bug in the shell) used to stop the worker, and the restarted worker failed on
the same redelivered batch again: a crash loop. Now the batch is run again in halves,
recursively, until the records that fail alone are found; those go to the dead-letter
topic as `processing_failed` and the rest are applied. Running a part again is clean: the
store takes a batch's states only once the changelog has them, and its triggers carry the
same ids.

Two things still stop the worker (exit, batch redelivered after restart), as before:
- a Kafka error or timeout: the broker, not the input, is at fault;
- most of a sizeable batch failing alone, here or in the pipeline's quarantine: the fault is
  the worker's, and dead-lettering the whole stream would hide it (`WorkerAtFault`).
`churn_batches_narrowed_total` counts the narrowings; dead letters and their alert as for
any `processing_failed` event.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError

from worker.core.quarantine import worker_at_fault
from worker.errors import WorkerAtFault
from worker.shell.handler import BatchHandler

log = logging.getLogger("churn_worker")
# not the input's fault, never narrowed: the broker's (Kafka errors, timeouts) or the worker's
NOT_NARROWED: tuple[type[BaseException], ...] = (KafkaError, asyncio.TimeoutError, ConnectionError, WorkerAtFault)


async def handle_narrowing(handler: BatchHandler, batch: list[Any]) -> None:
    try:
        await handler.handle(batch)
    except NOT_NARROWED:
        raise
    except Exception as exc:
        log.error("a batch of %d messages failed outside the pipeline; narrowing it down", len(batch),
                  exc_info=True)
        handler.metrics.narrowed.inc()
        failed = await _narrow(handler, batch, exc)
        if worker_at_fault(len(failed), len(batch)):
            raise WorkerAtFault(f"{len(failed)} of {len(batch)} messages failed one by one") from exc


async def _narrow(handler: BatchHandler, batch: list[Any], error: Exception) -> list[Any]:
    """Dead-letter the messages of `batch` that fail alone (it failed with `error` whole);
    apply the rest, in order. Returns the failed ones."""
    if len(batch) == 1:
        await _give_up(handler, batch[0], error)
        return batch
    failed = []
    for part in (batch[:len(batch) // 2], batch[len(batch) // 2:]):
        try:
            await handler.handle(part)
        except NOT_NARROWED:
            raise
        except Exception as exc:
            failed += await _narrow(handler, part, exc)
    return failed


async def _give_up(handler: BatchHandler, msg: Any, error: Exception) -> None:
    log.error("dead-lettering a message the worker fails on: %s[%d]@%d", msg.topic, msg.partition, msg.offset,
              exc_info=error)
    await (await handler.send(*handler.failed_on(msg, error)))
