"""Compact, versioned serialization of CustomerState for the changelog topic.

A JSON array of the fields in declaration order, prefixed by a format version;
empty containers and zero times cost a byte or two. Decoding a record written
by an unknown format version fails loudly rather than guessing.
"""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from worker.state import CustomerState, Ticket

FORMAT = 1
_FIELDS = [f.name for f in fields(CustomerState)]
_FLOATS = [f.name for f in fields(CustomerState) if f.type == "float"]


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def encode_state(state: CustomerState) -> bytes:
    out: list[Any] = [FORMAT]
    for name in _FIELDS:
        value = getattr(state, name)
        if name == "days":
            value = [x for d, n in sorted(value.items()) for x in (d, n)]
        elif name == "tickets":
            value = {k: [_num(t.opened_at), _num(t.resolved_at), _num(t.status_at)] for k, t in value.items()}
        elif name == "recent_ids":
            value = list(value)
        elif name == "fired":
            value = {k: _num(v) for k, v in value.items()}
        elif isinstance(value, float):
            value = _num(value)
        out.append(value)
    return json.dumps(out, separators=(",", ":")).encode()


def decode_state(raw: bytes) -> CustomerState:
    data = json.loads(raw)
    if not data or data[0] != FORMAT:
        raise ValueError(f"customer state format {data[:1]} is not {FORMAT}")
    values = dict(zip(_FIELDS, data[1:]))
    flat = values["days"]
    values["days"] = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    values["tickets"] = {k: Ticket(*map(float, v)) for k, v in values["tickets"].items()}
    values["recent_ids"] = tuple(values["recent_ids"])
    values["fired"] = {k: float(v) for k, v in values["fired"].items()}
    for name in _FLOATS:
        values[name] = float(values[name])
    return CustomerState(**values)
