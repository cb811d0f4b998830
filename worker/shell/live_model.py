"""Models that change without downtime: `<app_id>-model`, a compacted one-partition topic
whose latest record (key `model`) says which model directory is active, which one was
active before (for a rollback), and which one scores in shadow:

    {"active": "/app/models/churn-v2", "previous": "/app/models/churn-v1", "shadow": null}

`churn-worker model shadow DIR | promote | rollback | show` writes and reads it. A topic
rather than a watched directory: every worker applies the same records in the same order
at a batch boundary, a half-copied directory is never picked up by accident (the worker
loads a directory only when a record names it), and what each worker runs is reported on
`<app_id>-model-status` for `model show`. The directories must exist on every worker
(baked into the image, or on a shared volume).

A directory that fails the artifact checks (`load_artifact`: card, features, library
versions) is refused: logged, counted (`churn_model_refused_total`), shown on /ready, and
the models in force stay. With nothing on the topic, the worker serves CHURN_MODEL_DIR.

The shadow model scores the same feature rows as the active one, batch by batch; it sends
nothing. `churn_shadow_score_difference` is the histogram of |shadow - active| and
`churn_shadow_decisions_differ_total` counts the rows where the two fall on different
sides of a risk threshold (the decisions that would differ).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from worker.errors import ModelError
from worker.model.artifact import ModelArtifact, load_artifact
from worker.shell.live_policy import follow_topic
from worker.shell.metrics import observe_many, show_model

log = logging.getLogger("churn_worker")
KEY = b"model"


def model_topic(app_id: str) -> str:
    return f"{app_id}-model"


def model_status_topic(app_id: str) -> str:
    return f"{app_id}-model-status"


class Shadowed:
    """The active model, scoring as the pipeline asks; the shadow scores the same rows."""

    def __init__(self, active: ModelArtifact, shadow: ModelArtifact | None, metrics: Any, thresholds: Any) -> None:
        self.active, self.shadow, self.metrics, self.thresholds = active, shadow, metrics, thresholds

    @property
    def version(self) -> str:
        return self.active.version

    @property
    def value_params(self) -> Any:
        return self.active.value_params

    def score(self, rows: np.ndarray) -> np.ndarray:
        scores = self.active.score(rows)
        if self.shadow is not None and len(rows):
            self._compare(scores, self.shadow.score(rows))
        return scores

    def explain(self, rows: np.ndarray) -> list[list[dict]]:
        return self.active.explain(rows)

    def _compare(self, active: np.ndarray, shadow: np.ndarray) -> None:
        assert self.shadow is not None
        version = self.shadow.version
        observe_many(self.metrics.shadow_difference.labels(version), np.abs(shadow - active).tolist())
        differ = np.zeros(len(active), dtype=bool)
        for threshold in self.thresholds():
            differ |= (active >= threshold) != (shadow >= threshold)
        self.metrics.shadow_differ.labels(version).inc(int(differ.sum()))
        self.metrics.shadow_scored.labels(version).inc(len(active))


class ModelSwitch:
    """The worker's side: follow the topic, load what a record names, swap at a batch boundary."""

    def __init__(self, churn: Any, enabled: bool = True) -> None:
        self.churn, self.enabled = churn, enabled
        self.loaded: dict[str, ModelArtifact] = {str(churn.settings.model_dir): churn.artifact}
        self.pending: tuple[ModelArtifact, ModelArtifact | None, str | None] | None = None
        self.active_dir = str(churn.settings.model_dir)
        self.shadow_dir: str | None = None
        self.refused: str | None = None
        self.reported: tuple | None = None
        self.worker = str(churn.app.conf.canonical_url)

    def _load(self, directory: str) -> ModelArtifact:
        if directory not in self.loaded:
            self.loaded[directory] = load_artifact(Path(directory))
        return self.loaded[directory]

    def offer(self, value: bytes | None, offset: int) -> None:
        """One record of the model topic, in offset order."""
        try:
            record = orjson.loads(value or b"")
            active = self._load(str(record["active"]))
            shadow_dir = record.get("shadow")
            shadow = self._load(str(shadow_dir)) if shadow_dir else None
        except (ModelError, ValueError, KeyError, TypeError, OSError) as exc:
            self.refused = f"model record @{offset}: {exc}"
            self.churn.metrics.model_refused.inc()
            log.error("model record at offset %d refused; the models in force stay: %s", offset, exc)
            return
        self.pending = (active, shadow, str(shadow_dir) if shadow_dir else None)
        self.active_dir = str(record["active"])
        log.info("model %s read (shadow %s, offset %d); in force at the next batch", active.version,
                 shadow.version if shadow else None, offset)

    async def run(self) -> None:
        s, auth = self.churn.settings, self.churn.auth
        await follow_topic(s, auth, model_topic(s.app_id), model_status_topic(s.app_id), KEY, self.offer)

    async def apply(self) -> None:
        """At a batch boundary: the models the last record named take over."""
        if not self.enabled:
            return
        if self.pending is not None:
            active, shadow, self.shadow_dir = self.pending
            self.pending = None
            churn = self.churn
            old = churn.artifact
            churn.artifact = active
            churn.handler.model = Shadowed(active, shadow, churn.metrics, self._thresholds)
            if old.version != active.version:
                churn.metrics.model_info.clear()
                show_model(churn.metrics, active)
                log.info("model %s in force (was %s)", active.version, old.version)
            churn.metrics.shadow_info.clear()
            if shadow is not None:
                churn.metrics.shadow_info.labels(shadow.version).set(1)
        state = (self.churn.artifact.version, self.shadow_version, self.refused)
        if state != self.reported:
            await self.report(state)

    @property
    def shadow_version(self) -> str | None:
        model = self.churn.handler.model
        return model.shadow.version if isinstance(model, Shadowed) and model.shadow is not None else None

    def _thresholds(self) -> list[float]:
        risk = self.churn.policy.risk
        return [risk.follow_up_threshold, risk.win_back_threshold]

    async def report(self, state: tuple) -> None:
        self.reported = state
        active, shadow, refused = state
        body = orjson.dumps({"worker": self.worker, "active": active, "shadow": shadow, "refused": refused,
                             "at": time.time()})
        try:
            await self.churn.send(model_status_topic(self.churn.settings.app_id), self.worker.encode(), body, None)
        except Exception:  # informative only: never fail a batch for it
            log.warning("cannot report the model versions", exc_info=True)

