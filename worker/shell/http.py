"""The worker's HTTP endpoints, on faust's web server: /metrics, /health, /ready and
/customers/<id>."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import generate_latest

from worker.core.codec import decode_state
from worker.core.features import FEATURE_NAMES, features
from worker.core.partitioner import partition_of
from worker.core.triggers import pending_deadline

if TYPE_CHECKING:
    from worker.shell.app import ChurnApp

# aiohttp refuses a charset inside content_type; Prometheus reads text 0.0.4 as UTF-8 anyway.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"


def add_routes(churn: ChurnApp) -> None:
    app = churn.app

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        churn.is_ready()
        return web.bytes(generate_latest(churn.metrics.registry), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok = churn.is_ready()
        return web.json({"ready": ok, "model_version": churn.artifact.version,
                         "policy_version": churn.policy.version}, status=200 if ok else 503)

    @app.page("/customers/{customer_id}")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        # Answered by the worker that owns the customer's partition; another worker says
        # which partition to look for (faust's table routing needs producer metadata for
        # the changelog topic, which this worker writes with its own batch producer).
        part = partition_of(customer_id.encode(), churn.settings.topic_partitions)
        if part not in churn.active_partitions():
            return web.json({"customer_id": customer_id, "partition": part,
                             "error": "partition not assigned to this worker"}, status=421)
        return web.json(describe(churn, customer_id))


def describe(churn: ChurnApp, customer_id: str) -> dict[str, Any]:
    """State, features and score of one customer as this worker sees it now."""
    raw = churn.table.get(customer_id.encode())
    if raw is None:
        return {"customer_id": customer_id, "known": False}
    state = decode_state(raw)
    now = max(churn.silence.now(), state.last_seen)
    row = features(state, now)
    score = float(churn.artifact.score(np.array([row]))[0])
    return {"customer_id": customer_id, "known": True, "orders": state.orders,
            "logins": state.logins, "risk_score": round(score, 4),
            "next_deadline": pending_deadline(churn.policy, state),
            # counted in, not yet in the counts above: later than the event-time watermark
            "events_waiting": len(state.pending),
            "features": dict(zip(FEATURE_NAMES, row))}
