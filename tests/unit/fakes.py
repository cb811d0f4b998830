"""Fakes for the unit tests of the pure core.

`SilenceModel` stands in for the shipped model wherever a test is about the pipeline rather
than the model: its score is a rule a reader can check by hand, so a retrained model cannot
change what those tests expect. The shipped model's own contract is tested in test_scoring.py.
"""
from __future__ import annotations

import numpy as np

from worker.core.features import FEATURE_NAMES

SILENCE = FEATURE_NAMES.index("days_since_last_activity")
HALF_RISK_DAYS = 30.0  # silent this many days: risk 0.5


def silence_risk(days_silent: float) -> float:
    """The fake's whole rule: risk grows with silence, 0 on a day with activity, 0.5 after
    HALF_RISK_DAYS, 0.6 (the default follow-up threshold) after 45 days, 0.9 after 270."""
    return days_silent / (days_silent + HALF_RISK_DAYS)


class SilenceModel:
    """A `worker.core.pipeline.Model` scoring `silence_risk(days_since_last_activity)`;
    the one reason it gives is that feature, contributing its whole risk."""

    @property
    def version(self) -> str:
        return "fake-silence-1"

    def score(self, rows: np.ndarray) -> np.ndarray:
        assert rows.ndim == 2 and rows.shape[1] == len(FEATURE_NAMES), rows.shape  # the pipeline's contract
        days = rows[:, SILENCE]
        return days / (days + HALF_RISK_DAYS)

    def explain(self, rows: np.ndarray) -> list[list[dict]]:
        return [[{"feature": FEATURE_NAMES[SILENCE], "value": round(float(row[SILENCE]), 4),
                  "contribution": round(risk, 4)}] if (risk := silence_risk(float(row[SILENCE]))) > 0 else []
                for row in rows]
