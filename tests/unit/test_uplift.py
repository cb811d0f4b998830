"""`uplift` recovers a known effect: a seeded synthetic control group churns more than the
treated customers by a set amount, and the 95% interval holds it."""
from __future__ import annotations

import json
import random

from worker.cli import main
from worker.core.events import Event, format_time
from worker.tools.uplift import Decision, uplift

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01
TREATED_CHURN, HELD_OUT_CHURN = 0.30, 0.42  # the triggers prevent 12 points of churn


def synthetic(customers: int, held_out_share: float, seed: int) -> tuple[list[Event], list[Decision]]:
    rng = random.Random(seed)
    events, decisions = [], []
    for n in range(customers):
        cid, at = f"u-{n}", T0 + rng.uniform(5, 20) * DAY
        held = rng.random() < held_out_share
        kind = rng.choice(("follow_up", "win_back"))
        decisions.append(Decision(cid, kind, at, held))
        events.append(Event(f"{cid}-0", "login", cid, at - rng.uniform(1, 30) * DAY))
        churned = rng.random() < (HELD_OUT_CHURN if held else TREATED_CHURN)
        if not churned:  # back within the 60-day window
            events.append(Event(f"{cid}-1", rng.choice(("login", "purchase")), cid, at + rng.uniform(1, 59) * DAY))
        elif rng.random() < 0.5:  # back only after it
            events.append(Event(f"{cid}-2", "login", cid, at + rng.uniform(61, 120) * DAY))
    events.append(Event("end", "login", "someone-else", T0 + 200 * DAY))  # the history runs to day 200
    return events, decisions


def test_a_known_uplift_is_recovered_within_its_interval():
    events, decisions = synthetic(20_000, 0.2, seed=7)
    result = uplift(events, decisions, 60 * DAY)["scopes"]
    overall = result["overall"]
    low, high = overall["uplift_ci95"]
    assert low < HELD_OUT_CHURN - TREATED_CHURN < high
    assert abs(overall["treated_churn_rate"] - TREATED_CHURN) < 0.015
    assert abs(overall["held_out_churn_rate"] - HELD_OUT_CHURN) < 0.03
    assert 3500 < overall["held_out"] < 4500 and overall["treated"] + overall["held_out"] == 20_000
    assert overall["min_detectable_uplift"] < 0.04 < HELD_OUT_CHURN - TREATED_CHURN
    assert abs(overall["relative_uplift"] - 12 / 42) < 0.06
    for kind in ("follow_up", "win_back"):
        assert result[kind]["uplift_ci95"][0] < 0.12 < result[kind]["uplift_ci95"][1]


def test_no_effect_gives_an_interval_around_zero_and_a_window_past_the_history_is_censored():
    events, decisions = synthetic(8_000, 0.5, seed=11)
    same = [Decision(d.customer_id, d.type, d.at, d.customer_id.endswith(("0", "2", "4", "6", "8")))
            for d in decisions]  # arms that do not follow treatment: no uplift to find
    low, high = uplift(events, same, 60 * DAY)["scopes"]["overall"]["uplift_ci95"]
    assert low < 0 < high
    late = [Decision("u-late", "follow_up", T0 + 190 * DAY, False)]
    assert uplift(events, late, 60 * DAY)["scopes"]["overall"]["censored"] == 1


def test_the_command_reads_history_and_decision_files(tmp_path, capsys):
    events, decisions = synthetic(2_000, 0.3, seed=3)
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps({
        "schema_version": 1, "event_id": e.event_id, "type": e.type, "customer_id": e.customer_id,
        "occurred_at": format_time(e.occurred_at), **({"order_id": "o", "amount": "1", "currency": "EUR"}
                                                        if e.type == "purchase" else {})}) + "\n" for e in events))
    records = tmp_path / "decisions.jsonl"
    records.write_text("".join(json.dumps({"customer_id": d.customer_id, "type": d.type,
                                           "event_time": format_time(d.at), **({"held_out": True} if d.held_out
                                                                               else {})}) + "\n"
                               for d in decisions))
    out = tmp_path / "uplift.json"
    assert main(["uplift", "--events", str(history), "--decisions", str(records), "--window", "60d",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"overall", "follow_up", "win_back"} <= result["scopes"].keys()
    assert {"treated", "held_out", "treated_churn_rate", "held_out_churn_rate", "uplift", "uplift_ci95",
            "relative_uplift", "min_detectable_uplift", "censored"} <= result["scopes"]["overall"].keys()
    assert "overall" in capsys.readouterr().out
