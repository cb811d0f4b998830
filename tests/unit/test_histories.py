"""The evaluation histories have the shapes they are named for: a rhythm, a season, a churn
rate that changes, and they are valid, reproducible purchase logs."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from statistics import median

import pytest

from worker.core.events import Event, parse_event
from worker.tools.histories import SCENARIOS, Scenario, scenario_history

SMALL = {"customers": 600, "days": 730}


def _days(history: list[dict]) -> dict[str, list[float]]:
    """Each customer's purchase times, in days since the first purchase of the log."""
    start = datetime.fromisoformat(history[0]["occurred_at"]).timestamp()
    out: dict[str, list[float]] = defaultdict(list)
    for e in history:
        out[e["customer_id"]].append((datetime.fromisoformat(e["occurred_at"]).timestamp() - start) / 86400)
    return out


def _median_gap(scenario: Scenario) -> float:
    gaps = [b - a for times in _days(scenario_history(scenario)).values() for a, b in zip(times, times[1:])]
    return median(gaps)


def _lapsed_share(buys: dict[str, list[float]], day: float) -> float:
    """Of the customers who bought in the 90 days before `day`, the share with no purchase in the 90 after."""
    recent = [times for times in buys.values() if any(day - 90 <= t < day for t in times)]
    return sum(not any(day <= t < day + 90 for t in times) for times in recent) / len(recent)


def test_same_seed_same_history_and_every_purchase_is_valid():
    scenario = replace(SCENARIOS["weekly"], customers=50, days=120)
    history = scenario_history(scenario, seed=3)
    assert history == scenario_history(scenario, seed=3) != scenario_history(scenario, seed=4)
    assert [e["occurred_at"] for e in history] == sorted(e["occurred_at"] for e in history)
    for raw in history:
        event = parse_event(json.dumps(raw).encode())
        assert isinstance(event, Event) and event.type == "purchase" and event.amount > 0


def test_weekly_and_monthly_buyers_keep_their_rhythm():
    assert 4 < _median_gap(replace(SCENARIOS["weekly"], **SMALL)) < 10
    assert 20 < _median_gap(replace(SCENARIOS["monthly"], **SMALL)) < 45


def test_the_seasonal_history_buys_more_in_its_high_season():
    """Purchases per active customer in November against May (peak and trough of the season)."""
    by_month = defaultdict(int)
    for e in scenario_history(replace(SCENARIOS["seasonal"], customers=800)):
        by_month[e["occurred_at"][:7]] += 1
    assert by_month["2023-11"] > 2 * by_month["2023-05"] and by_month["2024-11"] > 2 * by_month["2024-05"]
    flat = defaultdict(int)
    for e in scenario_history(replace(SCENARIOS["seasonal"], customers=800, season=0.0)):
        flat[e["occurred_at"][:7]] += 1
    assert flat["2024-11"] == pytest.approx(flat["2024-05"], rel=0.2)


def test_the_churn_rate_rises_where_the_scenario_says_so():
    """Against the same customers leaving at a steady rate (whose lapsed share also moves a
    little: no one joins in the last fifth), the rising hazard lapses more of them late."""
    rising = _days(scenario_history(replace(SCENARIOS["rising-churn"], customers=2000)))
    steady = _days(scenario_history(replace(SCENARIOS["rising-churn"], customers=2000, churn_from=0.35,
                                            churn_to=0.35)))
    rise = _lapsed_share(rising, 720) - _lapsed_share(rising, 270)
    assert rise > 0.05 and rise > _lapsed_share(steady, 720) - _lapsed_share(steady, 270) + 0.02
