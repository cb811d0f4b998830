"""Training: replay history through the worker's own `apply_event`/`features`.

Snapshots are taken at cutoff dates; a snapshot is labelled churned when the
customer has no qualifying event (activity or purchase) within the horizon
after the cutoff. Only customers seen before a cutoff count at that cutoff, and
features see nothing after it, so the future cannot leak into a snapshot. The
value features (worker.core.value.value_features) of a snapshot come from a value
model fitted on the purchases before its cutoff, for the same reason.
"""
from __future__ import annotations

import bisect
import json
import platform
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

from worker.core.events import Event, format_time
from worker.core.features import FEATURE_NAMES, features
from worker.core.state import DAY, EMPTY, CustomerState, apply_event
from worker.core.value import VALUE_FEATURE_NAMES, value_features
from worker.model.artifact import CARD_FILE, MODEL_FILE
from worker.tools.evaluation import (
    ORDERS,
    RECENCY,
    baseline_scores,
    bootstrap_differences,
    curves,
    evaluate,
    probability_metrics,
    threshold_table,
)


@dataclass
class Snapshots:
    X: np.ndarray
    y: np.ndarray
    cutoff_index: np.ndarray  # which cutoff each row belongs to
    cutoffs: list[float]
    customers: list[str] = field(default_factory=list)  # whose each row is


def qualifies(event: Event, churn_on: str) -> bool:
    return event.type == "purchase" if churn_on == "purchase" else event.type in ("login", "purchase")


def build_snapshots(events: Iterable[Event], cutoffs: Sequence[float], horizon_s: float,
                    churn_on: str = "activity") -> Snapshots:
    """One pass over time-ordered events; features at each cutoff, labels from what followed."""
    cutoffs = sorted(cutoffs)
    states: dict[str, CustomerState] = {}
    future: dict[str, list[float]] = defaultdict(list)
    rows: list[tuple[str, int, list[float]]] = []
    next_cut = 0
    for event in events:
        while next_cut < len(cutoffs) and event.occurred_at > cutoffs[next_cut]:
            rows += _snapshot(states, cutoffs[next_cut], next_cut)
            next_cut += 1
        states[event.customer_id] = apply_event(states.get(event.customer_id, EMPTY), event)
        if qualifies(event, churn_on):
            future[event.customer_id].append(event.occurred_at)
    while next_cut < len(cutoffs):
        rows += _snapshot(states, cutoffs[next_cut], next_cut)
        next_cut += 1
    labels = [_churned(sorted(future[cid]), cutoffs[k], horizon_s) for cid, k, _ in rows]
    return Snapshots(
        X=np.array([r for _, _, r in rows], dtype=float).reshape(len(rows), len(FEATURE_NAMES)),
        y=np.array(labels, dtype=int),
        cutoff_index=np.array([k for _, k, _ in rows], dtype=int),
        cutoffs=list(cutoffs),
        customers=[cid for cid, _, _ in rows],
    )


def _snapshot(states: dict[str, CustomerState], cutoff: float, k: int) -> list:
    return [(cid, k, features(s, cutoff)) for cid, s in states.items() if s.first_seen <= cutoff]


def _churned(times: list[float], cutoff: float, horizon_s: float) -> int:
    i = bisect.bisect_right(times, cutoff)
    return int(not (i < len(times) and times[i] <= cutoff + horizon_s))


def with_value_features(snaps: Snapshots, events: Sequence[Event], horizon_s: float) -> Snapshots:
    """The snapshots with the value features appended, each cutoff's computed with a value
    model fitted on the purchases before that cutoff (as the worker would have had it).

    A cutoff less than one horizon after the first purchase gets no value model (the
    features say "no opinion"): before customers have had a horizon's time to lapse, BG/NBD
    cannot tell leaving from a long gap and fits a degenerate model (on the grocery log,
    after two months, nobody ever leaves), which the logistic regression would then learn
    from as if it were informative."""
    from worker.tools.value_fit import fit_value

    first = next((e.occurred_at for e in events if e.type == "purchase"), float("inf"))
    extra = np.empty((len(snaps.y), len(VALUE_FEATURE_NAMES)))
    for k, cutoff in enumerate(snaps.cutoffs):
        rows = snaps.cutoff_index == k
        params = fit_value(events, cutoff) if cutoff - first >= horizon_s else None
        extra[rows] = value_features(snaps.X[rows], params, horizon_s / DAY)
    return Snapshots(np.hstack([snaps.X, extra]), snaps.y, snaps.cutoff_index, snaps.cutoffs, snaps.customers)


SPLINE_KNOTS = 5  # the spline on RECENCY, days since the last purchase


def make_model(C: float = 1.0, shaped: int | None = RECENCY) -> Pipeline:
    """log1p tames the long tails (days, revenue) and the scaler puts every column on one
    scale; a cubic spline then lets the `shaped` column (days since the last purchase) bend,
    the rest stay linear. An additive model: each feature's term is its own, so reasons stay
    exact (artifact.linear_contributions)."""
    steps = [("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
             ("scale", StandardScaler())]
    if shaped is not None:
        spline = Pipeline([("spline", SplineTransformer(n_knots=SPLINE_KNOTS, degree=3)),
                           ("centre", StandardScaler(with_std=False))])
        steps.append(("shape", ColumnTransformer([("recency_spline", spline, [shaped])], remainder="passthrough")))
    return Pipeline([*steps, ("classifier", LogisticRegression(C=C, max_iter=3000))])


# A feature that barely varied in training (spread under this, in log1p units) is scaled by
# this rather than by its own spread. Otherwise a column that was all but constant (a value
# feature while the value model saw nobody leave yet) is blown up a millionfold when it
# does vary in service, and one customer's score with it.
MIN_SCALE = 0.01


def fit_model(X: np.ndarray, y: np.ndarray, C: float = 1.0, shaped: int | None = RECENCY) -> Pipeline:
    """make_model(C, shaped) fitted on (X, y): the scaler's spread floored at MIN_SCALE, and
    the spline's terms centred on the training average (scaled 0), where every feature's
    contribution is zero."""
    model = make_model(C, shaped)
    model[:-1].fit(X)
    scaler = model.named_steps["scale"]
    scaler.scale_ = np.maximum(scaler.scale_, MIN_SCALE)
    if shaped is not None:
        spline = model.named_steps["shape"].named_transformers_["recency_spline"]
        spline.named_steps["centre"].mean_ = spline.named_steps["spline"].transform(np.zeros((1, 1)))[0]
    model.named_steps["classifier"].fit(model[:-1].transform(X), y)
    return model


RFM = [RECENCY, ORDERS, FEATURE_NAMES.index("avg_order_value")]


def rfm_scores(train_X: np.ndarray, train_y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The textbook model: the churn model's own linear pipeline (no spline) on recency,
    frequency and monetary value alone (days since the last purchase, orders, average order
    value), fitted on `train_X` (snapshots before the test, out of time) and scoring `X`."""
    return fit_model(train_X[:, RFM], train_y, shaped=None).predict_proba(X[:, RFM])[:, 1]


CALIBRATIONS = {
    "pooled": "none beyond the logistic regression itself, fitted on every cutoff at once",
    "platt-latest": "Platt scaling on the latest cutoff, folded into the coefficients",
}


def fit_calibrated(snaps: Snapshots, rows: np.ndarray, C: float = 1.0, calibration: str = "pooled") -> Pipeline:
    """Fit on the selected rows: "pooled", one logistic regression over all their cutoffs;
    "platt-latest", fit on their earlier cutoffs and Platt-calibrate on the latest.

    Pooling averages the churn rate over the seasons the cutoffs cover; Platt on the latest
    cutoff follows a drifting rate but also the season that cutoff happened to fall in (on
    the grocery log and the seasonal generated history it calibrates worse, see
    docs/training.md). The calibration (p = sigmoid(a * logit + b)) is folded into the
    logistic regression's coefficients, so the artifact stays one plain pipeline whose
    reasons remain exact contributions to the log-odds.
    """
    index = snaps.cutoff_index[rows]
    X, y = snaps.X[rows], snaps.y[rows]
    if calibration == "pooled":
        return fit_model(X, y, C)
    latest = index.max()
    fit = index < latest if len(set(index)) > 1 else np.ones(len(y), bool)
    model = fit_model(X[fit], y[fit], C)
    logit = model.decision_function(X[index == latest])
    platt = LogisticRegression(C=1e6).fit(logit[:, None], y[index == latest])
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    classifier = model.named_steps["classifier"]
    classifier.coef_ = classifier.coef_ * a
    classifier.intercept_ = classifier.intercept_ * a + b
    return model


def train_out_of_time(snaps: Snapshots, C: float = 1.0, calibration: str = "pooled") -> tuple[Pipeline, dict]:
    """Out-of-time: fit on every cutoff but the latest and test on the latest (the
    figures reported); the served model is then fit the same way on all cutoffs."""
    last = len(snaps.cutoffs) - 1
    test = snaps.cutoff_index == last
    held = fit_calibrated(snaps, ~test, C, calibration)
    figures = evaluate(snaps.X[test], snaps.y[test], held.predict_proba(snaps.X[test])[:, 1])
    figures["cutoff"] = format_time(snaps.cutoffs[last])
    return fit_calibrated(snaps, np.ones(len(snaps.y), bool), C, calibration), figures


def write_artifact(out_dir: Path, model: Pipeline, *, version: str, snaps: Snapshots,
                   horizon_s: float, churn_on: str, metrics: dict, source: str, value: Any = None,
                   calibration: str = "pooled") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out_dir / MODEL_FILE)
    with_value = snaps.X.shape[1] > len(FEATURE_NAMES)
    card: dict[str, Any] = {
        "model_version": version,
        "kind": "logistic_regression",
        "feature_names": [*FEATURE_NAMES, *(VALUE_FEATURE_NAMES if with_value else ())],
        "library_versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                             "python": platform.python_version()},
        "training": {
            "source": source,
            "cutoffs": [format_time(c) for c in snaps.cutoffs],
            "horizon_days": horizon_s / DAY,
            "churn_on": churn_on,
            "label": f"churned = no {churn_on} in the {horizon_s / DAY:g} days after the cutoff",
            "calibration": CALIBRATIONS[calibration],
            "rows": int(len(snaps.y)),
            "churn_rate": round(float(np.mean(snaps.y)), 4),
        },
        "metrics": {"out_of_time_test": metrics},
    }
    if "shape" in model.named_steps:
        card["training"]["shape"] = (f"{FEATURE_NAMES[RECENCY]}: a cubic spline with {SPLINE_KNOTS} knots on its "
                                     "scaled log1p; every other feature linear in its scaled log1p")
    if with_value:
        card["training"]["value_features"] = (f"{', '.join(VALUE_FEATURE_NAMES)} over the {horizon_s / DAY:g}-day "
                                              "horizon: at each training cutoff from a value model fitted on the "
                                              "purchases before it; served with value_model")
    if value is not None:  # BG/NBD and Gamma-Gamma (worker.core.value), fitted on the purchase history
        card["value_model"] = value.as_dict()
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")


def default_cutoffs(first: float, last: float, horizon_s: float, step_days: float = 30.0,
                    warmup_days: float = 60.0) -> list[float]:
    """Monthly cutoffs (midnight UTC) after a warm-up, the latest leaving a full horizon after it."""
    cutoffs, t = [], (last - horizon_s) // DAY * DAY
    while t >= first + warmup_days * DAY:
        cutoffs.append(t)
        t -= step_days * DAY
    if len(cutoffs) < 2:
        raise ValueError("need at least two cutoffs: the history is too short for this horizon "
                         f"({(last - first) / DAY:.0f} days of data, horizon {horizon_s / DAY:g} days)")
    return sorted(cutoffs)


def parse_date(text: str) -> float:
    from worker.tools.history import _rfc3339
    return datetime.fromisoformat(_rfc3339(text.strip()).replace("Z", "+00:00")).timestamp()


def _events(args) -> tuple[list[Event], str]:
    from worker.core.events import parse_valid
    from worker.tools.generate import generate
    from worker.tools.history import read_history

    if getattr(args, "synthetic", False):
        spec = dict(customers=args.customers, days=args.days, seed=args.seed, start=args.start)
        source = "synthetic: generate(" + ", ".join(f"{k}={v}" for k, v in spec.items()) + ")"
        return [parse_valid(json.dumps(d).encode()) for d in generate(**spec)], source
    events, refused = read_history(args.events)
    if refused:
        print(f"skipped {sum(refused.values())} invalid rows: {dict(refused)}")
    if not events:
        raise ValueError("no valid events in " + ", ".join(map(str, args.events)))
    if getattr(args, "policy", None) is not None:  # amounts in the policy's base currency, as the worker folds them
        from worker.config import load_policy
        from worker.core.pipeline import in_base_currency

        policy = load_policy(args.policy)
        if policy.currency is not None:
            events = [in_base_currency(e, policy) if e.type == "purchase" else e for e in events]
    return events, ", ".join(str(p) for p in args.events)


def _training_events(args) -> tuple[list[Event], str]:
    events, source = _events(args)
    if args.train_until:
        until = parse_date(args.train_until)
        events = [e for e in events if e.occurred_at < until]
        source += f" (before {format_time(until)})"
        if not events:
            raise ValueError(f"no events before --train-until {args.train_until}")
    return events, source


def train_command(args) -> int:
    from worker.tools.history import parse_duration
    from worker.tools.value_fit import fit_value

    started = time.monotonic()
    events, source = _training_events(args)
    horizon = parse_duration(args.horizon)
    cutoffs = ([parse_date(c) for c in args.cutoffs] if args.cutoffs
               else default_cutoffs(events[0].occurred_at, events[-1].occurred_at, horizon))
    snaps = build_snapshots(events, cutoffs, horizon, args.churn_on)
    value = fit_value(events, events[-1].occurred_at)  # the value model, on all of the history trained on
    if value is not None and getattr(args, "value_features", True):
        snaps = with_value_features(snaps, events, horizon)
    calibration = getattr(args, "calibration", "pooled")
    model, metrics = train_out_of_time(snaps, args.C, calibration)
    version = args.version or args.out.name
    write_artifact(args.out, model, version=version, snaps=snaps, horizon_s=horizon, churn_on=args.churn_on,
                   metrics=metrics, source=source, value=value, calibration=calibration)
    base = metrics["baselines"]
    print(f"trained {version}: {len(events)} events, {len(snaps.y)} snapshots at {len(cutoffs)} cutoffs, "
          f"{snaps.X.shape[1]} features, {time.monotonic() - started:.1f} s")
    print(f"out-of-time test at {metrics['cutoff']} ({metrics['n_customers']} customers, churn rate "
          f"{metrics['churn_rate']:.3f}): ROC AUC {metrics['roc_auc']:.4f} (recency alone "
          f"{base['recency']['roc_auc']:.4f}), Brier {metrics['brier']:.4f} (calibrated recency "
          f"{base['recency_calibrated']['brier']:.4f})")
    print(f"wrote {args.out}")
    return 0


def bgnbd_scores(events: Sequence[Event], cutoff: float, horizon_s: float,
                 customers: Sequence[str]) -> np.ndarray | None:
    """BG/NBD fitted on the purchases before the cutoff; churn = no purchase expected: its
    probability 1 - P(alive) x P(a purchase within the horizon | alive), per customer."""
    from worker.core.value import expected_purchases, p_alive
    from worker.tools.value_fit import fit_value

    params = fit_value(events, cutoff)
    if params is None:
        return None
    buys: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.type == "purchase" and e.occurred_at < cutoff:
            buys[e.customer_id].append(e.occurred_at)
    score = []
    for cid in customers:
        times = sorted(buys.get(cid, ()))
        if not times:
            score.append(1.0)  # never bought: BG/NBD expects nothing of them
            continue
        x, t_x, T = len(times) - 1, (times[-1] - times[0]) / DAY, (cutoff - times[0]) / DAY
        alive = p_alive(params, x, t_x, T)
        expected = expected_purchases(params, horizon_s / DAY, x, t_x, T)
        score.append(1.0 - alive * (1.0 - float(np.exp(-expected / max(alive, 1e-9)))))
    return np.array(score)


def out_of_time_baselines(events: Sequence[Event], snaps: Snapshots, cutoff: float, horizon_s: float,
                          churn_on: str, trained: dict) -> dict[str, np.ndarray]:
    """The baselines fitted on the history before the test snapshot (`snaps`, at `cutoff`):
    BG/NBD on the purchases before the cutoff, and the RFM logistic regression on snapshots
    at the model's own training cutoffs whose horizon ends by the test cutoff (monthly
    cutoffs when the card lists none)."""
    out = {}
    bgnbd = bgnbd_scores(events, cutoff, horizon_s, snaps.customers)
    if bgnbd is not None:
        out["bgnbd"] = bgnbd
    train_cutoffs = [c for c in (parse_date(t) for t in trained.get("cutoffs", [])) if c + horizon_s <= cutoff]
    if not train_cutoffs:
        try:
            train_cutoffs = default_cutoffs(events[0].occurred_at, cutoff, horizon_s)
        except ValueError:  # too little history before the test for a fit
            return out
    past = build_snapshots((e for e in events if e.occurred_at < cutoff), train_cutoffs, horizon_s, churn_on)
    if len(set(past.y)) == 2:
        out["rfm"] = rfm_scores(past.X, past.y, snaps.X)
    return out


def _horizon_and_label(args, trained: dict) -> tuple[float, str]:
    from worker.tools.history import parse_duration

    horizon = parse_duration(args.horizon) if args.horizon else trained.get("horizon_days", 90) * DAY
    return horizon, args.churn_on or trained.get("churn_on", "purchase")


def evaluate_command(args) -> int:
    from worker.model.artifact import load_artifact, score_batch

    artifact = load_artifact(args.model)
    trained = artifact.card.get("training", {})
    horizon, churn_on = _horizon_and_label(args, trained)
    events, _ = _events(args)
    cutoff = parse_date(args.cutoff) if args.cutoff else (events[-1].occurred_at - horizon) // DAY * DAY
    if cutoff + horizon > events[-1].occurred_at:
        print("warning: the data end before cutoff + horizon; customers active after it count as churned")
    snaps = build_snapshots(events, [cutoff], horizon, churn_on)
    p = score_batch(artifact, snaps.X)
    trained_until = max((parse_date(c) for c in trained.get("cutoffs", [])), default=None)
    in_sample = trained_until is not None and cutoff <= trained_until
    if in_sample:
        print(f"warning: cutoff {format_time(cutoff)} is not after the model's last training cutoff "
              f"{format_time(trained_until)}: in-sample figures (train with --train-until)")
    summary = {"model_version": artifact.version, "cutoff": format_time(cutoff), "in_sample": in_sample,
               "horizon_days": horizon / DAY, "churn_on": churn_on, **evaluate(snaps.X, snaps.y, p)}
    scores = baseline_scores(snaps.X, snaps.y)
    for name, score in out_of_time_baselines(events, snaps, cutoff, horizon, churn_on, trained).items():
        scores[name] = score
        summary["baselines"][name] = {k: round(v, 4) for k, v in probability_metrics(snaps.y, score).items()}
    if args.bootstrap:
        summary["differences"] = bootstrap_differences(snaps.y, p, scores, args.bootstrap)
    _write_evaluation(args, summary, snaps, p, artifact)
    return 0


def _write_evaluation(args, summary: dict, snaps: Snapshots, p: np.ndarray, artifact: Any) -> None:
    from worker.tools.report import render

    print(json.dumps({k: v for k, v in summary.items() if k not in ("baselines", "differences")}))
    print("baselines: " + json.dumps(summary["baselines"]))
    if "differences" in summary:
        print("model minus baseline, 95% interval: " + json.dumps(summary["differences"]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.report:
        page = render(summary, curves(snaps.y, p, snaps.X[:, RECENCY]), threshold_table(snaps.y, p),
                      f"Churn model {artifact.version} at {summary['cutoff'][:10]}", artifact.card)
        args.report.write_text(page)
        print(f"wrote {args.report}")
