"""`policy simulate` on the real grocery purchase history (../shared/data/grocery): a lower
follow-up threshold sends more follow-ups and reaches more churners before they stop; the
JSON carries the documented keys and the report draws both policies."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from worker.cli import main

ROOT = Path(__file__).resolve().parents[2]
GROCERY = ROOT.parent / "shared" / "data" / "grocery" / "groceryElog.csv"
DEFAULT = (ROOT / "worker" / "default_policy.toml").read_text()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    if not GROCERY.exists():
        pytest.fail(f"{GROCERY} is missing: ../shared/data must sit beside the project")
    tmp = tmp_path_factory.mktemp("simulate")
    lower = tmp / "lower.toml"
    lower.write_text(DEFAULT.replace('version = "2026.11-1"', 'version = "lower-follow-up"')
                     .replace("follow_up_threshold = 0.6 ", "follow_up_threshold = 0.2 "))
    out, report = tmp / "sim.json", tmp / "sim.html"
    assert main(["policy", "simulate", "--events", str(GROCERY), "--policy", str(lower),
                 "--against", str(ROOT / "worker" / "default_policy.toml"), "--horizon", "90d",
                 "--json", str(out), "--report", str(report)]) == 0
    return json.loads(out.read_text()), report.read_text()


def test_a_lower_follow_up_threshold_sends_more_follow_ups_and_reaches_more_churners(simulated):
    """Far lower (0.2 against 0.6): a small cut can reach a few churners fewer, since an
    earlier follow-up puts a later one, the one inside the horizon before they stop, in
    cooldown (0.4 reaches 3 of 1,238 fewer with the shipped model)."""
    figures, _ = simulated
    lower, current = figures["policies"]["lower-follow-up"], figures["policies"]["2026.11-1"]
    assert lower["triggers"]["follow_up"] > current["triggers"]["follow_up"]
    assert lower["recall"] > current["recall"]
    for p in (lower, current):
        assert {"triggers", "customers_reached", "precision", "recall", "median_warning_days", "held_out",
                "triggers_by_week", "triggers_by_segment", "suppressed", "churners"} <= p.keys()
        assert 0 < p["precision"] <= 1 and p["churners"] > 100


def test_the_report_draws_both_policies(simulated):
    _, report = simulated
    HTMLParser().feed(report)  # parses
    assert report.count("<svg") == 2 and len(re.findall(r"<polyline", report)) == 2
    assert "lower-follow-up" in report and "2026.11-1" in report


def test_customers_split_over_processes_get_the_same_decisions(artifact, policy):
    from worker.core.events import parse_valid
    from worker.tools.generate import generate
    from worker.tools.simulate import replay, replay_sharded

    events = sorted((parse_valid(json.dumps(e).encode()) for e in generate(customers=80, days=120, seed=4)),
                    key=lambda e: (e.occurred_at, e.event_id))
    end = events[-1].occurred_at
    one, two = replay(events, artifact, policy, end), replay_sharded(events, artifact, policy, end, 2, min_events=0)
    assert sorted(t["trigger_id"] for t in one["triggers"]) == sorted(t["trigger_id"] for t in two["triggers"])
    assert len(one["triggers"]) > 20 and one["suppressed"] == two["suppressed"]
