"""Fixtures for the Function App tests: Azurite (Table Storage), the local Web PubSub service, the
Function App imported with given settings, and the local runner as a real subprocess."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.webpubsub import WebPubSubThread

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-table"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: the local Web PubSub service's access key (the SDK signs its JWTs with it, the service checks them)
WPS_KEY = "dGVzdC1rZXktZm9yLXRoZS1sb2NhbC13ZWItcHVic3ViLXNlcnZpY2UtMDEyMzQ1Njc4OQ=="
FUNCTION_KEY = "test-function-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Azurite:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};TableEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite Table Storage on an ephemeral port with a temporary --location.

    Fails (does not skip) when the npm packages are missing: the Table Storage tests are part of
    the suite, not optional.
    """
    if not AZURITE.exists() or shutil.which("node") is None:
        pytest.fail(
            f"Azurite is missing ({AZURITE} or `node` not found): run `npm install` in {ROOT} "
            "(or `make npm`) so node_modules/.bin/azurite-table exists",
            pytrace=False,
        )
    location = tmp_path_factory.mktemp("azurite")
    port = free_port()
    proc = subprocess.Popen(
        [str(AZURITE), "--tableHost", "127.0.0.1", "--tablePort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--loose", "--silent"],
        cwd=location, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30, proc)
        yield Azurite(port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def webpubsub() -> Iterator[WebPubSubThread]:
    service = WebPubSubThread(WPS_KEY)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def wps_connection(webpubsub: WebPubSubThread) -> str:
    return webpubsub.connection_string


_APP_ENV_PREFIXES = ("SIO_", "ServiceBusConnection", "TablesConnection", "WebPubSubConnection")


def import_function_app(env: Mapping[str, str]) -> Any:
    """(Re)import ``function_app`` with exactly these app settings in the environment."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_APP_ENV_PREFIXES)}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        sys.modules.pop("function_app", None)
        return importlib.import_module("function_app")
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


class Runner:
    """``python -m function_runner`` as a subprocess, read through its stdout."""

    def __init__(self, env: Mapping[str, str], *, only: str = "", app: str = "function_app") -> None:
        self.env = dict(env)
        self.only = only
        self.app = app
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.port: int | None = None
        self._lock = threading.Lock()

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "function_runner", "--root", str(ROOT), "--settings", "no-such-local.settings.json",
                "--port", "0", "--app", self.app]
        if self.only:
            args += ["--only", self.only]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_APP_ENV_PREFIXES)}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["FUNCTIONS_LOCAL_KEY"] = FUNCTION_KEY
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("function runner exited early:\n" + "".join(self.output))
            self.output.append(line)
            m = re.search(r"http listening on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
            if "function-runner: ready" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("function runner did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.output.append(line)

    def lines(self, pattern: str) -> list[str]:
        with self._lock:
            return [line for line in self.output if re.search(pattern, line)]

    def wait_for(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines(pattern)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"runner never logged {pattern!r} x{count}; tail:\n" + "".join(self.output[-40:]))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def settings_json(env: Mapping[str, str]) -> str:
    return json.dumps(dict(env), indent=1)
