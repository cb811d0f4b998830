"""The model artifact contract, and batched scoring with faithful reasons.

An artifact is a directory with `model.joblib` (a scikit-learn Pipeline: log1p ->
StandardScaler -> [a spline on one column] -> LogisticRegression, an additive model)
and `model_card.json` (feature names, library versions, training window, metrics).
`load_artifact` refuses a feature-name or library-version mismatch and says which.
joblib files are pickles: load only artifacts you built or trust.

The worker hands every model the same rows (worker.core.features); a model whose card
also lists the value features (worker.core.value.VALUE_FEATURE_NAMES) appends them with
its own card's value model and horizon (`model_rows`), so a shadow model scores with its
own parameters and a card from before the value features still loads and scores as it did.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer

from worker.core.features import FEATURE_NAMES
from worker.core.value import VALUE_FEATURE_NAMES, value_features
from worker.errors import ModelError

MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
REQUIRED_CARD_KEYS = ("model_version", "kind", "feature_names", "library_versions")
WITH_VALUE = (*FEATURE_NAMES, *VALUE_FEATURE_NAMES)


@dataclass(frozen=True)
class ModelArtifact:
    model: Any
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card["model_version"])

    @property
    def kind(self) -> str:
        return str(self.card["kind"])

    @property
    def label(self) -> dict[str, Any]:
        """What the model predicts: churned = no `churn_on` within `horizon_days` (the card's)."""
        training = self.card.get("training", {})
        return {"churn_on": str(training.get("churn_on", "unknown")), "horizon_days": training.get("horizon_days")}

    @cached_property
    def value_params(self) -> Any:
        """The card's value model (worker.core.value.ValueParams), or None."""
        from worker.core.value import ValueParams

        data = self.card.get("value_model")
        return ValueParams.from_dict(data) if data else None

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        """The model's columns: the worker's features, then any value features."""
        return tuple(self.card["feature_names"])

    def model_rows(self, rows: np.ndarray) -> np.ndarray:
        """The worker's feature rows as this model takes them (value features appended)."""
        if len(self.feature_names) == len(FEATURE_NAMES):
            return rows
        horizon = float(self.card["training"]["horizon_days"])
        return np.hstack([rows, value_features(rows, self.value_params, horizon)])

    @property
    def expected_churn_rate(self) -> float | None:
        """The churn rate the card measured on its out-of-time test (the training rate else)."""
        test = self.card.get("metrics", {}).get("out_of_time_test", {})
        rate = test.get("churn_rate", self.card.get("training", {}).get("churn_rate"))
        return None if rate is None else float(rate)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return score_batch(self, rows)

    def explain(self, rows: np.ndarray) -> list[list[dict]]:
        return explain_batch(self, rows)


def load_artifact(path: Path | str) -> ModelArtifact:
    """Load and validate a model directory; raise ModelError naming what is wrong."""
    path = Path(path)
    card = _read_card(path / CARD_FILE)
    _check_features(card["feature_names"], path)
    _check_value_model(card, path)
    trained_with = card["library_versions"].get("scikit-learn")
    if trained_with != sklearn.__version__:
        raise ModelError(
            f"{path}: model was trained with scikit-learn {trained_with}, this worker runs "
            f"{sklearn.__version__}; retrain it (`make model` or `churn-worker train`)"
        )
    if not (path / MODEL_FILE).is_file():
        raise ModelError(f"{path}: {MODEL_FILE} is missing")
    with warnings.catch_warnings():
        warnings.simplefilter("error", sklearn.exceptions.InconsistentVersionWarning)
        try:
            model = joblib.load(path / MODEL_FILE)
        except Exception as exc:  # a corrupt or foreign pickle can raise anything
            raise ModelError(f"{path / MODEL_FILE}: cannot be loaded: {exc}") from None
    artifact = ModelArtifact(model, card)
    _smoke_test(artifact, path)
    return artifact


def _read_card(card_path: Path) -> dict[str, Any]:
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{card_path}: model card is missing") from None
    except ValueError as exc:
        raise ModelError(f"{card_path}: not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ModelError(f"{card_path}: missing field(s) {', '.join(missing)}")
    return card


def _check_features(names: Sequence[str], path: Path) -> None:
    """The worker's features in its order, then optionally all the value features."""
    names = list(names)
    expected = list(WITH_VALUE if set(VALUE_FEATURE_NAMES) & set(names) else FEATURE_NAMES)
    if names == expected:
        return
    missing = [n for n in expected if n not in names]
    unseen = [n for n in names if n not in expected]
    if missing or unseen:
        raise ModelError(
            f"{path}: feature names differ from this worker's: missing {missing or 'none'}, "
            f"unknown to the worker {unseen or 'none'}"
        )
    first = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
    raise ModelError(
        f"{path}: feature order differs at position {first}: model has {names[first]!r}, "
        f"worker has {expected[first]!r}"
    )


def _check_value_model(card: dict[str, Any], path: Path) -> None:
    """Value features need the card's value model and the horizon they look ahead."""
    if len(card["feature_names"]) == len(FEATURE_NAMES):
        return
    if not card.get("value_model") or not card.get("training", {}).get("horizon_days"):
        raise ModelError(f"{path}: the card lists value features {list(VALUE_FEATURE_NAMES)} but has no "
                         "value_model or training.horizon_days to compute them; retrain it")


def _smoke_test(artifact: ModelArtifact, path: Path) -> None:
    try:
        probe = score_batch(artifact, np.zeros((1, len(FEATURE_NAMES))))
        explain_batch(artifact, np.zeros((1, len(FEATURE_NAMES))))
    except Exception as exc:
        raise ModelError(f"{path}: model cannot score a feature row: {exc}") from None
    if not np.all(np.isfinite(probe)):
        raise ModelError(f"{path}: model returned a non-finite probability")


def score_batch(artifact: ModelArtifact, rows: np.ndarray) -> np.ndarray:
    """Churn probabilities for a batch of feature rows (one predict_proba call)."""
    if len(rows) == 0:
        return np.zeros(0)
    return artifact.model.predict_proba(artifact.model_rows(rows))[:, 1]


def contributions(artifact: ModelArtifact, rows: np.ndarray) -> np.ndarray:
    """Per-feature contributions to the log-odds of the worker's feature rows, one column
    per model feature (`artifact.feature_names`): `linear_contributions` of their model rows."""
    return linear_contributions(artifact.model, artifact.model_rows(rows))


def linear_contributions(model: Any, model_rows: np.ndarray) -> np.ndarray:
    """Contributions relative to the average training customer (in log1p units), one column
    per model feature: the classifier's inputs times their coefficients, each summed into the
    feature it came from (a spline's basis columns into their one feature). The model is
    additive, so they sum exactly to logit(p) - intercept; a positive contribution raises
    the risk."""
    transformed = model[:-1].transform(model_rows)
    terms = transformed * model.named_steps["classifier"].coef_[0]
    owner = source_features(model, model_rows.shape[1])
    out = np.zeros((len(model_rows), model_rows.shape[1]))
    for column, feature in enumerate(owner):
        out[:, feature] += terms[:, column]
    return out


def source_features(model: Any, n_features: int) -> np.ndarray:
    """For each column the classifier sees, the model feature it was made from: columns map
    one to one through log1p and the scaler; a ColumnTransformer (the spline) maps each of
    its outputs back to its input column."""
    owner = np.arange(n_features)
    for _, step in model.steps[:-1]:
        if not isinstance(step, ColumnTransformer):
            continue
        mapped = np.empty(sum(s.stop - s.start for s in step.output_indices_.values()), dtype=int)
        for name, _, columns in step.transformers_:
            out = step.output_indices_[name]
            sources = owner[np.arange(len(owner))[columns]]
            mapped[out] = np.repeat(sources, (out.stop - out.start) // len(sources))  # a spline: per column
        owner = mapped
    return owner


def explain_batch(artifact: ModelArtifact, rows: np.ndarray, top: int = 3) -> list[list[dict]]:
    """The `top` features that raise each row's risk most, with their contributions."""
    values = artifact.model_rows(rows)
    contrib = linear_contributions(artifact.model, values)
    order = np.argsort(-contrib, axis=1)[:, :top]
    names = artifact.feature_names
    return [
        [
            {"feature": names[j], "value": round(float(values[i, j]), 4),
             "contribution": round(float(contrib[i, j]), 4)}
            for j in order[i] if contrib[i, j] > 0
        ]
        for i in range(len(rows))
    ]
