"""`python -m worker run` as a child process, watched over its own HTTP endpoints.

The demo, the benchmark and the integration tests all run the real worker this way,
exactly as an operator would start it, and read its progress from /metrics.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from worker.errors import ChurnWorkerError
from worker.harness.broker import free_port, stop_process


def scrape(port: int) -> dict[tuple, float]:
    """Samples of a worker's /metrics as {(name, (label, value)...): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def consumed(samples: dict) -> float:
    """Input messages accounted for (applied, duplicate, late or dead-lettered)."""
    return sum(v for k, v in samples.items()
               if k[0] == "churn_events_consumed_total" and dict(k[1:]).get("outcome") != "repartitioned")


def triggers(samples: dict) -> dict[str, float]:
    return {dict(k[1:])["type"]: v for k, v in samples.items() if k[0] == "churn_triggers_emitted_total"}


class WorkerProcess:
    def __init__(self, bootstrap: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env,
                    "CHURN_KAFKA_BOOTSTRAP": bootstrap, "CHURN_WEB_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.ready_at = 0.0  # time.perf_counter() when /ready was first seen to answer 200

    def start(self, timeout: float = 180.0) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self.env,
                                            cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChurnWorkerError(f"the worker exited with code {self.process.returncode}; "
                                       f"see {self.log_path}:\n{self.log_tail()}")
            if self.get("/ready")[0] == 200:
                self.ready_at = time.perf_counter()
                return self
            time.sleep(0.3)
        raise ChurnWorkerError(f"the worker was not ready within {timeout:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self._started().pid

    def wait(self) -> int:
        """Until the process exits by itself; its exit code."""
        return self._started().wait()

    def _started(self) -> subprocess.Popen:
        if self.process is None:
            raise ChurnWorkerError("the worker process has not been started")
        return self.process

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def get(self, path: str) -> tuple[int, bytes]:
        """(status, body); status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def metrics(self) -> dict:
        return scrape(self.port)

    def consumed(self) -> float:
        return consumed(self.metrics())

    def wait_consumed(self, total: int, settle_s: float = 4.0, timeout: float = 600.0,
                      progress: Any = None) -> dict:
        """Wait until `total` messages are accounted for and neither that count nor the
        trigger counts changed for settle_s (the timer has fired what the stream implies)."""
        last, since = None, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = self.metrics()
            state = (consumed(samples), tuple(sorted(triggers(samples).items())))
            if progress is not None:
                progress.update(int(state[0]) - progress.n)
            if state != last:
                last, since = state, time.monotonic()
            elif state[0] >= total and time.monotonic() - since > settle_s:
                return samples
            time.sleep(0.3)
        raise ChurnWorkerError(f"consumed {last} of {total} messages within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)
