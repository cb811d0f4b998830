"""The benchmark must keep working; CI runs it small. Figures are reported, never asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("raw_eps", "faust_bare_eps", "naive_eps", "worker_eps", "core_eps", "broker_fetch_p50_s_wait_1500ms",
        "produce_ack_p50_s", "worker_decisions_per_event",
        "latency_p50_s", "latency_p95_s", "latency_p99_s", "resident_bytes_per_customer", "state_bytes",
        "tick_none_due_s", "tick_1000_due_s", "train_seconds")


def test_quick_bench_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "worker", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in KEYS:
        assert figures[key] > 0, key
    assert set(figures["ratios"]) == {"worker_over_raw", "worker_over_faust_bare", "worker_over_naive"}
    assert "worker as shipped" in done.stdout
