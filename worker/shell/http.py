"""The worker's HTTP endpoints, on faust's web server: /metrics, /health, /ready and
/customers/<id>.

/customers/<id> serves customer data, so it takes a bearer token (CHURN_HTTP_TOKEN): with
one set, every request must carry it; with none, it is served only while the server binds
loopback addresses (beyond them it answers 401 to everyone). Any worker of the group
answers it: one that does not hold the customer's partition forwards the request, token
and all, to the one that does (from faust's assignment; once, never onwards).
/metrics, /health and /ready stay open, for probes and Prometheus. faust's own /router and
/table routes are off (worker.shell.app.make_app).
"""
from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from prometheus_client import generate_latest

from worker.core.codec import decode_state
from worker.core.features import features
from worker.core.partitioner import partition_of
from worker.core.triggers import pending_deadline
from worker.core.value import customer_value
from worker.errors import ConfigError
from worker.shell.metrics import set_recovery

if TYPE_CHECKING:
    from worker.shell.app import ChurnApp

# aiohttp refuses a charset inside content_type; Prometheus reads text 0.0.4 as UTF-8 anyway.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
FORWARDED = "X-Churn-Forwarded-By"  # on a forwarded request: answer it here, or not at all
FORWARD_TIMEOUT_S = 10.0
log = logging.getLogger("churn_worker")


def add_routes(churn: ChurnApp) -> None:
    app = churn.app

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        churn.is_ready()
        set_recovery(churn.metrics, churn.app.tables)
        return web.bytes(generate_latest(churn.metrics.registry), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        if stalled := churn.stalled():
            return web.json({"status": "stalled", "reason": stalled}, status=503)
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok = churn.is_ready()
        return web.json({"ready": ok, "model_version": churn.artifact.version, "model_label": churn.artifact.label,
                         "shadow_model_version": churn.models.shadow_version, "model_refused": churn.models.refused,
                         "policy_version": churn.policy.version,
                         "policy_refused": churn.policies.live.refused}, status=200 if ok else 503)

    token = http_token(churn.settings)
    if token is None and not churn.settings.web_on_loopback:
        log.warning("CHURN_WEB_HOST=%s is beyond loopback and no CHURN_HTTP_TOKEN is set: /customers/<id> "
                    "answers 401 to every request", churn.settings.web_host)

    @app.page("/customers/{customer_id}")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        refused = unauthorized(token, churn.settings.web_on_loopback, request.headers.get("Authorization"))
        if refused:
            return web.json({"error": refused}, status=401, headers={"WWW-Authenticate": 'Bearer realm="churn-worker"'})
        part = partition_of(customer_id.encode(), churn.settings.topic_partitions)
        if part in churn.active_partitions():
            return web.json(describe(churn, customer_id))
        if request.headers.get(FORWARDED):
            return web.json({"customer_id": customer_id, "partition": part,
                             "error": "partition not assigned to this worker"}, status=421)
        return await forward(churn, web, request, customer_id, part)


def http_token(settings: Any) -> str | None:
    """The bearer token, from CHURN_HTTP_TOKEN or the file CHURN_HTTP_TOKEN_FILE names."""
    if settings.http_token_file is not None:
        try:
            token = Path(settings.http_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"CHURN_HTTP_TOKEN_FILE: cannot read {settings.http_token_file}: "
                              f"{exc.strerror}") from None
        if not token:
            raise ConfigError(f"CHURN_HTTP_TOKEN_FILE: {settings.http_token_file} is empty")
        return token
    return settings.http_token.get_secret_value() if settings.http_token is not None else None


def unauthorized(token: str | None, loopback: bool, authorization: str | None) -> str:
    """Why a request for customer data is refused ('' when it is not)."""
    if token is None:
        return "" if loopback else "customer data needs CHURN_HTTP_TOKEN when the server binds beyond loopback"
    if authorization is None:
        return "an Authorization: Bearer token is required"
    if not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return "wrong token"
    return ""


async def forward(churn: ChurnApp, web: Any, request: Any, customer_id: str, part: int) -> Any:
    """The owner's answer to the same request (503 while no other worker holds the partition)."""
    own = str(churn.app.conf.canonical_url)
    distribution = churn.app.assignor.changelog_distribution  # type: ignore[attr-defined]  # faust's PartitionAssignor
    owner = owner_url(distribution, churn.table.changelog_topic.get_topic_name(), part)
    if owner is None or owner.rstrip("/") == own.rstrip("/"):
        return web.json({"customer_id": customer_id, "partition": part,
                         "error": "no worker holds this partition now (rebalancing); try again"},
                        status=503, headers={"Retry-After": "5"})
    headers = {FORWARDED: own}
    if (authorization := request.headers.get("Authorization")) is not None:
        headers["Authorization"] = authorization
    url = owner.rstrip("/") + request.rel_url.path
    try:
        async with churn.app.http_client.get(url, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as resp:
            body = await resp.read()
            return web.bytes(body, status=resp.status, content_type=resp.content_type)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return web.json({"customer_id": customer_id, "partition": part,
                         "error": f"the worker holding the partition ({owner}) did not answer: {exc!r}"}, status=502)


def owner_url(distribution: dict[str, dict[str, list[int]]], topic: str, part: int) -> str | None:
    """The URL of the worker that holds `part` of `topic` actively, as the assignment says."""
    for url, topics in distribution.items():
        if part in topics.get(topic, ()):
            return url
    return None


def describe(churn: ChurnApp, customer_id: str) -> dict[str, Any]:
    """State, features and score of one customer as this worker sees it now."""
    raw = churn.table.get(customer_id.encode())
    if raw is None:
        return {"customer_id": customer_id, "known": False}
    state = decode_state(raw)
    now = max(churn.silence.now(), state.last_seen)
    row = np.array([features(state, now)])
    score = float(churn.artifact.score(row)[0])
    return {"customer_id": customer_id, "known": True, "orders": state.orders,
            "logins": state.logins, "risk_score": round(score, 4),
            "next_deadline": pending_deadline(churn.policy, state),
            # counted in, not yet in the counts above: later than the event-time watermark
            "events_waiting": len(state.pending),
            **customer_value(churn.artifact.value_params, state, now),
            # the model's own row: the worker's features, then any value features it takes
            "features": dict(zip(churn.artifact.feature_names, churn.artifact.model_rows(row)[0].tolist()))}
