"""The benchmark's steady-state window, read off a worker's metrics (a scripted fake here)."""
from __future__ import annotations

import time

import pytest

from worker.tools.bench import SPAN_DAYS, T0, steady_eps


class ScriptedWorker:
    """Answers /metrics with the next of `consumed` counts; was last seen not ready at `unready_at`."""

    def __init__(self, consumed: list[float], unready_at: float, watermark: float = T0) -> None:
        self.counts, self.unready_at, self.watermark = iter(consumed), unready_at, watermark

    def metrics(self) -> dict:
        done = next(self.counts)
        return {("churn_events_consumed_total", ("outcome", "applied"), ("type", "login")): done,
                ("churn_scoring_batch_size_sum",): 1.5 * done,
                ("churn_event_time_watermark_seconds",): self.watermark}


def test_the_window_runs_between_the_samples_at_the_two_marks():
    out = steady_eps(ScriptedWorker([0, 100, 250, 500, 950, 1000], unready_at=0.0), total=1000)
    assert out["worker_eps"] > 0
    assert out["worker_decisions_per_event"] == pytest.approx(1.5)
    # the marks are the samples at 250 (>= 20%) and 950 (>= 90%) consumed
    stream_time = [T0 + SPAN_DAYS * 86400 * n / 1000 - T0 for n in (250, 950)]
    assert out["worker_watermark_lag_s"] == pytest.approx(stream_time)
    assert out["worker_eps_lower_bound"] is False


def test_a_stream_consumed_before_the_first_sample_is_timed_from_before_readiness():
    """The worker may consume a short stream between the last poll that found it not ready
    and the one that found it ready: the window starts at the former, and the figure is a
    lower bound, said so."""
    unready = time.perf_counter()
    out = steady_eps(ScriptedWorker([1000], unready_at=unready), total=1000)
    assert 0 < out["worker_eps"] < float("inf")
    assert out["worker_decisions_per_event"] == pytest.approx(1.5)
    assert out["worker_watermark_lag_s"][0] is None  # not sampled: the window starts before readiness
    assert out["worker_eps_lower_bound"] is True
