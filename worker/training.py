"""Training: replay history through the worker's own `apply_event`/`features`.

Snapshots are taken at cutoff dates; a snapshot is labelled churned when the
customer has no qualifying event (activity or purchase) within the horizon
after the cutoff. Only customers seen before a cutoff count at that cutoff, and
features see nothing after it, so the future cannot leak into a snapshot.
"""
from __future__ import annotations

import bisect
import json
import platform
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from worker.events import Event, format_time
from worker.scoring import CARD_FILE, MODEL_FILE
from worker.state import DAY, EMPTY, FEATURE_NAMES, CustomerState, apply_event, features


@dataclass
class Snapshots:
    X: np.ndarray
    y: np.ndarray
    cutoff_index: np.ndarray  # which cutoff each row belongs to
    cutoffs: list[float]


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
    )


def _snapshot(states: dict[str, CustomerState], cutoff: float, k: int) -> list:
    return [(cid, k, features(s, cutoff)) for cid, s in states.items() if s.first_seen <= cutoff]


def _churned(times: list[float], cutoff: float, horizon_s: float) -> int:
    i = bisect.bisect_right(times, cutoff)
    return int(not (i < len(times) and times[i] <= cutoff + horizon_s))


def make_model(C: float = 1.0) -> Pipeline:
    """log1p tames the long tails (days, revenue); a linear model keeps reasons exact."""
    return Pipeline([
        ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
        ("scale", StandardScaler()),
        ("classifier", LogisticRegression(C=C, max_iter=2000)),
    ])


def evaluate_probs(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "log_loss": round(float(log_loss(y, p, labels=[0, 1])), 4),
        "n": int(len(y)),
        "churn_rate": round(float(np.mean(y)), 4),
    }


def train_out_of_time(snaps: Snapshots) -> tuple[Pipeline, dict]:
    """Fit on every cutoff but the latest, test on the latest, then refit on all for serving."""
    last = len(snaps.cutoffs) - 1
    train, test = snaps.cutoff_index < last, snaps.cutoff_index == last
    model = make_model().fit(snaps.X[train], snaps.y[train])
    holdout = evaluate_probs(snaps.y[test], model.predict_proba(snaps.X[test])[:, 1])
    return make_model().fit(snaps.X, snaps.y), holdout


def write_artifact(out_dir: Path, model: Pipeline, *, version: str, snaps: Snapshots,
                   horizon_s: float, churn_on: str, metrics: dict, source: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out_dir / MODEL_FILE)
    card = {
        "model_version": version,
        "kind": "logistic_regression",
        "feature_names": list(FEATURE_NAMES),
        "library_versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                             "python": platform.python_version()},
        "training": {
            "source": source,
            "cutoffs": [format_time(c) for c in snaps.cutoffs],
            "horizon_days": horizon_s / DAY,
            "label": f"churned = no {churn_on} in the {horizon_s / DAY:g} days after the cutoff",
            "rows": int(len(snaps.y)),
            "churn_rate": round(float(np.mean(snaps.y)), 4),
        },
        "metrics": {"out_of_time_test": metrics},
    }
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")


def read_events(paths: Sequence[Path]) -> list[Event]:
    """Valid events from JSONL files, sorted by time (invalid lines are counted and skipped)."""
    from worker.events import parse_event

    events, bad = [], 0
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                parsed = parse_event(line.strip()) if line.strip() else None
                if isinstance(parsed, Event):
                    events.append(parsed)
                elif parsed is not None:
                    bad += 1
    if bad:
        print(f"skipped {bad} invalid lines")
    return sorted(events, key=lambda e: e.occurred_at)


def default_cutoffs(first: float, last: float, horizon_s: float, step_days: float = 30.0,
                    warmup_days: float = 60.0) -> list[float]:
    """Monthly cutoffs after a warm-up, the latest leaving a full horizon of data after it."""
    cutoffs, t = [], last - horizon_s
    while t >= first + warmup_days * DAY:
        cutoffs.append(t)
        t -= step_days * DAY
    if len(cutoffs) < 2:
        raise ValueError("need at least two cutoffs: the history is too short for this horizon")
    return sorted(cutoffs)


def train_command(args) -> int:
    from worker.events import parse_event
    from worker.generate import generate

    if args.synthetic:
        spec = dict(customers=args.customers, days=args.days, seed=args.seed, start=args.start)
        source = "synthetic: generate(" + ", ".join(f"{k}={v}" for k, v in spec.items()) + ")"
        events = [parse_event(json.dumps(d).encode()) for d in generate(**spec)]
    else:
        source = ", ".join(str(p) for p in args.events)
        events = read_events(args.events)
    horizon = args.horizon_days * DAY
    cutoffs = default_cutoffs(events[0].occurred_at, events[-1].occurred_at, horizon)
    snaps = build_snapshots(events, cutoffs, horizon, args.churn_on)
    model, metrics = train_out_of_time(snaps)
    version = args.version or args.out.name
    write_artifact(args.out, model, version=version, snaps=snaps, horizon_s=horizon,
                   churn_on=args.churn_on, metrics=metrics, source=source)
    print(f"trained {version} on {len(snaps.y)} snapshots at {len(cutoffs)} cutoffs; "
          f"out-of-time test: {metrics}")
    print(f"wrote {args.out}")
    return 0
