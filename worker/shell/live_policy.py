"""The policy as live, versioned data: `<app_id>-policy`, a compacted one-partition topic
whose latest record (key `policy`, value the TOML text) is the policy in force.

    churn-worker policy publish FILE   validates, refuses a version already published, writes
    every worker                        reads the topic from its start and follows it; a new
                                        valid version is applied at the next batch boundary
                                        (worker.shell.app), without restart or rebalance
    churn-worker policy show           the published version and what each worker runs

A worker started with no record on the topic keeps its file's policy. A record it cannot
apply (written by another tool: not TOML, a bad field) is refused: logged, counted
(`churn_policy_refused_total`), shown on /ready, and the policy in force stays. Each
worker reports what it runs, and its last refusal, on `<app_id>-policy-status` (compacted,
keyed by the worker's address), which `policy show` reads.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.core.policy import Policy, parse_policy
from worker.errors import PolicyError

log = logging.getLogger("churn_worker")
KEY = b"policy"
POLL_MS = 1000
RETRY_S = 5.0
COMPACTED = {"cleanup.policy": "compact"}


def policy_topic(app_id: str) -> str:
    return f"{app_id}-policy"


def status_topic(app_id: str) -> str:
    return f"{app_id}-policy-status"


class LivePolicy:
    """Follows the policy topic; `take()` hands a new valid version to the caller once."""

    def __init__(self, current: Policy, metrics: Any) -> None:
        self.current, self.metrics = current, metrics
        self.pending: Policy | None = None
        self.refused: str | None = None  # the last record that could not be applied, and why
        self.seen = -1  # offset of the last policy record read

    def offer(self, value: bytes | None, offset: int) -> None:
        """One record of the policy topic, in offset order."""
        self.seen = offset
        try:
            policy = parse_policy((value or b"").decode("utf-8", errors="replace"), f"policy record @{offset}")
        except PolicyError as exc:
            self.refused = str(exc)
            self.metrics.policy_refused.inc()
            log.error("policy record at offset %d refused, version %s stays in force: %s", offset,
                      (self.pending or self.current).version, exc)
            return
        if policy.version != (self.pending or self.current).version:
            self.pending = policy
            log.info("policy version %s read (offset %d); applied at the next batch", policy.version, offset)

    def take(self) -> Policy | None:
        """The new version to apply now, if one came (then it is the current one)."""
        policy, self.pending = self.pending, None
        if policy is not None:
            self.current = policy
        return policy

    def status(self, worker: str) -> bytes:
        return orjson.dumps({"worker": worker, "version": self.current.version, "refused": self.refused,
                             "policy_offset": self.seen, "at": time.time()})


async def follow_topic(settings: Any, auth: Any, topic: str, status: str, key: bytes,
                       offer: Callable[[bytes | None, int], None]) -> None:
    """Make `topic` and `status` (compacted, one partition), then hand every record of
    `topic` under `key` to `offer`, from the start, for as long as the worker runs."""
    from worker.tools.kafka_io import create_topics

    bootstrap = settings.kafka_bootstrap or ""
    while True:
        try:
            await create_topics(bootstrap, [topic, status], 1, settings.topic_replication,
                                options=auth.options, configs=COMPACTED)
            break
        except Exception:
            log.warning("cannot create %s yet; trying again in %.0f s", topic, RETRY_S, exc_info=True)
            await asyncio.sleep(RETRY_S)
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **auth.options)
        try:
            await consumer.start()
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                for records in (await consumer.getmany(timeout_ms=POLL_MS)).values():
                    for record in records:
                        if record.key == key:
                            offer(record.value, record.offset)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("reading %s failed; trying again in %.0f s", topic, RETRY_S, exc_info=True)
        finally:
            await consumer.stop()
        await asyncio.sleep(RETRY_S)


class PolicySwitch:
    """The worker's side: follow the topic, apply a new version at a batch boundary, report."""

    def __init__(self, churn: Any, enabled: bool = True) -> None:
        self.churn, self.enabled = churn, enabled  # off: no topic (tests with a sink)
        self.live = LivePolicy(churn.policy, churn.metrics)
        self.reported: tuple[str, str | None] | None = None
        self.worker = str(churn.app.conf.canonical_url)

    async def run(self) -> None:
        """A task of the faust app: follow the policy topic."""
        s = self.churn.settings
        await follow_topic(s, self.churn.auth, policy_topic(s.app_id), status_topic(s.app_id), KEY, self.live.offer)

    async def apply(self) -> None:
        """At a batch boundary (before a batch, or a timer tick): a new version takes over."""
        churn = self.churn
        if not self.enabled:
            return
        policy = self.live.take()
        if policy is not None:
            old = churn.policy
            churn.policy = churn.handler.policy = policy
            await churn.silence.reindex(list(churn.table.data.items()), policy)
            churn.metrics.policy_info.remove(old.version)
            churn.metrics.policy_info.labels(policy.version).set(1)
            log.info("policy version %s in force (was %s)", policy.version, old.version)
        if (self.live.current.version, self.live.refused) != self.reported:
            await self.report()

    async def report(self) -> None:
        """What this worker runs, on the status topic (`policy show` reads it)."""
        self.reported = (self.live.current.version, self.live.refused)
        try:
            await self.churn.send(status_topic(self.churn.settings.app_id), self.worker.encode(),
                                  self.live.status(self.worker), None)
        except Exception:  # the status is informative: never fail a batch for it
            log.warning("cannot report the policy version", exc_info=True)
