"""/health's stall rule: a ready worker with records to read that consumes nothing for
CHURN_STALL_S is stalled; an unready one (rebalancing, recovering, cut off) never is."""
from __future__ import annotations

from worker.shell.liveness import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_ready_worker_with_records_left_that_consumes_nothing_is_stalled():
    clock = Clock()
    progress = Progress(300, clock)
    clock.now += 299
    assert progress.stalled(True, 50) == ""
    clock.now += 2
    assert "50 records left" in progress.stalled(True, 50)
    progress.consumed()
    assert progress.stalled(True, 50) == ""


def test_nothing_to_read_or_not_ready_is_not_a_stall():
    clock = Clock()
    progress = Progress(300, clock)
    clock.now += 3600
    assert progress.stalled(True, 0) == ""  # idle input: nothing to consume
    assert progress.stalled(False, 10_000) == ""  # recovering or cut off: /ready says so
