"""The model artifact contract, batched scoring and the exactness of the reasons."""
from __future__ import annotations

import json
import re
import shutil

import joblib
import numpy as np
import pytest
import sklearn

from worker.core.features import FEATURE_NAMES
from worker.core.value import VALUE_FEATURE_NAMES
from worker.errors import ModelError
from worker.model.artifact import (
    CARD_FILE,
    MODEL_FILE,
    contributions,
    explain_batch,
    linear_contributions,
    load_artifact,
    score_batch,
)

from .conftest import MODEL_DIR


@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "churn-copy"
    shutil.copytree(MODEL_DIR, target)
    return target


def edit_card(path, **changes):
    card = json.loads((path / CARD_FILE).read_text())
    card.update(changes)
    (path / CARD_FILE).write_text(json.dumps(card))


def test_shipped_artifact_loads(artifact):
    assert artifact.version == "churn-v1"
    assert artifact.kind == "logistic_regression"
    assert artifact.feature_names == (*FEATURE_NAMES, *VALUE_FEATURE_NAMES)
    assert [name for name, _ in artifact.model.steps] == ["log1p", "scale", "shape", "classifier"]
    assert "spline" in artifact.card["training"]["shape"]


def test_an_unedited_copy_loads(model_copy):
    assert load_artifact(model_copy).version == "churn-v1"


def test_card_with_a_missing_feature(model_copy):
    edit_card(model_copy, feature_names=[n for n in FEATURE_NAMES if n != "orders"])
    with pytest.raises(ModelError, match=re.escape("missing ['orders'], unknown to the worker none")):
        load_artifact(model_copy)


def test_card_with_an_unknown_feature(model_copy):
    edit_card(model_copy, feature_names=[*FEATURE_NAMES, "shoe_size"])
    with pytest.raises(ModelError, match=re.escape("missing none, unknown to the worker ['shoe_size']")):
        load_artifact(model_copy)


def test_card_with_a_renamed_feature(model_copy):
    edit_card(model_copy, feature_names=["revenue_eur" if n == "revenue" else n for n in FEATURE_NAMES])
    with pytest.raises(ModelError, match=re.escape("missing ['revenue'], unknown to the worker ['revenue_eur']")):
        load_artifact(model_copy)


def test_card_with_swapped_feature_order(model_copy):
    names = list(FEATURE_NAMES)
    names[4], names[5] = names[5], names[4]
    edit_card(model_copy, feature_names=names)
    with pytest.raises(ModelError, match="feature order differs at position 4: model has 'activity_30d', "
                                         "worker has 'activity_7d'"):
        load_artifact(model_copy)


def test_card_with_part_of_the_value_features(model_copy):
    edit_card(model_copy, feature_names=[*FEATURE_NAMES, VALUE_FEATURE_NAMES[0]])
    with pytest.raises(ModelError, match=re.escape(f"missing {list(VALUE_FEATURE_NAMES[1:])}")):
        load_artifact(model_copy)


def test_card_with_value_features_but_no_value_model(model_copy):
    edit_card(model_copy, value_model=None)
    with pytest.raises(ModelError, match="lists value features .* but has no value_model"):
        load_artifact(model_copy)


def test_a_card_from_before_the_value_features_loads_and_scores_as_it_did(model_copy, feature_rows):
    """An artifact trained on the worker's features alone and without the spline (every card
    before them: log1p -> scale -> classifier) still loads, scores the worker's rows with its
    own pipeline unchanged, and its reasons still sum to its log-odds."""
    from worker.tools.training import fit_model

    labels = (feature_rows[:, FEATURE_NAMES.index("days_since_last_activity")] > 14).astype(int)
    older = fit_model(feature_rows, labels, shaped=None)
    assert [name for name, _ in older.steps] == ["log1p", "scale", "classifier"]
    joblib.dump(older, model_copy / MODEL_FILE)
    edit_card(model_copy, feature_names=list(FEATURE_NAMES))
    artifact = load_artifact(model_copy)
    assert artifact.model_rows(feature_rows) is feature_rows
    np.testing.assert_array_equal(score_batch(artifact, feature_rows), older.predict_proba(feature_rows)[:, 1])
    assert {r["feature"] for why in explain_batch(artifact, feature_rows) for r in why} <= set(FEATURE_NAMES)
    logit = older.decision_function(feature_rows) - older.named_steps["classifier"].intercept_[0]
    np.testing.assert_allclose(contributions(artifact, feature_rows).sum(axis=1), logit, rtol=0, atol=1e-9)


def test_each_model_applies_its_own_value_model(artifact, model_copy, feature_rows):
    """A shadow model scores the rows the active one scores, with its own card's value model."""
    card = json.loads((model_copy / CARD_FILE).read_text())
    edit_card(model_copy, value_model={**card["value_model"], "b": card["value_model"]["b"] / 4})
    other = load_artifact(model_copy)
    mine, theirs = artifact.model_rows(feature_rows), other.model_rows(feature_rows)
    width = len(FEATURE_NAMES)
    np.testing.assert_array_equal(mine[:, :width], theirs[:, :width])
    assert not np.allclose(mine[:, width:], theirs[:, width:])
    assert not np.allclose(score_batch(artifact, feature_rows), score_batch(other, feature_rows))


def test_card_with_another_scikit_learn_version(model_copy):
    edit_card(model_copy, library_versions={"scikit-learn": "1.2.0", "numpy": "1.26.4"})
    with pytest.raises(ModelError, match=rf"trained with scikit-learn 1\.2\.0, this worker runs "
                                         rf"{re.escape(sklearn.__version__)}"):
        load_artifact(model_copy)


def test_missing_model_file(model_copy):
    (model_copy / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="model.joblib is missing"):
        load_artifact(model_copy)


def test_corrupt_model_file(model_copy):
    blob = (model_copy / MODEL_FILE).read_bytes()
    (model_copy / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelError, match="model.joblib: cannot be loaded"):
        load_artifact(model_copy)


def test_garbage_model_file(model_copy):
    (model_copy / MODEL_FILE).write_bytes(b"this is not a pickle")
    with pytest.raises(ModelError, match="model.joblib: cannot be loaded"):
        load_artifact(model_copy)


def test_model_file_that_cannot_score(model_copy):
    joblib.dump({"not": "a model"}, model_copy / MODEL_FILE)
    with pytest.raises(ModelError, match="cannot score a feature row"):
        load_artifact(model_copy)


def test_missing_or_broken_card(model_copy):
    card = model_copy / CARD_FILE
    card.write_text("{not json")
    with pytest.raises(ModelError, match="model_card.json: not valid JSON"):
        load_artifact(model_copy)
    card.write_text(json.dumps({"model_version": "x", "kind": "y"}))
    with pytest.raises(ModelError, match="missing field\\(s\\) feature_names, library_versions"):
        load_artifact(model_copy)
    card.unlink()
    with pytest.raises(ModelError, match="model card is missing"):
        load_artifact(model_copy)


def test_feature_rows_are_a_realistic_mix(artifact, feature_rows):
    scores = score_batch(artifact, feature_rows)
    assert feature_rows.shape == (len(feature_rows), len(FEATURE_NAMES)) and len(feature_rows) > 200
    assert scores.min() < 0.1 and scores.max() > 0.9  # both safe and lapsed customers


def test_score_batch_equals_row_by_row(artifact, feature_rows):
    batch = score_batch(artifact, feature_rows)
    assert batch.shape == (len(feature_rows),)
    single = np.array([artifact.model.predict_proba(artifact.model_rows(row.reshape(1, -1)))[0, 1]
                       for row in feature_rows])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-12)
    assert np.all((batch > 0) & (batch < 1))


def test_score_batch_of_nothing(artifact):
    assert score_batch(artifact, np.zeros((0, len(FEATURE_NAMES)))).shape == (0,)


def test_contributions_sum_to_logit_minus_intercept(artifact, feature_rows):
    contrib = contributions(artifact, feature_rows)
    assert contrib.shape == (len(feature_rows), len(artifact.feature_names))
    intercept = artifact.model.named_steps["classifier"].intercept_[0]
    decision = artifact.model.decision_function(artifact.model_rows(feature_rows))
    np.testing.assert_allclose(contrib.sum(axis=1), decision - intercept, rtol=0, atol=1e-9)
    p = score_batch(artifact, feature_rows)
    inside = (p > 1e-9) & (p < 1 - 1e-9)
    logit = np.log(p[inside] / (1 - p[inside]))
    np.testing.assert_allclose(contrib.sum(axis=1)[inside], logit - intercept, rtol=0, atol=1e-6)


def test_contribution_is_zero_at_the_training_average(artifact):
    mean_log = artifact.model.named_steps["scale"].mean_
    average = np.expm1(mean_log).reshape(1, -1)
    np.testing.assert_allclose(linear_contributions(artifact.model, average), 0.0, atol=1e-9)


def test_explain_batch_lists_positive_contributions_in_order(artifact, feature_rows):
    contrib = contributions(artifact, feature_rows)
    rows = artifact.model_rows(feature_rows)
    reasons = explain_batch(artifact, feature_rows)
    assert len(reasons) == len(feature_rows)
    for i, why in enumerate(reasons):
        assert len(why) <= 3
        values = [r["contribution"] for r in why]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        for r in why:
            j = artifact.feature_names.index(r["feature"])
            assert r["value"] == round(float(rows[i, j]), 4)
            assert r["contribution"] == round(float(contrib[i, j]), 4)
        positives = sorted(contrib[i][contrib[i] > 0], reverse=True)[:3]
        assert len(why) == len(positives)


def test_top_reason_moves_the_score_in_the_claimed_direction(artifact, feature_rows):
    """Moving the top reason to a safer value lowers the score by its contribution: the model
    is linear in its own rows (the worker's features, then the value features)."""
    scores = score_batch(artifact, feature_rows)
    rows = artifact.model_rows(feature_rows)
    mean_log = artifact.model.named_steps["scale"].mean_
    safest = rows[np.argmin(scores)]
    checked = from_safe = 0
    for i in np.argsort(-scores)[:20]:  # the 20 riskiest customers
        row = rows[i]
        [top, *_] = explain_batch(artifact, feature_rows[i].reshape(1, -1))[0]
        j = artifact.feature_names.index(top["feature"])
        # the value where this feature contributes nothing (the training average)...
        neutral = row.copy()
        neutral[j] = np.expm1(mean_log[j])
        # ...and the value the safest customer has
        safe = row.copy()
        safe[j] = safest[j]
        before, at_neutral = artifact.model.predict_proba(np.stack([row, neutral]))[:, 1]
        assert at_neutral < before, (top, before, at_neutral)
        logit = np.log(before / (1 - before)) - np.log(at_neutral / (1 - at_neutral))
        assert logit == pytest.approx(top["contribution"], abs=1e-3)
        if linear_contributions(artifact.model, safe.reshape(1, -1))[0, j] < top["contribution"]:
            assert artifact.model.predict_proba(safe.reshape(1, -1))[0, 1] < before
            from_safe += 1
        checked += 1
    assert checked == 20 and from_safe >= 15, from_safe
