"""The relay node's static files are package data: the vendored socket.io browser client is the
one ``package-lock.json`` pins, with its licence, and the commands without their extra say which
extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from socketio_servicebus import extras as _extras

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "relay_node" / "static" / "vendor"


def test_vendored_client_is_the_locked_npm_package() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    locked = lock["packages"]["node_modules/socket.io-client"]["version"]
    vendored = (VENDOR / "socket.io.min.js").read_bytes()
    assert vendored.startswith(b"/*!\n * Socket.IO v" + locked.encode() + b"\n"), (
        f"relay_node/static/vendor/socket.io.min.js is not socket.io-client {locked}: run `make vendor-js`")
    installed = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    assert installed.is_file(), "npm packages missing: make test installs them (npm ci)"
    assert vendored == installed.read_bytes(), "vendored client differs from the locked npm package: make vendor-js"
    licence = (VENDOR / "socket.io-client.LICENSE").read_text(encoding="utf-8")
    assert "MIT" in licence or "Permission is hereby granted" in licence


def test_every_file_the_page_loads_is_declared_package_data() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["relay_node"]
    static = ROOT / "relay_node"
    shipped = {p for pat in patterns for p in static.glob(pat)}
    for name in ("static/index.html", "static/app.js", "static/vendor/socket.io.min.js",
                 "static/vendor/socket.io-client.LICENSE"):
        assert static / name in shipped, f"{name} is not matched by [tool.setuptools.package-data] relay_node"


@pytest.mark.parametrize(("extra", "prog"), [("relay", "relay-node"), ("emulator", "servicebus-emulator")])
def test_missing_extra_is_one_line_with_exit_code_2(
    extra: str, prog: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(_extras.EXTRAS, extra, ("no_such_module_for_this_test",))
    with pytest.raises(SystemExit) as exc:
        _extras.require_extra(extra, prog)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ")
    assert f"pip install 'socketio-servicebus[{extra}]'" in err


def test_entry_points_check_their_extra_before_importing_it() -> None:
    # a python where the extra's first module is blocked: the command must still end with the one line
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'uvicorn', 'proton'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib\n"
        "mod = importlib.import_module(sys.argv[1])\n"
        "sys.exit(mod.main(['--help']))\n"
    )
    for module, extra in (("relay_node.__main__", "relay"), ("servicebus_emulator.__main__", "emulator")):
        res = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, cwd=ROOT,
                             timeout=60)
        assert res.returncode == 2, res.stderr
        assert f"install the '{extra}' extra" in res.stderr and res.stderr.count("\n") == 1, res.stderr
