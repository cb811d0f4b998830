"""Outbound messages: trigger events (schema v1) and dead-letter records.

The trigger schema is published as `worker/schemas/trigger.v1.json`; fields are
only ever added within a schema version, never renamed or removed.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

from worker.core.events import Event, InvalidEvent, format_time
from worker.core.features import FEATURE_NAMES, nps_class, rhythm_days
from worker.core.policy import Policy
from worker.core.state import CustomerState
from worker.core.triggers import Fire, segment

TRIGGER_SCHEMA_VERSION = 1


def rhythm(state: CustomerState) -> str:
    """How often the customer usually shows up, so a message can fit their habit."""
    days = rhythm_days(state)
    if days is None:
        return "unknown"
    return "daily" if days <= 1.5 else "weekly" if days <= 10 else "monthly" if days <= 45 else "rare"


def build_trigger(decision: Fire, *, customer_id: str, state: CustomerState,
                  score: float, row: list[float], reasons: list[dict], now: float,
                  emitted_at: float, policy: Policy,
                  model_version: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema_version": TRIGGER_SCHEMA_VERSION,
        "trigger_id": decision.trigger_id,
        "type": decision.type,
        "customer_id": customer_id,
        "rule": decision.rule,
        "risk_score": round(float(score), 4),
        "risk_band": policy.band(score),
        "threshold": decision.threshold,
        "model_version": model_version,
        "policy_version": policy.version,
        "top_reasons": reasons,
        "segment": segment(policy, state, now),
        "rhythm": rhythm(state),
        "nps_class": nps_class(state.last_nps),
        "state": {name: round(float(v), 4) for name, v in zip(FEATURE_NAMES, row)},
        "event_time": format_time(now),
        "emitted_at": format_time(emitted_at),
        **(value or {}),  # p_alive, expected purchases, predicted CLV, next order (worker.core.value)
        **({"held_out": True} if decision.held_out else {}),
    }


ERASED_SCHEMA_VERSION = 1


def erased_record(customer_id: str, erasure: Event, model_version: str) -> dict[str, Any]:
    """What subscribers get when a customer is erased (topic CHURN_ERASED_TOPIC, keyed by
    the customer id): forget this customer. `erasure_id` is the erasure event's id, the
    same on every copy (a redelivered erasure is sent again)."""
    return {
        "schema_version": ERASED_SCHEMA_VERSION,
        "type": "customer_erased",
        "erasure_id": erasure.event_id,
        "customer_id": customer_id,
        "requested_at": format_time(erasure.occurred_at),
        "model_version": model_version,
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8. orjson writes it in a tenth of the json module's time, the
    same values (floats in their shortest round-trip form, numpy numbers as numbers); a
    payload it refuses goes through the json module."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(payload, separators=(",", ":")).encode()


def dead_letter_headers(bad: InvalidEvent, topic: str, partition: int, offset: int,
                        ) -> list[tuple[str, bytes]]:
    """Where the message came from and why it was refused; the value stays the original bytes."""
    return [
        ("dlq.reason", bad.reason.encode()),
        ("dlq.detail", bad.detail[:1000].encode()),
        ("dlq.source.topic", topic.encode()),
        ("dlq.source.partition", str(partition).encode()),
        ("dlq.source.offset", str(offset).encode()),
    ]
