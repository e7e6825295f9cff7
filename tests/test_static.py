"""Lint and types as part of the README's test command: ruff on the tree, mypy --strict on the libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", ".", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_shared_and_emulator() -> None:
    result = run("mypy")  # packages and strictness from [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


#: issue 23: "No module outside tests/ and bench/ has more than 700 lines."
MAX_MODULE_LINES = 700
#: folders whose modules are not the project's code (tests and benches) or not its own (tooling)
NOT_MODULES = frozenset({"tests", "bench", ".venv", "venv", "node_modules", "build", "dist", "__pycache__"})


def project_modules(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root``, skipping :data:`NOT_MODULES`, hidden and ``*.egg-info`` folders."""
    found: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if path.name in NOT_MODULES or path.name.startswith(".") or path.name.endswith(".egg-info"):
                continue
            found.extend(project_modules(path))
        elif path.suffix == ".py":
            found.append(path)
    return found


def test_module_walk_finds_the_projects_code_and_skips_tests() -> None:
    modules = {path.relative_to(ROOT).as_posix() for path in project_modules(ROOT)}
    assert {"function_app.py", "servicebus_emulator/sqlfilter.py", "socketio_servicebus/__init__.py"} <= modules
    assert not any(name.startswith(("tests/", "bench/", ".venv/")) for name in modules)


def test_no_module_has_more_than_700_lines() -> None:
    too_long = {
        path.relative_to(ROOT).as_posix(): count
        for path in project_modules(ROOT)
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them along their seams): {too_long}"


#: issue 23: "ServiceBusManager's class body is at most 400 lines."
MAX_MANAGER_CLASS_LINES = 400
MANAGER_MODULE = ROOT / "socketio_servicebus" / "manager" / "client_manager.py"


def class_span(path: Path, name: str) -> int:
    """Lines from ``class <name>`` to the class's last line (its decorators not counted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            assert node.end_lineno is not None
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"no class {name} in {path}")


def test_service_bus_manager_class_is_at_most_400_lines() -> None:
    count = class_span(MANAGER_MODULE, "ServiceBusManager")
    assert count <= MAX_MANAGER_CLASS_LINES, (
        f"ServiceBusManager spans {count} lines (at most {MAX_MANAGER_CLASS_LINES}): move a whole responsibility "
        "into the manager's parts (docs/architecture.md, 'Layers: who may import whom')")
