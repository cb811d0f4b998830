"""Evaluating a model against what happened, beside simple baselines, and the
HTML report product people pick thresholds from.

Metrics: ROC AUC, PR AUC, Brier, log loss, lift and capture in the top 10% and
20% by risk. Baselines on the same snapshot: days since last purchase alone
(ranked, and calibrated with a one-feature logistic fit), purchase count alone
(and, added by `evaluate`, BG/NBD and a logistic regression on RFM, both fitted on the
history before the test). On request, a paired bootstrap over customers
says how sure the model's margin over each baseline is.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from worker.core.features import FEATURE_NAMES

RECENCY = FEATURE_NAMES.index("days_since_last_purchase")
ORDERS = FEATURE_NAMES.index("orders")


def lift_capture(y: np.ndarray, score: np.ndarray, share: float) -> tuple[float, float]:
    """Churn rate among the top `share` by score over the overall rate; share of churners caught."""
    k = max(int(round(len(y) * share)), 1)
    top = np.argsort(-score, kind="stable")[:k]
    rate = y.mean()
    return (float(y[top].mean() / rate) if rate else 0.0,
            float(y[top].sum() / y.sum()) if y.sum() else 0.0)


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    out = {"roc_auc": float(roc_auc_score(y, score)), "pr_auc": float(average_precision_score(y, score))}
    for share in (0.1, 0.2):
        lift, capture = lift_capture(y, score, share)
        out[f"lift_top{int(share * 100)}"], out[f"capture_top{int(share * 100)}"] = lift, capture
    return out


def probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {**ranking_metrics(y, p), "brier": float(brier_score_loss(y, p)),
            "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1]))}


PROBABILITIES = ("recency_calibrated", "bgnbd", "rfm")  # the baselines whose scores are probabilities


def baseline_scores(X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Each baseline's score per customer (higher: riskier)."""
    recency = np.log1p(X[:, RECENCY])[:, None]
    return {"recency": X[:, RECENCY],
            "recency_calibrated": LogisticRegression().fit(recency, y).predict_proba(recency)[:, 1],
            "frequency": -X[:, ORDERS]}


def baselines(X: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    return {name: (probability_metrics if name in PROBABILITIES else ranking_metrics)(y, score)
            for name, score in baseline_scores(X, y).items()}


def bootstrap_differences(y: np.ndarray, p: np.ndarray, scores: dict[str, np.ndarray], resamples: int,
                          seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """The model's ROC AUC (and, against probabilities, Brier) minus each baseline's: the
    2.5th and 97.5th percentiles over `resamples` resamples of the customers, the same
    customers for the model and the baseline (paired)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {name: {"roc_auc": [], "brier": []} for name in scores}
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        auc, brier = roc_auc_score(y[i], p[i]), float(np.mean((p[i] - y[i]) ** 2))
        for name, score in scores.items():
            draws[name]["roc_auc"].append(auc - roc_auc_score(y[i], score[i]))
            if name in PROBABILITIES:
                draws[name]["brier"].append(brier - float(np.mean((score[i] - y[i]) ** 2)))
    return {name: {k: [round(float(q), 4) for q in np.percentile(v, [2.5, 97.5])] for k, v in d.items() if v}
            for name, d in draws.items()}


def evaluate(X: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict:
    return {**{k: round(v, 4) for k, v in probability_metrics(y, p).items()},
            "n_customers": int(len(y)), "churn_rate": round(float(y.mean()), 4),
            "baselines": {name: {k: round(v, 4) for k, v in m.items()} for name, m in baselines(X, y).items()}}


def threshold_table(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """How many customers each threshold would flag and how many of them churned: fixed
    probability thresholds, and the thresholds that fit a contact budget (riskiest N%)."""
    ordered = np.sort(p)[::-1]
    rules = [(f"riskiest {share:.0%}", float(ordered[max(int(len(p) * share) - 1, 0)]))
             for share in (0.05, 0.1, 0.2, 0.3, 0.5)]
    rules += [(f"risk >= {t:.2f}", t) for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)]
    rows = []
    for rule, t in rules:
        flagged = p >= t
        n, churned = int(flagged.sum()), int(y[flagged].sum())
        rows.append({"rule": rule, "threshold": round(t, 4), "flagged": n, "flagged_share": round(n / len(y), 4),
                     "churned": churned, "precision": round(churned / n, 4) if n else None,
                     "recall": round(churned / max(int(y.sum()), 1), 4)})
    return rows


def _gain(y: np.ndarray, score: np.ndarray) -> list[tuple[float, float]]:
    order = np.argsort(-score, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum(y[order]) / max(y.sum(), 1)])
    step = max(len(y) // 200, 1)
    points = [(i / len(y), float(gain[i])) for i in range(0, len(gain), step)]
    return points + [(1.0, 1.0)]


def curves(y: np.ndarray, p: np.ndarray, recency: np.ndarray) -> dict:
    fpr, tpr, _ = roc_curve(y, p)
    rfpr, rtpr, _ = roc_curve(y, recency)
    bins = np.clip((p * 10).astype(int), 0, 9)
    calib = [(float(p[bins == b].mean()), float(y[bins == b].mean()), int((bins == b).sum()))
             for b in range(10) if (bins == b).any()]
    return {"roc": list(zip(fpr, tpr)), "roc_recency": list(zip(rfpr, rtpr)), "calibration": calib,
            "gain": _gain(y, p), "gain_recency": _gain(y, recency)}
