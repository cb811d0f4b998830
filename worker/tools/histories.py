"""Purchase histories of a known shape, for checking the model against its baselines away
from one real file (`churn-worker generate --scenario NAME`).

Each scenario is a purchase log (no logins, no tickets, like a shop's order export) over
about two and a half years, customers joining throughout. A customer buys as a renewal
process: one jittered gap after the last (lognormal, `jitter` its sigma: 0.3 is a steady
habit, 1 is nearly random), measured in busy time that runs faster in the high season
(`season`: the purchase rate swings by that fraction over the year, peaking in late
November). Customers leave at a hazard per year that moves linearly from `churn_from` on
the first day to `churn_to` on the last, so the churn rate changes under the model's feet;
in the `decline_days` before leaving their gaps stretch (up to 4x). After that nothing.

These are not BG/NBD's own assumptions (its purchases are Poisson and leaving happens only
right after a purchase), nor the model's: both are checked against a third process.
"""
from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.core.events import format_time

DAY = 86400


@dataclass(frozen=True)
class Scenario:
    gap_days: tuple[float, float]  # each customer's mean gap, drawn log-uniformly in this range
    jitter: float = 0.4
    season: float = 0.0
    churn_from: float = 0.3        # hazard of leaving, per year, on the first day...
    churn_to: float = 0.3          # ...and on the last
    decline_days: int = 30
    days: int = 900
    customers: int = 2000
    start: str = "2023-01-02"


SCENARIOS = {
    "weekly": Scenario(gap_days=(4, 10), jitter=0.6, churn_from=0.35, churn_to=0.35),
    "monthly": Scenario(gap_days=(20, 45), jitter=0.6, churn_from=0.25, churn_to=0.25),
    "seasonal": Scenario(gap_days=(7, 60), jitter=0.8, season=0.6),
    "rising-churn": Scenario(gap_days=(7, 60), jitter=0.8, churn_from=0.1, churn_to=0.6),
    "irregular": Scenario(gap_days=(5, 90), jitter=1.0, decline_days=0, churn_from=0.4, churn_to=0.4),
}
PEAK_DAY_OF_YEAR = 330  # late November


def _busy_time(scenario: Scenario, origin: datetime) -> list[float]:
    """Cumulative busy time at the start of each day: days, faster in the high season."""
    out, total = [0.0], 0.0
    for day in range(scenario.days):
        year_day = (origin.timetuple().tm_yday + day) % 365.25
        total += 1 + scenario.season * math.cos(2 * math.pi * (year_day - PEAK_DAY_OF_YEAR) / 365.25)
        out.append(total)
    return out


def _leaving_day(rng: random.Random, scenario: Scenario, joined: int) -> int:
    """The day the customer leaves (scenario.days: stays), from the changing hazard."""
    budget, day = rng.expovariate(1.0), joined
    while day < scenario.days:
        share = day / scenario.days
        budget -= (scenario.churn_from + (scenario.churn_to - scenario.churn_from) * share) / 365.0
        if budget <= 0:
            return day
        day += 1
    return scenario.days


def _purchase_days(rng: random.Random, scenario: Scenario, busy: list[float], joined: int, left: int) -> list[float]:
    """Purchase times (in days) of one customer: a renewal process in busy time, slower before leaving."""
    gap = math.exp(rng.uniform(*(math.log(g) for g in scenario.gap_days)))
    decline_from = left - scenario.decline_days if left < scenario.days else scenario.days
    out, t = [], busy[joined] + rng.random() * gap
    while (day := bisect.bisect_right(busy, t) - 1) < left:
        out.append(day + rng.random())
        slowdown = 1 + 3 * max(0.0, (day - decline_from) / max(scenario.decline_days, 1))
        t += gap * slowdown * rng.lognormvariate(-scenario.jitter ** 2 / 2, scenario.jitter)
    return out


def scenario_history(scenario: Scenario, seed: int = 7) -> list[dict]:
    """All purchases as wire-form events (schema v1), in time order, deterministic for the seed."""
    rng = random.Random(seed)
    origin = datetime.fromisoformat(scenario.start).replace(tzinfo=UTC)
    busy = _busy_time(scenario, origin)
    rows = []
    for number in range(1, scenario.customers + 1):
        joined = 0 if rng.random() < 0.4 else rng.randrange(int(scenario.days * 0.8))
        left = _leaving_day(rng, scenario, joined)
        basket = 30 * rng.lognormvariate(0, 0.5)
        for n, t in enumerate(_purchase_days(rng, scenario, busy, joined, left)):
            rows.append((round(t * DAY), f"c-{number:06d}", f"o-{number:06d}-{n:04d}",
                         round(basket * rng.lognormvariate(0, 0.3), 2)))
    rows.sort()
    base = origin.timestamp()
    return [{"schema_version": 1, "event_id": f"p-{seed}-{n}", "type": "purchase", "customer_id": cid,
             "occurred_at": format_time(base + sec), "order_id": order, "amount": amount, "currency": "EUR"}
            for n, (sec, cid, order, amount) in enumerate(rows)]
