"""`python -m worker run` as a child process, watched over its own HTTP endpoints.

The demo, the benchmark and the integration tests all run the real worker this way,
exactly as an operator would start it, and read its progress from /metrics.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from worker.config import Settings, load_settings
from worker.errors import ChurnWorkerError
from worker.harness.broker import free_port, stop_process
from worker.harness.conditions import overdue_silence, ticks_sent, uncommitted
from worker.kafka_security import kafka_auth

POLL_S = 0.3  # between two checks of a condition


def wait_until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    """Check `predicate` every POLL_S until it holds; an AssertionError naming `what` when it
    has not held within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(POLL_S)


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
               if k[0] == "churn_events_consumed_total")


class WorkerProcess:
    def __init__(self, bootstrap: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.bootstrap = bootstrap
        self.env = {**os.environ, **env,
                    "CHURN_KAFKA_BOOTSTRAP": bootstrap, "CHURN_WEB_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.ready_at = 0.0  # time.perf_counter() when /ready was first seen to answer 200
        self.unready_at = 0.0  # ... and when it was last seen not to: the worker became ready in between

    def start(self, timeout: float = 180.0) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self.env,
                                            cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ChurnWorkerError(f"the worker exited with code {self.process.returncode}; "
                                       f"see {self.log_path}:\n{self.log_tail()}")
            polled = time.perf_counter()
            if self.get("/ready")[0] == 200:
                self.ready_at = time.perf_counter()
                return self
            self.unready_at = polled
            time.sleep(POLL_S)
        raise ChurnWorkerError(f"the worker was not ready within {timeout:.0f} s; see {self.log_path}")

    @cached_property
    def settings(self) -> Settings:
        """The worker's settings, as it reads them from its environment."""
        return load_settings(**{k[len("CHURN_"):].lower(): v for k, v in self.env.items()
                                if k.startswith("CHURN_")})

    @cached_property
    def kafka_options(self) -> dict[str, Any]:
        """TLS and SASL options for the harness's own clients, as the worker's settings say."""
        return kafka_auth(self.settings).options

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

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 when nothing answers. With no `headers`, the worker's own
        CHURN_HTTP_TOKEN (if it has one) goes along as the bearer token."""
        if headers is None:
            token = self.env.get("CHURN_HTTP_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def metrics(self) -> dict:
        return scrape(self.port)

    def consumed(self) -> float:
        return consumed(self.metrics())

    def wait_consumed(self, total: int, timeout: float = 600.0, progress: Any = None) -> dict:
        """Wait until `total` input messages are accounted for and the worker has settled (see
        `wait_settled`); its metric samples then."""
        return wait_settled([self], total, timeout, progress)[0]

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)


def wait_settled(workers: Sequence[WorkerProcess], total: int = 0, timeout: float = 600.0,
                 progress: Any = None) -> list[dict]:
    """Wait until the workers of one group have done everything their input implies; then
    their metric samples, in order. Settled means, in this order of observation:
    1. the group has committed every message on its input and repartition topics (committed
       offsets read before each partition's end), so every event, forwarded event and tick
       appended so far has been handled, its triggers and state written;
    2. then, from each worker's metrics: at least `total` input messages are accounted for,
       the worker is ready (not rebalancing), no silence deadline is due by its clock, and
       its timer sent no tick since before (1) (a tick sent meanwhile is a message (1) did
       not see). Nothing is left that could emit anything.
    Polls until then; raises ChurnWorkerError saying what was still missing at `timeout`."""
    deadline = time.monotonic() + timeout
    missing = "nothing checked yet"
    while time.monotonic() < deadline:
        before = [w.metrics() for w in workers]
        done = sum(consumed(s) for s in before)
        if progress is not None:
            progress.update(int(done) - progress.n)
        missing = f"consumed {done:.0f} of {total} messages" if done < total else _uncommitted(workers)
        if not missing:
            after = [w.metrics() for w in workers]
            missing = _unsettled(workers, before, after, total)
            if not missing:
                return after
        time.sleep(POLL_S)
    raise ChurnWorkerError(f"the workers did not settle within {timeout:.0f} s: {missing}")


def _uncommitted(workers: Sequence[WorkerProcess]) -> str:
    settings = workers[0].settings
    left = asyncio.run(uncommitted(workers[0].bootstrap, settings.app_id,
                                   [*settings.input_topics, settings.repartition_topic], workers[0].kafka_options))
    return "; ".join(left)


def _unsettled(workers: Sequence[WorkerProcess], before: list[dict], after: list[dict], total: int) -> str:
    """What keeps the workers, whose offsets are committed, from being settled ('' if nothing)."""
    done = sum(consumed(s) for s in after)
    if done < total:
        return f"consumed {done:.0f} of {total} messages"
    for worker, old, new in zip(workers, before, after):
        if worker.get("/ready")[0] != 200:
            return f"the worker on port {worker.port} is not ready"
        if (overdue := overdue_silence(new, worker.settings.clock)) is not None:
            return f"the worker on port {worker.port}: {overdue}"
        if ticks_sent(new) != ticks_sent(old):
            return f"the worker on port {worker.port} sent silence ticks while its offsets were checked"
    return ""
