"""Lower bounds of the dependencies sit above every published advisory this project is exposed to.

The table names each advisory once; a new one is added here with the version that fixes it, and
the floors in pyproject.toml and requirements.txt follow (docs/security.md, "Dependencies").
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: (package, first fixed version, advisory, what it is here)
ADVISORIES = [
    ("python-socketio", "5.14.0", "CVE-2025-61765", "pickle on the message queue: code execution"),
    ("python-socketio", "5.16.2", "CVE-2026-48804", "binary attachments held without end: memory"),
    ("pyjwt", "2.10.1", "CVE-2024-53861", "partial 'iss' match"),
    ("aiohttp", "3.13.3", "CVE-2025-69223", "zip bomb through auto_decompress"),
    ("aiohttp", "3.13.4", "PYSEC-2026-2103", "several Host headers accepted"),
    ("aiohttp", "3.14.1", "PYSEC-2026-2108", "incomplete WebSocket frames bypass the size limit"),
    ("aiohttp", "3.14.4", "PYSEC-2026-4371", "request smuggling in the pure-Python parser"),
    ("h11", "0.16.0", "CVE-2025-43859", "chunked-encoding request smuggling (uvicorn's HTTP/1.1 parser)"),
]


def _floors() -> dict[str, list[tuple[str, Version]]]:
    """package -> [(where, lower bound)] from pyproject.toml (all dependency lists) and requirements.txt."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    lines = [("dependencies", r) for r in project["dependencies"]]
    lines += [(f"[{extra}]", r) for extra, reqs in project["optional-dependencies"].items() for r in reqs]
    for raw in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(("requirements.txt", raw.strip()))
    out: dict[str, list[tuple[str, Version]]] = {}
    for where, text in lines:
        req = Requirement(text)
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        out.setdefault(re.sub(r"[-_.]+", "-", req.name).lower(), []).append(
            (where, max(lows) if lows else Version("0")))
    return out


@pytest.mark.parametrize(("package", "fixed", "advisory", "what"), ADVISORIES, ids=[a[2] for a in ADVISORIES])
def test_every_floor_is_above_the_advisory(package: str, fixed: str, advisory: str, what: str) -> None:
    floors = _floors().get(package)
    assert floors, f"{package} is not declared, but {advisory} ({what}) is listed for it"
    low = [(where, v) for where, v in floors if v < Version(fixed)]
    assert not low, f"{package} {advisory} ({what}) is fixed in {fixed}; these floors admit older: {low}"
