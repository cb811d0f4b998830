"""`churn-worker policy publish FILE` and `policy show`: the policy topic from outside.

publish validates the file (a PolicyError names the field), reads the topic, refuses a
version already published there (versions are names, not numbers: a version is new when
the topic has never carried it since its last compaction), and writes the file's text
under the key `policy`. show prints the version in force on the topic and, from the status
topic, what each worker runs and what it last refused.
"""
from __future__ import annotations

from pathlib import Path

from worker.config import Settings, load_policy
from worker.core.policy import parse_policy
from worker.errors import PolicyError
from worker.shell.live_policy import KEY, policy_topic, status_topic
from worker.tools.control_topics import records, reports, write


async def published(settings: Settings) -> list[tuple[int, str | None]]:
    """(offset, version or None if unreadable) of every policy record on the topic."""
    out: list[tuple[int, str | None]] = []
    for record in await records(settings, policy_topic(settings.app_id), KEY):
        try:
            out.append((record.offset, parse_policy((record.value or b"").decode("utf-8", "replace")).version))
        except PolicyError:
            out.append((record.offset, None))
    return out


async def publish(settings: Settings, path: Path) -> str:
    policy = load_policy(path)
    history = await published(settings)
    topic = policy_topic(settings.app_id)
    if any(version == policy.version for _, version in history):
        raise PolicyError(f"{path}: version: {policy.version!r} is not new (already on {topic}); bump it")
    offset = await write(settings, topic, status_topic(settings.app_id), KEY, path.read_bytes())
    return f"published policy version {policy.version} to {topic} (offset {offset})"


async def show(settings: Settings) -> str:
    history = await published(settings)
    topic = policy_topic(settings.app_id)
    head = (f"version {history[-1][1] or '(unreadable)'} (offset {history[-1][0]})" if history
            else "no policy published (workers use their file)")
    lines = await reports(settings, status_topic(settings.app_id), lambda s: f"version {s.get('version')}")
    return "\n".join([f"{topic}: {head}", *lines])
