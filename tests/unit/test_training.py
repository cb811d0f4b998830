"""Training and evaluation on the worker's own state code: snapshots without
leakage, labels, calibration folded into the artifact, history readers, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from worker.core.features import features
from worker.model.artifact import contributions, load_artifact, score_batch
from worker.tools.generate import generate, write_jsonl
from worker.tools.history import parse_duration, read_history
from worker.tools.training import build_snapshots, default_cutoffs, fit_calibrated, make_model, parse_date

from .conftest import DAY, ROOT, at, fold, login, purchase

HORIZON = 30 * DAY


def test_snapshot_features_see_only_the_past_and_labels_only_the_horizon():
    a = [purchase(at(d), customer_id="a") for d in (1, 5, 9, 35)]     # buys again inside the horizon
    b = [purchase(at(d), customer_id="b") for d in (2, 6)] + [login(at(25), "b")]  # only logs in after
    c = [purchase(at(20), customer_id="c")]                             # first seen after the cutoff
    events = sorted(a + b + c, key=lambda e: e.occurred_at)
    snaps = build_snapshots(events, [at(10)], HORIZON, "purchase")
    assert len(snaps.y) == 2  # c did not exist at the cutoff
    rows = {tuple(r): y for r, y in zip(snaps.X.tolist(), snaps.y.tolist())}
    assert rows[tuple(features(fold(a[:3]), at(10)))] == 0   # features from days 1, 5, 9 only
    assert rows[tuple(features(fold(b[:2]), at(10)))] == 1   # a login is not a purchase
    by_activity = build_snapshots(events, [at(10)], HORIZON, "activity")
    assert sorted(by_activity.y.tolist()) == [0, 0]


def test_default_cutoffs_are_monthly_and_leave_a_full_horizon():
    cutoffs = default_cutoffs(at(0), at(300), 90 * DAY)
    assert cutoffs[-1] <= at(300) - 90 * DAY and cutoffs[0] >= at(60)
    assert np.allclose(np.diff(cutoffs), 30 * DAY) and all(c % DAY == 0 for c in cutoffs)
    with pytest.raises(ValueError, match="too short"):
        default_cutoffs(at(0), at(100), 90 * DAY)


def synthetic_snapshots():
    from worker.core.events import parse_event

    events = [parse_event(json.dumps(e).encode()) for e in generate(400, 200, seed=5)]
    cutoffs = default_cutoffs(events[0].occurred_at, events[-1].occurred_at, HORIZON)
    return build_snapshots(events, cutoffs, HORIZON, "activity")


def test_calibration_is_folded_into_a_plain_linear_pipeline():
    snaps = synthetic_snapshots()
    model = fit_calibrated(snaps, np.ones(len(snaps.y), bool))
    latest = snaps.cutoff_index == snaps.cutoff_index.max()
    p = model.predict_proba(snaps.X[latest])[:, 1]
    # calibrated on the latest cutoff: mean predicted risk matches the observed churn rate there
    assert abs(p.mean() - snaps.y[latest].mean()) < 0.02
    # still one pipeline whose reasons are exact: contributions + intercept = logit
    uncal = make_model().fit(snaps.X[~latest], snaps.y[~latest])
    assert not np.allclose(uncal.named_steps["classifier"].coef_, model.named_steps["classifier"].coef_)


def test_a_trained_artifact_is_served_unchanged(tmp_path):
    history = tmp_path / "history.jsonl"
    write_jsonl(history, generate(300, 200, seed=3))
    out = tmp_path / "model"
    done = subprocess.run([sys.executable, "-m", "worker", "train", "--events", str(history), "--out", str(out),
                           "--horizon", "30d", "--churn-on", "activity"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    artifact = load_artifact(out)  # the worker's own loader and checks
    card = artifact.card
    assert card["training"]["churn_on"] == "activity" and card["training"]["horizon_days"] == 30
    assert card["metrics"]["out_of_time_test"]["roc_auc"] > 0.7
    rows = synthetic_snapshots().X[:50]
    logit = np.log(score_batch(artifact, rows) / (1 - score_batch(artifact, rows)))
    intercept = artifact.model.named_steps["classifier"].intercept_[0]
    assert np.allclose(contributions(artifact, rows).sum(axis=1) + intercept, logit)


def test_evaluate_writes_the_stable_json_keys_and_a_report(tmp_path):
    history = tmp_path / "history.csv"
    rows = ["cust,date"] + [f"{e['customer_id']},{e['occurred_at'][:10]}" for e in generate(300, 240, seed=4)
                            if e["type"] == "purchase"]
    history.write_text("\n".join(rows) + "\n")
    model, summary, report = tmp_path / "m", tmp_path / "eval.json", tmp_path / "report.html"
    for args in (["train", "--events", str(history), "--out", str(model), "--horizon", "60d",
                  "--train-until", parse_iso(240 - 60)],
                 ["evaluate", "--model", str(model), "--events", str(history), "--json", str(summary),
                  "--report", str(report)]):
        done = subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
    figures = json.loads(summary.read_text())
    for key in ("roc_auc", "pr_auc", "brier", "log_loss", "n_customers", "churn_rate", "lift_top10",
                "capture_top20"):
        assert key in figures
    assert set(figures["baselines"]) == {"recency", "recency_calibrated", "frequency", "bgnbd"}
    assert {"roc_auc", "brier"} <= figures["baselines"]["bgnbd"].keys()
    assert 0.5 < figures["roc_auc"] <= 1 and figures["horizon_days"] == 60
    page = report.read_text()
    assert page.count("<svg") == 3 and "What each threshold would flag" in page


def parse_iso(day: int) -> str:
    from worker.core.events import format_time
    return format_time(parse_date("2026-01-05") + day * DAY)[:10]


def test_csv_history_uses_aliases_defaults_and_midnight(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("cust,date,amount\n7,2006-01-01,12.5\n7,2006-02-01 10:30,\n8,not-a-date,1\n")
    events, refused = read_history([path], progress=False)
    assert [(e.customer_id, e.type, e.amount) for e in events] == [("7", "purchase", 12.5), ("7", "purchase", 0.0)]
    assert events[0].occurred_at == parse_date("2006-01-01") and refused == {"bad_timestamp": 1}
    with pytest.raises(ValueError, match="customer_id"):
        (tmp_path / "bad.csv").write_text("who,date\n1,2006-01-01\n")
        read_history([tmp_path / "bad.csv"], progress=False)


def test_durations():
    assert parse_duration("90d") == 90 * DAY and parse_duration("2w") == 14 * DAY
    assert parse_duration("36h") == 36 * 3600
    with pytest.raises(ValueError):
        parse_duration("ninety days")


def test_train_and_evaluate_take_a_history_from_the_1990s(tmp_path):
    """Offline commands read any real date from 1970 on (the live stream keeps its bounds)."""
    history = tmp_path / "history.csv"
    events = generate(300, 730, seed=6, start="1996-01-01T00:00:00+00:00")
    history.write_text("\n".join(["cust,date"] + [f"{e['customer_id']},{e['occurred_at'][:10]}" for e in events
                                                  if e["type"] == "purchase"]) + "\n")
    model, summary = tmp_path / "m", tmp_path / "eval.json"
    for args in (["train", "--events", str(history), "--out", str(model), "--horizon", "90d",
                  "--train-until", "1997-09-01"],
                 ["evaluate", "--model", str(model), "--events", str(history), "--json", str(summary)]):
        done = subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0 and "invalid rows" not in done.stdout, done.stdout + done.stderr
    figures = json.loads(summary.read_text())
    assert figures["cutoff"].startswith("1997") and 0.5 < figures["roc_auc"] <= 1


def test_the_live_stream_keeps_its_bounds_and_they_move():
    from worker.config import load_settings
    from worker.core.admission import admit
    from worker.shell.handler import admission_rules

    raw = json.dumps({"schema_version": 1, "event_id": "e", "type": "login", "customer_id": "c",
                      "occurred_at": "1997-03-01T10:00:00Z"}).encode()
    msg = type("Msg", (), {"topic": "customer-events", "partition": 0, "key": b"c", "value": raw, "headers": []})()
    refused = admit(msg, admission_rules(load_settings()), wall=2e9)
    assert getattr(refused, "reason", None) == "timestamp_out_of_range"
    moved = admit(msg, admission_rules(load_settings(event_time_min="1990-01-01T00:00:00Z")), wall=2e9)
    assert getattr(moved, "reason", None) != "timestamp_out_of_range"
