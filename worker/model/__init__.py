"""The model: the artifact contract (`artifact`), batched scoring and reasons.

The shipped model travels inside the package (`worker.model.shipped`, built from the
top-level `models/` directory); `CHURN_MODEL_DIR` points the worker at another one.
"""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

SHIPPED_MODEL = "churn-v1"


def shipped_model_dir(name: str = SHIPPED_MODEL) -> Path:
    """The shipped artifact's directory: package data in an installed worker, `models/`
    in a source checkout (an editable install maps no data-only package)."""
    spec = find_spec("worker.model.shipped")
    places = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    places.append(Path(__file__).resolve().parents[2] / "models")
    for place in places:
        if (place / name).is_dir():
            return place / name
    return places[0] / name  # missing: load_artifact then says what is missing where
