"""Restart-to-ready and memory at scale, per table store (`make bench-restart`).

For each store (memory, rocksdb): one purchase for each of N customers (default 1,000,000)
on a fresh input topic of the embedded broker; a worker consumes them all and settles;
SIGTERM; a new worker process starts on the same data directory. Measured: the first
worker's resident memory when settled, the second's time from process start to /ready
answering 200 (Python start-up, model load, joining the group, changelog recovery and
the deadline index rebuilt), its memory then, and that a sample of customers reads back
the same. Wall-clock figures of one run on one machine: report them with the machine.

    python -m worker.tools.restart_bench [--customers N] [--stores memory,rocksdb] [--json FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.harness.broker import EmbeddedBroker
from worker.harness.process import WorkerProcess
from worker.tools.kafka_io import create_topics, produce

SAMPLE = 200  # customers read back before and after the restart


def purchases(n: int) -> list[bytes]:
    """One purchase per customer, spread over the last 24 hours (wall clock: nothing is old)."""
    start = datetime.now(UTC) - timedelta(hours=24)
    step = timedelta(hours=23) / max(n, 1)
    return [json.dumps({"schema_version": 1, "event_id": f"rb-{i}", "type": "purchase",
                        "customer_id": f"r-{i:08d}", "occurred_at": (start + step * i).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "order_id": f"ro-{i}", "amount": "19.90", "currency": "EUR"},
                       separators=(",", ":")).encode() for i in range(n)]


def read_back(worker: WorkerProcess, customers: list[str]) -> dict[str, Any]:
    out = {}
    for cid in customers:
        body = json.loads(worker.get(f"/customers/{cid}")[1])
        out[cid] = (body.get("known"), body.get("orders"), body.get("logins"))
    return out


def one_store(store: str, n: int, broker: EmbeddedBroker, messages: list[bytes], tmp: Path) -> dict[str, Any]:
    app_id = f"restart-{store}-{uuid.uuid4().hex[:6]}"
    topic = f"{app_id}-events"
    asyncio.run(create_topics(broker.bootstrap, [topic], 4))
    asyncio.run(produce(broker.bootstrap, topic, messages))
    data = tmp / f"{store}-store" / "data"  # (a folder named rocksdb in the cwd would shadow the module)
    data.parent.mkdir(parents=True, exist_ok=True)
    env = {"CHURN_APP_ID": app_id, "CHURN_INPUT_TOPICS": topic, "CHURN_STORE": store, "CHURN_DATA_DIR": str(data),
           "CHURN_CLOCK": "wall", "CHURN_LOG_LEVEL": "warning", "CHURN_SESSION_TIMEOUT_S": "10",
           "CHURN_REBALANCE_TIMEOUT_S": "10"}
    sample = [f"r-{i:08d}" for i in range(0, n, max(n // SAMPLE, 1))]
    first = WorkerProcess(broker.bootstrap, env, tmp / f"{store}-first.log").start(timeout=600)
    try:
        settled = first.wait_consumed(n, timeout=7200)
        before = read_back(first, sample)
    finally:
        first.stop(timeout=300)
    started = time.perf_counter()
    second = WorkerProcess(broker.bootstrap, env, tmp / f"{store}-second.log").start(timeout=3600)
    ready_s = second.ready_at - started
    try:
        again = second.wait_consumed(0, timeout=3600)
        after = read_back(second, sample)
    finally:
        second.stop(timeout=300)
    disk = subprocess.run(["du", "-sb", str(data)], capture_output=True, text=True).stdout.split()
    return {"store": store, "customers": n,
            "rss_settled_bytes": settled[("process_resident_memory_bytes",)],
            "restart_to_ready_s": round(ready_s, 1),
            "rss_after_restart_bytes": again[("process_resident_memory_bytes",)],
            "customers_tracked_after_restart": again[("churn_customers_tracked",)],
            "sample_intact": before == after and all(v[0] for v in after.values()),
            "data_dir_bytes": int(disk[0]) if disk else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--stores", default="memory,rocksdb")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    messages = purchases(args.customers)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="restart-bench-"))
    try:
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            for store in args.stores.split(","):
                result = one_store(store, args.customers, broker, messages, tmp)
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
