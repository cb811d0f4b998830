"""Reading event history for training and evaluation: JSONL or CSV, streamed.

JSONL lines are events in the schema the worker consumes. CSV needs the columns
`customer_id,occurred_at` and optionally `type` (default purchase) and `amount`
(default 0); common aliases are accepted (`cust`, `customer`; `date`,
`timestamp`). A date without a time means midnight UTC. Every row goes through
the worker's own `parse_event`, so history is validated exactly as live events.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from worker.core.events import HISTORY_BOUNDS, Event, InvalidEvent, parse_event

ALIASES = {
    "customer_id": ("customer_id", "cust", "customer", "customerid", "user_id"),
    "occurred_at": ("occurred_at", "date", "timestamp", "time", "datetime"),
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([dwh])$")
_UNIT_S = {"d": 86400.0, "w": 7 * 86400.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'90d', '12w', '36h' -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"duration {text!r}: expected a number and d, w or h, e.g. 90d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def read_history(paths: Sequence[Path], progress: bool = True) -> tuple[list[Event], Counter]:
    """All valid events, sorted by time, and a count of refusals by reason."""
    events: list[Event] = []
    refused: Counter = Counter()
    for path in paths:
        rows = _csv_events(path) if path.suffix.lower() == ".csv" else _jsonl_events(path)
        with tqdm(rows, desc=f"read {path.name}", unit=" rows", disable=not progress) as bar:
            for parsed in bar:
                if isinstance(parsed, InvalidEvent):
                    refused[parsed.reason] += 1
                else:
                    events.append(parsed)
    events.sort(key=lambda e: e.occurred_at)
    return events, refused


def _jsonl_events(path: Path) -> Iterator[Event | InvalidEvent]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield parse_event(line.strip(), bounds=HISTORY_BOUNDS)


def _csv_events(path: Path) -> Iterator[Event | InvalidEvent]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        cid, when = (_column(columns, field, path) for field in ("customer_id", "occurred_at"))
        for n, row in enumerate(reader, start=2):
            kind = (row.get(columns.get("type", ""), "") or "purchase").strip()
            obj = {"schema_version": 1, "event_id": f"{path.name}:{n}", "type": kind,
                   "customer_id": row[cid].strip(), "occurred_at": _rfc3339(row[when].strip())}
            if kind == "purchase":
                amount = (row.get(columns.get("amount", ""), "") or "0").strip()
                obj.update(order_id=f"{path.name}:{n}", amount=amount, currency="XXX")
            yield parse_event(json.dumps(obj).encode(), bounds=HISTORY_BOUNDS)


def _column(columns: dict[str, str], field: str, path: Path) -> str:
    for alias in ALIASES[field]:
        if alias in columns:
            return columns[alias]
    raise ValueError(f"{path}: no {field} column (looked for {', '.join(ALIASES[field])}); "
                     f"found {', '.join(columns.values())}")


def _rfc3339(text: str) -> str:
    if _DATE_ONLY.match(text):
        return text + "T00:00:00Z"
    if _NAIVE.match(text):
        return text.replace(" ", "T") + ("Z" if text.count(":") == 2 else ":00Z")
    return text
