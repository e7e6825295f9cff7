"""Lint and types as part of the README's test command: ruff on the tree, mypy --strict on the libraries."""

from __future__ import annotations

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
