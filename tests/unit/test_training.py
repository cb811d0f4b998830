"""Training and evaluation on the worker's own state code: snapshots without
leakage, labels, value features fitted on the past only, calibration folded into the
artifact, the worker scoring what training computed, history readers, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from worker.core.events import format_time
from worker.core.features import FEATURE_NAMES, features
from worker.core.value import UNFITTED_ODDS, VALUE_FEATURE_NAMES, value_features
from worker.model.artifact import contributions, load_artifact, score_batch
from worker.tools.generate import generate, write_jsonl
from worker.tools.history import parse_duration, read_history
from worker.tools.training import (
    build_snapshots,
    default_cutoffs,
    fit_calibrated,
    fit_model,
    make_model,
    parse_date,
    with_value_features,
)
from worker.tools.value_fit import fit_value

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


def synthetic_events():
    from worker.core.events import parse_event

    return [parse_event(json.dumps(e).encode()) for e in generate(400, 200, seed=5)]


def synthetic_snapshots():
    events = synthetic_events()
    cutoffs = default_cutoffs(events[0].occurred_at, events[-1].occurred_at, HORIZON)
    return build_snapshots(events, cutoffs, HORIZON, "activity")


def test_value_features_come_from_a_value_model_fitted_before_each_cutoff():
    """No leakage through the value model: each cutoff's value features are computed with
    parameters fitted on the purchases before that cutoff, none at a cutoff less than one
    horizon after the first purchase (too early to tell leaving from a long gap)."""
    events = synthetic_events()
    cutoffs = [events[0].occurred_at + d * DAY for d in (20, 90, 150)]
    snaps = build_snapshots(events, cutoffs, HORIZON, "purchase")
    extended = with_value_features(snaps, events, 60 * DAY)
    assert extended.X.shape == (len(snaps.y), len(FEATURE_NAMES) + len(VALUE_FEATURE_NAMES))
    np.testing.assert_array_equal(extended.X[:, :len(FEATURE_NAMES)], snaps.X)
    for k, cutoff in enumerate(cutoffs):
        rows = snaps.cutoff_index == k
        past = [e for e in events if e.occurred_at < cutoff]
        expected = value_features(snaps.X[rows], fit_value(past, cutoff) if k else None, 60.0)
        np.testing.assert_array_equal(extended.X[rows, len(FEATURE_NAMES):], expected)
    assert (extended.X[snaps.cutoff_index == 0, len(FEATURE_NAMES):] == UNFITTED_ODDS).all()


def test_a_feature_that_barely_varied_in_training_cannot_blow_up_a_score():
    """A column all but constant in training (a value feature while the value model saw
    nobody leave) is scaled by MIN_SCALE, not its own tiny spread: when it does vary in
    service, the score moves a little rather than to 0 or 1."""
    rng = np.random.default_rng(0)
    signal = rng.normal(size=2000)
    y = (signal + rng.normal(size=2000) > 0).astype(int)
    flat = 1e-9 * rng.random(2000) * y  # constant for every purpose, and (spuriously) tied to the label
    model = fit_model(np.column_stack([np.exp(signal), flat]), y, shaped=None)
    p = model.predict_proba(np.array([[1.0, 0.0], [1.0, 50.0]]))[:, 1]
    assert abs(p[1] - p[0]) < 0.2, p


def test_pooled_fit_matches_the_churn_rate_over_all_cutoffs():
    snaps = synthetic_snapshots()
    model = fit_calibrated(snaps, np.ones(len(snaps.y), bool), calibration="pooled")
    assert model.predict_proba(snaps.X)[:, 1].mean() == pytest.approx(snaps.y.mean(), abs=0.005)


def test_calibration_is_folded_into_a_plain_linear_pipeline():
    snaps = synthetic_snapshots()
    model = fit_calibrated(snaps, np.ones(len(snaps.y), bool), calibration="platt-latest")
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
    assert artifact.feature_names == (*FEATURE_NAMES, *VALUE_FEATURE_NAMES) and "value_features" in card["training"]
    rows = synthetic_snapshots().X[:50]
    logit = np.log(score_batch(artifact, rows) / (1 - score_batch(artifact, rows)))
    intercept = artifact.model.named_steps["classifier"].intercept_[0]
    assert np.allclose(contributions(artifact, rows).sum(axis=1) + intercept, logit)


def test_without_value_features_the_card_lists_the_workers_features_alone(tmp_path):
    history = tmp_path / "history.jsonl"
    write_jsonl(history, generate(200, 150, seed=3))
    done = subprocess.run([sys.executable, "-m", "worker", "train", "--events", str(history), "--out",
                           str(tmp_path / "m"), "--no-value-features", "--calibration", "platt-latest"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    card = load_artifact(tmp_path / "m").card
    assert card["feature_names"] == list(FEATURE_NAMES) and "Platt" in card["training"]["calibration"]


def test_the_worker_scores_what_training_computes(artifact, policy):
    """No training/serving skew with the value features: every trigger the worker's pipeline
    sends over a replayed history carries the feature row, score and reason values that
    training computes for that customer at that time with the same model (the integration
    test compares what a running worker serves)."""
    from worker.tools.simulate import replay

    events = sorted(synthetic_events(), key=lambda e: (e.occurred_at, e.event_id))
    triggers = replay(events, artifact, policy, events[-1].occurred_at)["triggers"][::7][:40]
    assert len(triggers) == 40 and any(t["top_reasons"] for t in triggers)
    same = {"rel": 1e-6, "abs": 2e-4}  # event_time is to the second, a silence deadline finer
    for t in triggers:
        mine = [e for e in events if e.customer_id == t["customer_id"]]
        snaps = build_snapshots(mine, [parse_date(t["event_time"])], HORIZON)
        assert list(t["state"].values()) == pytest.approx(snaps.X[0].tolist(), **same)
        assert t["risk_score"] == pytest.approx(float(score_batch(artifact, snaps.X)[0]), **same)
        row = dict(zip(artifact.feature_names, artifact.model_rows(snaps.X)[0]))
        assert [r["value"] for r in t["top_reasons"]] == pytest.approx(
            [row[r["feature"]] for r in t["top_reasons"]], **same)


def test_evaluate_writes_the_stable_json_keys_and_a_report(tmp_path):
    history = tmp_path / "history.csv"
    rows = ["cust,date"] + [f"{e['customer_id']},{e['occurred_at'][:10]}" for e in generate(300, 240, seed=4)
                            if e["type"] == "purchase"]
    history.write_text("\n".join(rows) + "\n")
    model, summary, report = tmp_path / "m", tmp_path / "eval.json", tmp_path / "report.html"
    for args in (["train", "--events", str(history), "--out", str(model), "--horizon", "60d",
                  "--train-until", parse_iso(240 - 60)],
                 ["evaluate", "--model", str(model), "--events", str(history), "--json", str(summary),
                  "--report", str(report), "--bootstrap", "50"]):
        done = subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
    figures = json.loads(summary.read_text())
    for key in ("roc_auc", "pr_auc", "brier", "log_loss", "n_customers", "churn_rate", "lift_top10",
                "capture_top20"):
        assert key in figures
    assert set(figures["baselines"]) == {"recency", "recency_calibrated", "frequency", "bgnbd", "rfm"}
    for name in ("bgnbd", "rfm"):
        assert {"roc_auc", "brier"} <= figures["baselines"][name].keys()
        assert figures["differences"][name].keys() == {"roc_auc", "brier"}
    assert figures["differences"]["frequency"].keys() == {"roc_auc"}  # a ranking, not a probability
    assert 0.5 < figures["roc_auc"] <= 1 and figures["horizon_days"] == 60
    page = report.read_text()
    assert page.count("<svg") == 3 and "What each threshold would flag" in page


def test_the_rfm_baseline_is_fitted_out_of_time():
    """The RFM logistic regression learns from snapshots whose horizon ends by the test
    cutoff: no event on or after the test cutoff, and no card cutoff closer to it than a
    horizon, changes its scores; a fit on the remaining cutoffs alone gives the same."""
    from worker.tools.training import out_of_time_baselines, rfm_scores

    events = synthetic_events()
    test = events[0].occurred_at // DAY * DAY + 150 * DAY
    snaps = build_snapshots(events, [test], HORIZON, "purchase")
    usable = [test - k * HORIZON for k in (3, 2, 1)]
    card = {"cutoffs": [format_time(c) for c in (*usable, test - HORIZON / 2)]}
    rfm = out_of_time_baselines(events, snaps, test, HORIZON, "purchase", card)["rfm"]
    before_test = [e for e in events if e.occurred_at < test]
    np.testing.assert_array_equal(out_of_time_baselines(before_test, snaps, test, HORIZON, "purchase", card)["rfm"],
                                  rfm)
    past = build_snapshots(before_test, usable, HORIZON, "purchase")
    np.testing.assert_allclose(rfm, rfm_scores(past.X, past.y, snaps.X), rtol=0, atol=1e-12)
    assert 0.6 < roc_auc_score(snaps.y, rfm) and np.all((rfm > 0) & (rfm < 1))


def test_bootstrap_intervals_of_the_model_minus_a_baseline():
    from worker.tools.evaluation import bootstrap_differences

    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.3).astype(int)
    sharp, blunt = np.where(y == 1, 0.8, 0.1), rng.random(600)  # a good model, a guess
    gaps = bootstrap_differences(y, sharp, {"guess": blunt, "bgnbd": blunt, "itself": sharp}, 200)
    assert gaps["guess"].keys() == {"roc_auc"} and gaps["bgnbd"].keys() == {"roc_auc", "brier"}
    low, high = gaps["bgnbd"]["roc_auc"]
    assert 0.3 < low < high and gaps["bgnbd"]["brier"][1] < -0.1
    assert gaps["itself"] == {"roc_auc": [0.0, 0.0]}


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
