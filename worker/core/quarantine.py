"""A batch as the shell runs it: the pipeline, then the encoded states to store; and, when
that fails, the same batch item by item, so one input the code cannot handle is set
aside instead of stopping the worker on every restart.

    run_batch(items, states, ctx) -> (Result, encoded)
    run_one_by_one(items, raw_state, ctx) -> OneByOne

Item by item, in order: an item that fails (in the pipeline or decoding its customer's
state) leaves that state as it was and is reported; the others go on from the states the
items before them produced. When most of a sizeable batch fails (`worker_at_fault`), the
fault is the worker's, not the input's, and the shell stops rather than quarantine it all.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from worker.core.codec import decode_state, encode_state
from worker.core.pipeline import Context, Item, Result, merge, process
from worker.core.state import EMPTY, CustomerState

# a batch that fails item by item in at least this many items, and in most of them, is the
# worker's fault rather than the input's
MIN_FAILURES_AT_FAULT = 10


def run_batch(items: list[Item], states: Mapping[str, CustomerState],
              ctx: Context) -> tuple[Result, dict[str, bytes | None]]:
    """The pipeline's result, and the encoded states it changed (only duplicates, late
    events or early ticks leave a state as it was: nothing to store); None for a customer
    erased and not seen since (a tombstone: the record is deleted)."""
    result = process(items, states, ctx)
    encoded: dict[str, bytes | None] = {cid: None for cid, _ in result.erased if cid not in result.states}
    encoded.update((cid, encode_state(st)) for cid, st in result.states.items() if st is not states.get(cid))
    return result, encoded


@dataclass
class OneByOne:
    result: Result = field(default_factory=Result)
    encoded: dict[str, bytes | None] = field(default_factory=dict)
    failures: list[tuple[Item, Exception]] = field(default_factory=list)


def run_one_by_one(items: list[Item], raw_state: Callable[[str], bytes | None], ctx: Context) -> OneByOne:
    """`run_batch` for each item in turn; `raw_state(customer_id)` is the stored record."""
    out = OneByOne()
    current: dict[str, CustomerState] = {}
    for item in items:
        cid = item.customer_id
        try:
            if cid not in current and (raw := raw_state(cid)) is not None:
                current[cid] = decode_state(raw)
            one, values = run_batch([item], {cid: current[cid]} if cid in current else {}, ctx)
        except Exception as exc:
            out.failures.append((item, exc))
            continue
        merge(out.result, one)
        current.update({c: EMPTY for c, value in values.items() if value is None})  # erased
        current.update(one.states)
        out.encoded.update(values)
    return out


def worker_at_fault(failures: int, items: int) -> bool:
    return failures >= MIN_FAILURES_AT_FAULT and failures * 2 > items
