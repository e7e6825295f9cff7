"""Fresh virtual environments outside the repository, and an environment that cannot see the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: settings of the parent process that would point Python, the relay node, the emulator or the
#: Function App somewhere else (PYTHONPATH would put the checkout back on sys.path)
_DROP_PREFIXES = (
    "PYTHON", "VIRTUAL_ENV", "CONDA_", "RELAY_", "SERVICEBUS_", "SIO_", "ServiceBusConnection",
    "TablesConnection", "WebPubSubConnection", "FUNCTIONS_",
)


def inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


class Venv:
    """A virtual environment made with ``python -m venv`` (no system site packages)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.python = self.bin / "python"
        #: extras installed so far (tests that need the bare wheel check it is still bare)
        self.extras: list[str] = []

    @classmethod
    def create(cls, path: Path) -> Venv:
        assert not inside(path, ROOT), f"{path} is inside the repository"
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
        cfg = (path / "pyvenv.cfg").read_text()
        assert "include-system-site-packages = false" in cfg, cfg
        return cls(path)

    def env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` without PYTHONPATH & co. and app settings, with this venv first on PATH
        (and no PATH entry inside the repository, e.g. the dev venv's bin)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not inside(p, ROOT)]
        env["PATH"] = os.pathsep.join([str(self.bin), *path])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def run(self, args: Sequence[str | Path], *, cwd: Path, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        assert not inside(cwd, ROOT), f"{cwd} is inside the repository"
        return subprocess.run([str(a) for a in args], cwd=cwd, env=env or self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def pip_install(self, *args: str | Path, cwd: Path) -> None:
        """``pip install`` (PyPI or the pip cache); fails the test with pip's output."""
        r = self.run([self.python, "-m", "pip", "install", "--disable-pip-version-check", *args], cwd=cwd,
                     timeout=800)
        assert r.returncode == 0, f"pip install {args} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"

    def site_packages(self) -> Path:
        r = self.run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=self.path)
        assert r.returncode == 0, r.stderr
        path = Path(r.stdout.strip())
        assert inside(path, self.path), path
        return path
