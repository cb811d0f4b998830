"""`churn-worker model shadow DIR | promote | rollback | show`: the model topic from outside
(worker.shell.live_model). Each command reads the latest record, checks what it can, and
writes the next one; every worker applies it at its next batch, without restart.

    shadow DIR   DIR scores beside the active model (checked here with the worker's own
                 artifact checks: a directory that fails them is refused, naming why)
    promote      the shadow model becomes the active one; the active one is kept as previous
    rollback     the previous model becomes the active one again
    show         the record in force and what each worker runs
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.errors import ConfigError
from worker.model.artifact import load_artifact
from worker.shell.live_model import KEY, model_status_topic, model_topic
from worker.tools.control_topics import records, reports, write


async def current(settings: Settings) -> dict[str, Any]:
    """The latest record, or what the workers run without one (their CHURN_MODEL_DIR)."""
    for record in reversed(await records(settings, model_topic(settings.app_id), KEY)):
        try:
            return dict(json.loads(record.value))
        except (TypeError, ValueError):
            continue
    return {"active": str(settings.model_dir), "previous": None, "shadow": None}


def next_record(action: str, now: dict[str, Any], directory: Path | None) -> dict[str, Any]:
    if action == "shadow":
        assert directory is not None
        load_artifact(directory)  # the worker's own checks: a ModelError names what is wrong
        return {**now, "shadow": str(directory)}
    if action == "promote":
        if not now.get("shadow"):
            raise ConfigError("model promote: no model is in shadow (`churn-worker model shadow DIR` first)")
        return {"active": now["shadow"], "previous": now["active"], "shadow": None}
    if not now.get("previous"):
        raise ConfigError("model rollback: no previous model to roll back to")
    return {"active": now["previous"], "previous": now["active"], "shadow": None}


async def change(settings: Settings, action: str, directory: Path | None = None) -> str:
    record = next_record(action, await current(settings), directory)
    topic = model_topic(settings.app_id)
    offset = await write(settings, topic, model_status_topic(settings.app_id), KEY, json.dumps(record).encode())
    return f"model {action}: active {record['active']}, shadow {record['shadow']} ({topic} offset {offset})"


async def show(settings: Settings) -> str:
    now = await current(settings)
    lines = await reports(settings, model_status_topic(settings.app_id),
                          lambda s: f"active {s.get('active')}, shadow {s.get('shadow')}")
    return "\n".join([f"{model_topic(settings.app_id)}: active {now['active']}, shadow {now.get('shadow')}, "
                      f"previous {now.get('previous')}", *lines])
