"""Start and stop ``python -m servicebus_emulator`` as a real process for tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


#: the root key of the namespaces of :meth:`EmulatorProcess.default_config` (not the public SAS_KEY_VALUE)
TEST_KEY = "emulator-test-root-key-0123456789abcdef"


class EmulatorProcess:
    """The emulator in its own process, on ephemeral ports, read through its stdout."""

    def __init__(self, config: Path | None = None, port: int = 0, extra_args: list[str] | None = None, *,
                 command: Sequence[str] | None = None, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None):
        """``command``/``cwd``/``env``: how to run it (default ``python -m servicebus_emulator`` from the
        repo with this environment), e.g. an installed ``servicebus-emulator`` script elsewhere."""
        self.config = config
        self.port = port
        self.extra_args = extra_args or []
        self.command = list(command or [sys.executable, "-m", "servicebus_emulator"])
        self.cwd = cwd or ROOT
        self.env = None if env is None else dict(env)  # None: os.environ at start()
        self.proc: subprocess.Popen[str] | None = None
        self.connection_strings: dict[str, str] = {}
        self.output: list[str] = []

    @staticmethod
    def default_config(*namespaces: dict[str, Any]) -> dict[str, Any]:
        spaces = list(namespaces) or [
            {
                "Name": "sbemulatorns",
                "Topics": [
                    {"Name": "socketio"},
                    {
                        "Name": "smoke",
                        "Subscriptions": [
                            {"Name": "all"},
                            {
                                "Name": "red",
                                "Rules": [
                                    {
                                        "Name": "red-only",
                                        "Properties": {
                                            "FilterType": "Sql",
                                            "SqlFilter": {"SqlExpression": "color = 'red'"},
                                        },
                                    }
                                ],
                            },
                        ],
                    },
                ],
            }
        ]
        # A named key: tests restart emulators with the same config and keep their connection strings
        # (a namespace without policies gets a random key per start; tests/emulator/test_origin_guard.py).
        spaces = [{"SharedAccessPolicies": [{"Name": "RootManageSharedAccessKey", "Key": TEST_KEY,
                                             "Rights": ["Manage", "Listen", "Send"]}], **ns} for ns in spaces]
        return {"UserConfig": {"Namespaces": spaces, "Logging": {"Type": "Console"}}}

    def start(self, timeout: float = 20.0) -> None:
        args = [*self.command, "--port", str(self.port), *self.extra_args]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self.proc = subprocess.Popen(
            args, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**(os.environ if self.env is None else self.env), "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("emulator exited early:\n" + "".join(self.output))
            self.output.append(line)
            match = re.match(r"namespace (\S+): (Endpoint=.*)$", line.strip())
            if match:
                self.connection_strings[match.group(1)] = match.group(2)
            if "servicebus-emulator ready" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("emulator did not start in time:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if len(self.output) > 5000:
                del self.output[:1000]

    def connection_string(self, namespace: str | None = None) -> str:
        if namespace is None:
            return next(iter(self.connection_strings.values()))
        return self.connection_strings[namespace]

    def port_of(self, namespace: str) -> int:
        return int(re.search(r":(\d+);", self.connection_strings[namespace]).group(1))  # type: ignore[union-attr]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@contextmanager
def running_emulator(directory: Path, config: dict[str, Any]) -> Iterator[EmulatorProcess]:
    """An emulator process for ``config`` (a parsed Config.json), stopped on exit.

    Module fixtures use it with ``tmp_path_factory.mktemp(...)`` as ``directory``.
    """
    path = directory / "Config.json"
    path.write_text(json.dumps(config))
    proc = EmulatorProcess(path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
