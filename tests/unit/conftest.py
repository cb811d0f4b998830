"""Shared helpers and fixtures for the unit tests of the pure core.

Events are built the way the worker sees them: a wire-form dict, encoded as JSON
bytes and parsed by `worker.core.events.parse_event`. Every time is explicit (offsets
from a fixed instant `T0`); nothing here reads the wall clock.

Test modules import the helpers with `from .conftest import ...` (tests/unit is a
package, so the module names cannot collide with other test folders).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from worker.config import DEFAULT_POLICY, load_policy
from worker.core.events import Event, format_time, parse_event
from worker.core.features import features
from worker.core.policy import Policy, parse_policy
from worker.core.state import EMPTY, CustomerState, apply_event
from worker.model.artifact import ModelArtifact, load_artifact

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "churn-v1"
SCHEMA_DIR = ROOT / "worker" / "schemas"

DAY = 86400.0
HOUR = 3600.0
# Monday 2026-03-02 00:00:00 UTC: the origin of every test timeline.
T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()


def at(days: float = 0.0, hours: float = 0.0, minutes: float = 0.0) -> float:
    """An explicit instant: T0 plus an offset."""
    return T0 + days * DAY + hours * HOUR + minutes * 60.0


def rfc3339(t: float) -> str:
    """RFC 3339 in UTC; microseconds only when `t` has a fraction (as producers send them)."""
    if float(t).is_integer():
        return format_time(t)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def wire(kind: str, customer_id: str = "c-1", t: float = T0, event_id: str | None = None,
         **fields: object) -> dict:
    """The wire form (schema v1) of one event; defaults make it valid for its type."""
    defaults: dict[str, dict] = {
        "login": {"channel": "web"},
        "purchase": {"order_id": f"o-{customer_id}-{t:.0f}", "amount": "25.00", "currency": "EUR"},
        "support": {"ticket_id": "t-1", "action": "opened"},
    }
    out = {
        "schema_version": 1,
        "event_id": event_id or f"{customer_id}-{kind}-{t:.0f}",
        "type": kind,
        "customer_id": customer_id,
        "occurred_at": rfc3339(t),
        **defaults.get(kind, {}),
    }
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def make_event(kind: str, customer_id: str = "c-1", t: float = T0, event_id: str | None = None,
               **fields: object) -> Event:
    """A valid Event, parsed from JSON bytes exactly as the worker would."""
    parsed = parse_event(encode(wire(kind, customer_id, t, event_id, **fields)))
    assert isinstance(parsed, Event), parsed
    return parsed


def login(t: float, customer_id: str = "c-1", **fields: object) -> Event:
    return make_event("login", customer_id, t, **fields)


def purchase(t: float, amount: object = "25.00", customer_id: str = "c-1", **fields: object) -> Event:
    return make_event("purchase", customer_id, t, amount=amount, **fields)


def support(t: float, action: str = "opened", ticket_id: str = "t-1", customer_id: str = "c-1",
            **fields: object) -> Event:
    return make_event("support", customer_id, t, ticket_id=ticket_id, action=action, **fields)


def fold(events: Iterable[Event], state: CustomerState = EMPTY) -> CustomerState:
    for event in events:
        state = apply_event(state, event)
    return state


def regular_customer(customer_id: str = "c-1", days: int = 90, start: float = T0) -> list[Event]:
    """A realistic, time-ordered history: a login most days, a purchase every ~9 days,
    and one support ticket (opened, replied, resolved with a good rating)."""
    events: list[Event] = []
    for d in range(days):
        if d % 7 != 3:  # a quiet day a week
            events.append(login(start + d * DAY + 9 * HOUR + (d % 5) * 600, customer_id))
        if d % 9 == 4:
            events.append(purchase(start + d * DAY + 20 * HOUR, f"{30 + d % 17}.50", customer_id))
    mid = start + (days // 2) * DAY
    events += [
        support(mid + 10 * HOUR, "opened", "t-mid", customer_id),
        support(mid + 12 * HOUR, "replied", "t-mid", customer_id),
        support(mid + DAY + 9 * HOUR, "resolved", "t-mid", customer_id, csat=5, nps=9),
    ]
    return sorted(events, key=lambda e: e.occurred_at)


def policy_text(**changes: object) -> str:
    """The default policy file with `key = value` lines replaced (keys are unique in it)."""
    text = DEFAULT_POLICY.read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.MULTILINE)
        assert n == 1, f"{key} not found exactly once in the default policy"
    return text


def policy_with(**changes: object) -> Policy:
    return parse_policy(policy_text(**changes), "<test policy>")


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def artifact() -> ModelArtifact:
    return load_artifact(MODEL_DIR)


@pytest.fixture(scope="session")
def feature_rows() -> np.ndarray:
    """Feature rows of a few hundred synthetic customers at the end of a 150-day stream:
    a realistic mix of active, declining and lapsed customers."""
    from worker.tools.generate import generate

    states: dict[str, CustomerState] = {}
    last = 0.0
    for obj in generate(customers=300, days=150, seed=21):
        event = parse_event(encode(obj))
        assert isinstance(event, Event)
        states[event.customer_id] = apply_event(states.get(event.customer_id, EMPTY), event)
        last = max(last, event.occurred_at)
    return np.array([features(s, last) for s in states.values()])
