"""Every Prometheus metric of the worker, on an injected CollectorRegistry.

Base units (seconds, bytes), counters end in _total, label values are bounded
(event types, outcomes, reasons, trigger types); never a customer id.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from worker.core.events import ERASURE, EVENT_TYPES, REASONS
from worker.core.pipeline import Result
from worker.core.triggers import TRIGGER_TYPES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
SCORE_BUCKETS = tuple(round(x * 0.05, 2) for x in range(1, 21))
# `_created` series double every counter and mean nothing to the alerts.
disable_created_metrics()
OUTCOMES = ("applied", "duplicate", "late", "dead_lettered")  # one per input message


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        register_standard(r)
        self.events = Counter("churn_events_consumed_total",
                              "Input messages by event type and outcome, each counted once: where its outcome "
                              "is decided (a forwarded event where its customer's partition is)",
                              ["type", "outcome"], registry=r)
        self.repartitioned = Counter("churn_events_repartitioned_total",
                                     "Events forwarded to their customer's partition (not keyed by customer id); "
                                     "each is counted again in churn_events_consumed_total where it arrives",
                                     ["type"], registry=r)
        self.dead_letters = Counter("churn_events_dead_lettered_total", "Messages sent to the dead-letter topic",
                                    ["reason"], registry=r)
        self.latency = Histogram("churn_event_processing_latency_seconds",
                                 "Kafka append time to end of processing", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("churn_scoring_batch_size", "Rows per predict_proba call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("churn_scoring_batch_duration_seconds",
                                       "Time to process one batch (state, scoring, decisions)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.triggers = Counter("churn_triggers_emitted_total", "Triggers sent", ["type"], registry=r)
        self.suppressed = Counter("churn_triggers_suppressed_total", "Triggers not sent, by reason",
                                  ["type", "reason"], registry=r)
        self.holdout = Counter("churn_triggers_holdout_total", "Triggers withheld for the control group",
                               ["type"], registry=r)
        self.risk = Histogram("churn_risk_score", "Churn probability of every scored state, by the model that "
                              "scored it", ["model_version"], buckets=SCORE_BUCKETS, registry=r)
        self.scoring_model = "none"  # the model_version label of the scores recorded (show_model sets it)
        self.customers = Gauge("churn_customers_tracked", "Customers in this worker's active partitions",
                               registry=r)
        self.deadlines = Gauge("churn_deadline_index_size", "Customers with a pending silence deadline",
                               registry=r)
        self.tick_seconds = Histogram("churn_timer_tick_duration_seconds", "Inactivity timer tick cost",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.silence_checks = Counter("churn_silence_checks_total",
                                      "Due silence deadlines taken from the index: into a batch, or sent "
                                      "by the timer as ticks", ["path"], registry=r)
        self._consumer_metrics(r)
        self._time_gauges(r)
        self._model_metrics(r)
        self.policy_info = Gauge("churn_policy_info", "Trigger policy in force", ["version"], registry=r)
        self.policy_refused = Counter("churn_policy_refused_total",
                                      "Records of the policy topic this worker could not apply (the policy in "
                                      "force stayed)", registry=r)
        self.ready = Gauge("churn_worker_ready", "1 when partitions are assigned and recovered", registry=r)
        self._prime()

    def _model_metrics(self, r: CollectorRegistry) -> None:
        self.unconverted = Counter("churn_purchases_unconverted_total", "Purchases in a currency the policy has "
                                   "no rate for: counted as orders of no value", ["currency"], registry=r)
        self.model_refused = Counter("churn_model_refused_total", "Records of the model topic this worker could "
                                     "not apply (a directory that fails the artifact checks)", registry=r)
        self.shadow_info = Gauge("churn_shadow_model_info", "Model scoring in shadow (no triggers)", ["version"],
                                 registry=r)
        self.shadow_difference = Histogram("churn_shadow_score_difference",
                                           "|shadow score - active score| on the same rows", ["shadow_version"],
                                           buckets=SCORE_BUCKETS, registry=r)
        self.shadow_differ = Counter("churn_shadow_decisions_differ_total", "Scored rows where the shadow and the "
                                     "active model fall on different sides of a risk threshold", ["shadow_version"],
                                     registry=r)
        self.shadow_scored = Counter("churn_shadow_scored_total", "Rows the shadow model scored", ["shadow_version"],
                                     registry=r)
        self.model_info = Gauge("churn_model_info", "Model being served, and its label: churned = no `churn_on` "
                                "within `horizon_days`", ["version", "kind", "churn_on", "horizon_days"], registry=r)
        self.expected_churn = Gauge("churn_model_expected_churn_rate",
                                    "The churn rate the model card measured (out-of-time test): the live mean "
                                    "of churn_risk_score should stay near it", ["model_version"], registry=r)

    def _consumer_metrics(self, r: CollectorRegistry) -> None:
        """How the worker's consumption goes: lag, assignments, marks, failures isolated."""
        self.lag = Gauge("churn_consumer_lag_records",
                         "Records left to read per partition this worker holds (log end offset less its "
                         "position), input and repartition topics", ["topic", "partition"], registry=r)
        self.rebalances = Counter("churn_rebalances_total", "Partition assignments this worker has taken up",
                                  registry=r)
        self.marks_sent = Counter("churn_watermark_marks_sent_total",
                                  "Watermark marks written to the repartition topic's partitions", registry=r)
        self.idle_confirmations = Counter("churn_watermark_idle_checks_total",
                                          "Asks of the broker for the ends of partitions that look idle, before "
                                          "their idleness lets the event-time watermark pass", registry=r)
        self.narrowed = Counter("churn_batches_narrowed_total",
                                "Batches that failed outside the pipeline and were run again in parts to find "
                                "the messages that fail (those are dead-lettered as processing_failed)",
                                registry=r)
        self.state_quarantined = Counter("churn_state_records_quarantined_total",
                                         "Recovered customer states that could not be read (left out of the "
                                         "deadline index; that customer's events are dead-lettered)", registry=r)

    def _time_gauges(self, r: CollectorRegistry) -> None:
        """Where the worker is in time: its deadlines, its watermark, and what waits for it."""
        self.next_deadline = Gauge("churn_deadline_next_seconds",
                                   "Earliest pending silence deadline in the index, on the worker's clock "
                                   "(CHURN_CLOCK); 0 when none", registry=r)
        self.watermark = Gauge("churn_event_time_watermark_seconds",
                               "Event-time watermark: min over this worker's active sources (input and "
                               "repartition partitions) of the newest event time, idle sources left out",
                               registry=r)
        self.newest = Gauge("churn_event_time_newest_seconds",
                            "Newest event time any of this worker's sources has delivered", registry=r)
        self.recovery_remaining = Gauge("churn_table_recovery_remaining_records",
                                        "Changelog records left to recover into the table, for the partitions "
                                        "this worker holds actively or as a standby", ["kind"], registry=r)
        self.waiting = Gauge("churn_events_waiting",
                             "Events counted into a state but waiting for the watermark to pass them "
                             "before they are folded and decided (event clock, or ahead of the wall clock)",
                             registry=r)

    def set_lag(self, lag: dict[tuple[str, int], int | None]) -> None:
        """Lag per partition held now (None: not known yet); the series of partitions no
        longer held are removed."""
        held = {(topic, str(partition)) for topic, partition in lag}
        for labels in self._lag_labels - held:
            self.lag.remove(*labels)
        self._lag_labels &= held
        for (topic, partition), left in lag.items():
            if left is not None:
                labels = (topic, str(partition))
                self.lag.labels(*labels).set(left)
                self._lag_labels.add(labels)

    def _prime(self) -> None:
        """Create every bounded series at zero so rates and alerts work before the first event."""
        self._lag_labels: set[tuple[str, str]] = set()  # per partition: created as partitions are held
        for t in EVENT_TYPES:
            for o in OUTCOMES:
                self.events.labels(t, o)
            self.repartitioned.labels(t)
        self.events.labels(ERASURE, "applied")
        self.events.labels("unknown", "dead_lettered")
        for path in ("batch", "timer"):
            self.silence_checks.labels(path)
        for reason in REASONS:
            self.dead_letters.labels(reason)
        for t in TRIGGER_TYPES:
            self.triggers.labels(t)
            self.holdout.labels(t)
            self.suppressed.labels(t, "cooldown")
            self.suppressed.labels(t, "cap")
            self.suppressed.labels(t, "quiet_hours")
            self.suppressed.labels(t, "history")


def register_standard(registry: CollectorRegistry) -> None:
    """The standard process_* and python_* series (CPU, memory, file descriptors, GC)."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every value, with one increment per bucket rather than per
    value (the worker observes every event's latency and every score: per value, that cost
    about 4% of a batch). Same exposition; a value of NaN counts in the sum, in no bucket."""
    if not len(values):
        return
    try:  # prometheus_client's own fields, stable across its releases; observe() if they change
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for value in values:
            histogram.observe(value)
        return
    # observe() counts a value in the first bucket whose upper bound is >= it
    slots = np.searchsorted(np.asarray(bounds), np.asarray(values, dtype=float), side="left")
    counts = np.bincount(slots, minlength=len(bounds))
    total.inc(float(np.sum(values)))
    for i in np.flatnonzero(counts[:len(bounds)]):  # NaN sorts past +Inf, into no bucket
        buckets[i].inc(int(counts[i]))


def set_recovery(metrics: Metrics, tables: Any) -> None:
    """Changelog records left to recover (faust's TableManager `tables`), at each scrape."""
    try:
        recovery = tables.recovery
        active, standby = recovery.active_remaining_total(), recovery.standby_remaining_total()
    except Exception:  # no recovery under way yet
        return
    metrics.recovery_remaining.labels("active").set(active)
    metrics.recovery_remaining.labels("standby").set(standby)


def show_model(metrics: Metrics, artifact: Any) -> None:
    """The model in force: its info, its label, the churn rate its card expects."""
    label = artifact.label
    metrics.model_info.labels(artifact.version, artifact.kind, label["churn_on"], str(label["horizon_days"])).set(1)
    if artifact.expected_churn_rate is not None:
        metrics.expected_churn.labels(artifact.version).set(artifact.expected_churn_rate)
    metrics.scoring_model = artifact.version


def record(metrics: Metrics, result: Result) -> None:
    """What one batch's pipeline run decided: outcomes, suppressions, scores."""
    for (etype, outcome), n in result.outcomes.items():
        metrics.events.labels(etype, outcome).inc(n)
    for currency, n in result.unconverted.items():
        metrics.unconverted.labels(currency).inc(n)
    for (kind, reason), n in result.suppressed.items():
        metrics.suppressed.labels(kind, reason).inc(n)
    for kind, n in result.holdouts.items():
        metrics.holdout.labels(kind).inc(n)
    for kind, n in result.quiet.items():
        metrics.suppressed.labels(kind, "history").inc(n)
    metrics.batch_size.observe(len(result.scores))
    observe_many(metrics.risk.labels(metrics.scoring_model), result.scores)
