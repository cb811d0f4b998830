"""The worker as a built package: what the wheel carries, and that an installed worker
finds its shipped model and policy inside itself, not in a source tree.

The wheel is built as `pip install .` builds it, installed with `--target` into a folder
of its own (its dependencies are this environment's), and imported from a directory with
no source tree in reach.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the source (no build/ or egg-info left from an earlier build)."""
    source, out = tmp_path_factory.mktemp("source") / "churn-worker", tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "demo-run", "churn-data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("churn_worker-*.whl")
    return built


def test_the_wheel_carries_the_model_policy_and_schemas_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("worker/model/shipped/churn-v1/model.joblib", "worker/model/shipped/churn-v1/model_card.json",
                 "worker/default_policy.toml", "worker/schemas/event.v1.json", "worker/schemas/trigger.v1.json"):
        assert data in names, data
    for package in ("core", "model", "shell", "tools", "harness"):
        assert f"worker/{package}/__init__.py" in names, package
    assert not [n for n in names if n.startswith(("tests/", "models/"))]


def test_the_runtime_needs_no_tools_dependency(wheel):
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))).decode()
    runtime = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert runtime and not [line for line in runtime if "tqdm" in line or "calfkit" in line]


def test_an_installed_worker_loads_its_own_shipped_model_from_any_directory(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import worker, worker.config as c\n"
            "from worker.model.artifact import load_artifact\n"
            "s = c.load_settings()\n"
            "a = load_artifact(s.model_dir)\n"
            "print(worker.__file__); print(s.model_dir); print(s.policy_path); print(a.version)")
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    module, model_dir, policy, version = done.stdout.split()
    for path in (module, model_dir, policy):
        assert Path(path).is_relative_to(target), path  # inside the installed package, not the source tree
    assert version == "churn-v1"
