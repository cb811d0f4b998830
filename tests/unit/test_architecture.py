"""The layout's rules, checked: `worker/core/` is pure (no framework, no I/O), and every
module stays small enough to read.

The path tells a reader what a module may do; these tests keep that true. The core's
imports are read from the source (a module may import only the standard library's pure
parts, numpy, pydantic, orjson, the core itself and the exception tree) and checked again
at run time (importing the whole core loads none of the frameworks, even indirectly).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worker"
CORE = sorted((PACKAGE / "core").glob("*.py"))
FRAMEWORKS = ("faust", "aiokafka", "mode", "prometheus_client", "kafka", "aiohttp", "joblib", "sklearn", "tqdm")
# standard-library modules that reach files, sockets, processes, the environment or the clock's I/O
IO_MODULES = ("os", "io", "sys", "pathlib", "shutil", "tempfile", "socket", "ssl", "subprocess", "urllib", "http",
              "asyncio", "logging", "signal", "threading", "multiprocessing", "sqlite3", "pickle", "glob")
IO_CALLS = ("open", "print", "input", "breakpoint")
ALLOWED_WORKER = ("worker.core", "worker.errors")
MAX_FUNCTION_LINES = 50
MAX_CLASS_LINES = 150


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom):
            names.append(f"worker.core.{node.module or ''}")  # relative: inside the core
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_exists_and_holds_the_pure_modules():
    names = {p.stem for p in CORE}
    assert {"events", "state", "slots", "features", "codec", "policy", "triggers", "pipeline", "deadlines",
            "partitioner", "messages"} <= names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_a_core_module_imports_no_framework_and_nothing_that_does_io(path):
    for name in _imports(path):
        assert _top(name) not in FRAMEWORKS, f"{path.name} imports {name}: the core imports no framework"
        assert _top(name) not in IO_MODULES, f"{path.name} imports {name}: the core does no I/O"
        if _top(name) == "worker":
            assert name.startswith(ALLOWED_WORKER), f"{path.name} imports {name}: the core imports only the core"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_a_core_module_calls_no_io_builtin(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in IO_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"


def test_importing_the_whole_core_loads_no_framework():
    modules = [f"worker.core.{p.stem}" for p in CORE if p.stem != "__init__"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_checks_catch_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom faust import App\nfrom worker.shell import app\n")
    assert [_top(n) for n in _imports(bad)] == ["os", "faust", "worker"]


def _too_long() -> list[str]:
    """Every function over MAX_FUNCTION_LINES and class over MAX_CLASS_LINES in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if length > limit:
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_or_class_outgrows_a_readable_size():
    assert _too_long() == []


def test_the_layout_keeps_frameworks_in_the_shell():
    """faust is imported by the shell and by the tools that measure it, nowhere else."""
    allowed = ("worker/shell/", "worker/tools/bench_faust.py", "worker/cli.py")
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE.parent))
        if any(_top(name) in ("faust", "mode") for name in _imports(path)):
            assert module.startswith(allowed), f"{module} imports faust"
