"""Whether a ready worker still makes progress, for /health (the liveness probe).

A worker that holds partitions with records left to read and has consumed nothing for
CHURN_STALL_S is stalled: its consumer loop is stuck ("consumers slowly die", faust #175),
and a restart hands its partitions over. Not while it is unready (joining, rebalancing,
recovering its tables, cut off from the broker): a restart does not help there, and
/ready already says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s, self.clock = stall_s, clock
        self.last = clock()

    def consumed(self) -> None:
        """A batch was handled (or partitions were just assigned: a fresh start)."""
        self.last = self.clock()

    def stalled(self, ready: bool, unread: int) -> str:
        """Why the worker is stalled ('' when it is not)."""
        idle = self.clock() - self.last
        if ready and unread > 0 and idle > self.stall_s:
            return f"{unread} records left to read on its partitions and nothing consumed for {idle:.0f} s"
        return ""
