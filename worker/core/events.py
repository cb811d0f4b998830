"""Customer events, schema v1: parse raw Kafka message bytes into values.

`parse_event(raw)` never raises on bad input: it returns an `Event` or an
`InvalidEvent(reason, detail, raw)` whose `reason` is one of the bounded
`REASONS` (a metric label), and whose `detail` says what was expected and
what arrived. The published JSON Schema is `worker/schemas/event.v1.json`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

SCHEMA_VERSION = 1
EVENT_TYPES = ("login", "purchase", "support")
ERASURE = "customer_erased"  # forget the customer: never folded into a state (worker.core.pipeline)
SUPPORT_ACTIONS = ("opened", "replied", "resolved", "reopened")
MAX_ID_LENGTH = 128
MAX_ID_BYTES = 255   # ids are stored with a one-byte length (worker.core.codec)
MAX_AMOUNT = 1e9     # per order; beyond it a unit mistake, and it would overflow CLV features
# Live events dated outside these bounds are typos or unit mistakes (ms vs s), not news
# (CHURN_EVENT_TIME_MIN / _MAX move them); history read offline may go back to 1970.
MIN_TIME = datetime.fromisoformat("2000-01-01T00:00:00+00:00").timestamp()
MAX_TIME = datetime.fromisoformat("2100-01-01T00:00:00+00:00").timestamp()
LIVE_BOUNDS = (MIN_TIME, MAX_TIME)
HISTORY_BOUNDS = (0.0, MAX_TIME)  # train, evaluate, simulate, uplift: any real date from 1970 on
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DECIMAL = re.compile(r"^\+?\d+(\.\d+)?$")  # as in the JSON Schema: no exponent, sign or spaces

REASONS = (
    "oversize", "not_utf8", "bad_json", "not_object", "bad_schema_version",
    "missing_field", "bad_field_type", "bad_field_value", "unknown_event_type",
    "bad_timestamp", "timestamp_out_of_range", "late",
    "processing_failed",  # valid, but the worker failed on it (ChurnApp._isolate)
    "bad_mark",  # a watermark mark on the repartition topic that cannot be read
)


class Event(NamedTuple):
    """One valid customer event. `occurred_at` is seconds since the epoch (UTC).
    (A named tuple: immutable, and built several times faster than a frozen dataclass.)"""

    event_id: str
    type: str
    customer_id: str
    occurred_at: float
    channel: str | None = None
    order_id: str | None = None
    amount: float = 0.0
    currency: str | None = None
    ticket_id: str | None = None
    action: str | None = None
    csat: int | None = None
    nps: int | None = None
    tz: str | None = None  # the customer's IANA time zone, if the event names one (quiet hours)


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """Why a message was refused; `raw` is the original bytes, kept for the dead-letter topic."""

    reason: str
    detail: str
    raw: bytes
    customer_id: str | None = None


class _Refused(Exception):
    """Internal: carries a refusal out of the field checks (never leaves this module)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_valid(raw: bytes) -> Event:
    """parse_event for input that must be valid (generated streams): a refusal is a bug there,
    raised with its reason rather than passed on."""
    parsed = parse_event(raw)
    if isinstance(parsed, InvalidEvent):
        raise ValueError(f"expected a valid event, got {parsed.reason}: {parsed.detail}")
    return parsed


def parse_event(raw: bytes, max_bytes: int = 65536,
                bounds: tuple[float, float] = LIVE_BOUNDS) -> Event | InvalidEvent:
    """Parse one message value; `occurred_at` must lie within `bounds` (seconds since the
    epoch, the upper one excluded). Pure: no clock, no I/O."""
    if raw is None:
        return InvalidEvent("not_object", "message has no value (tombstone)", b"")
    if len(raw) > max_bytes:
        return InvalidEvent("oversize", f"{len(raw)} bytes > limit {max_bytes}", raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses a little more than the json module does (NaN, lone surrogates): the
        # json module decides, so a message gets the same outcome and reason with either
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return InvalidEvent("not_utf8", f"not UTF-8 at byte {exc.start}", raw)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the decoder allows
            return InvalidEvent("bad_json", f"invalid JSON: {exc}", raw)
    if not isinstance(obj, dict):
        return InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}", raw)
    try:
        return _build(obj, bounds)
    except _Refused as ref:
        cid = obj.get("customer_id")
        return InvalidEvent(ref.reason, ref.detail, raw, cid if isinstance(cid, str) else None)


def _build(obj: dict[str, Any], bounds: tuple[float, float]) -> Event:
    event = _build_typed(obj, bounds)
    if "tz" in obj:  # rare: most events carry no time zone
        tz = _string(obj, "tz")
        if not known_zone(tz):
            raise _Refused("bad_field_value", f"tz: {tz!r} is not an IANA time zone (e.g. 'Europe/Berlin')")
        event = event._replace(tz=tz)
    return event


@lru_cache(maxsize=1024)
def known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def utc_offset_s(zone: str, at: float) -> float:
    """The zone's offset from UTC at `at`, in seconds (as of the start of that hour)."""
    return _offset(zone, int(at // 3600))


@lru_cache(maxsize=65536)
def _offset(zone: str, hour: int) -> float:
    moment = datetime.fromtimestamp(hour * 3600, UTC)
    return float(moment.astimezone(ZoneInfo(zone)).utcoffset().total_seconds())  # type: ignore[union-attr]


def _build_typed(obj: dict[str, Any], bounds: tuple[float, float]) -> Event:
    version = obj.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Refused("bad_schema_version", f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    kind = _string(obj, "type")
    if kind not in EVENT_TYPES and kind != ERASURE:
        raise _Refused("unknown_event_type", f"type: expected one of {(*EVENT_TYPES, ERASURE)}, got {kind!r}")
    event_id, customer_id = _string(obj, "event_id"), _string(obj, "customer_id")
    occurred_at = _timestamp(obj, "occurred_at", bounds)
    if kind == ERASURE:
        return Event(event_id, kind, customer_id, occurred_at)
    # positional, in Event's field order (a named tuple built from keywords costs twice as much)
    if kind == "login":
        return Event(event_id, kind, customer_id, occurred_at, _string(obj, "channel", required=False))
    if kind == "purchase":
        currency = _string(obj, "currency")
        if not _CURRENCY.match(currency):
            raise _Refused("bad_field_value", f"currency: expected ISO 4217 code like 'EUR', got {currency!r}")
        return Event(event_id, kind, customer_id, occurred_at, None, _string(obj, "order_id"), _amount(obj),
                     currency)
    action = _string(obj, "action")
    if action not in SUPPORT_ACTIONS:
        raise _Refused("bad_field_value", f"action: expected one of {SUPPORT_ACTIONS}, got {action!r}")
    ticket_id = _string(obj, "ticket_id")
    return Event(event_id, kind, customer_id, occurred_at, None, None, 0.0, None, ticket_id, action,
                 _score(obj, "csat", 1, 5), _score(obj, "nps", 0, 10))


def _string(obj: dict[str, Any], name: str, required: bool = True) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Refused("missing_field", f"{name}: required field is missing")
        return None
    if not isinstance(value, str):
        raise _Refused("bad_field_type", f"{name}: expected string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise _Refused("bad_field_value", f"{name}: expected 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    if value.isascii():  # the common case: one byte a character, no surrogates
        return value
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style JSON escape
        raise _Refused("bad_field_value", f"{name}: not valid Unicode text") from None
    if size > MAX_ID_BYTES:
        raise _Refused("bad_field_value", f"{name}: {size} bytes in UTF-8, at most {MAX_ID_BYTES}")
    return value


def _timestamp(obj: dict[str, Any], name: str, bounds: tuple[float, float]) -> float:
    text = _string(obj, name)
    if not _RFC3339.match(text):
        raise _Refused("bad_timestamp", f"{name}: expected RFC 3339 with offset, got {text!r}")
    try:
        seconds = datetime.fromisoformat(text.replace("z", "Z")).timestamp()
    except ValueError as exc:
        raise _Refused("bad_timestamp", f"{name}: {exc}") from None
    if not bounds[0] <= seconds < bounds[1]:
        raise _Refused("timestamp_out_of_range", f"{name}: {text} is outside {format_time(bounds[0])[:10]}.."
                                                 f"{format_time(bounds[1])[:10]}")
    return seconds


def _amount(obj: dict[str, Any]) -> float:
    value = obj.get("amount")
    if value is None:
        raise _Refused("missing_field", "amount: required field is missing")
    if isinstance(value, str) and not _DECIMAL.match(value):
        raise _Refused("bad_field_type", f"amount: expected a decimal string like '12.50', got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Refused("bad_field_type", f"amount: expected decimal number or string, got {type(value).__name__}")
    try:
        number = float(Decimal(str(value)))
    except InvalidOperation:
        raise _Refused("bad_field_type", f"amount: expected decimal, got {value!r}") from None
    if not math.isfinite(number) or not 0 <= number <= MAX_AMOUNT:
        raise _Refused("bad_field_value", f"amount: expected a number in 0..{MAX_AMOUNT:g}, got {value!r}")
    return number


def _score(obj: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2**64:
        value = int(value)  # orjson reads an integer literal past 64 bits as a float: out of range, not a float
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused("bad_field_type", f"{name}: expected integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _Refused("bad_field_value", f"{name}: expected {low}..{high}, got {value}")
    return value


def to_json(event: Event) -> dict[str, Any]:
    """The wire form of an event (inverse of parse_event for valid events)."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "event_id": event.event_id, "type": event.type,
        "customer_id": event.customer_id, "occurred_at": format_time(event.occurred_at),
    }
    if event.type == "login" and event.channel:
        out["channel"] = event.channel
    elif event.type == "purchase":
        out.update(order_id=event.order_id, amount=round(event.amount, 2), currency=event.currency)
    elif event.type == "support":
        out.update(ticket_id=event.ticket_id, action=event.action)
        out.update({k: v for k, v in (("csat", event.csat), ("nps", event.nps)) if v is not None})
    if event.tz:
        out["tz"] = event.tz
    return out


@lru_cache(maxsize=4096)  # a batch stamps one emitted_at on every trigger; deadlines repeat
def format_time(seconds: float) -> str:
    """RFC 3339 in UTC with a Z suffix, second precision."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
