"""Run ``python -m relay_node`` as a real process and talk to it (HTTP, socket.io, Node client)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
JS_CLIENT = ROOT / "tests" / "js" / "chat_client.mjs"
#: one knob to scale every wait in these tests (slow CI machines)
SCALE = float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SERVICEBUS_", "SIO_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class _Lines:
    """Collect a pipe's lines in a thread; wait for a pattern with a timeout."""

    def __init__(self, pipe: Any):
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout * SCALE
        for line in list(self.lines):
            if m := re.search(pattern, line):
                return m
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if m := re.search(pattern, line):
                return m
        return None

    def text(self) -> str:
        return "\n".join(self.lines)


class RelayProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.args = list(args)
        self.env = env or clean_env()
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.out: _Lines | None = None
        self.err: _Lines | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay_node", "--port", "0", *self.args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.out, self.err = _Lines(self.proc.stdout), _Lines(self.proc.stderr)

    def start(self, timeout: float = 30.0) -> RelayProcess:
        self.spawn()
        return self.wait_started(timeout)

    def wait_started(self, timeout: float = 30.0) -> RelayProcess:
        assert self.out is not None
        m = self.out.wait_for(r"listening on http://[^:]+:(\d+)", timeout)
        if not m:
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"relay node did not start:\n{self.stderr()}")
        self.port = int(m.group(1))
        return self

    def stderr(self) -> str:
        return self.err.text() if self.err else ""

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout * SCALE)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout * SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class JsClient:
    """``node tests/js/chat_client.mjs``: the official socket.io client, JSON lines both ways."""

    def __init__(self, url: str, *extra: str):
        node = shutil.which("node")
        assert node is not None and (ROOT / "node_modules" / "socket.io-client").is_dir(), (
            "node and node_modules/socket.io-client are required (make test runs npm install)"
        )
        self.proc = subprocess.Popen(
            [node, str(JS_CLIENT), url, *extra], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"type": "output", "text": line.rstrip()}
            self.seen.append(event)
            self.events.put(event)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, type_: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout * SCALE
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("type") == type_ and all(event.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"no {type_} {match} from the JS client within {timeout}s; saw {self.seen}")

    async def aexpect(self, type_: str, within: float = 10.0, **match: Any) -> dict[str, Any]:
        """:meth:`expect` without blocking the test's event loop (its own clients keep running)."""
        import asyncio

        return await asyncio.to_thread(self.expect, type_, within, **match)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(3)
            except Exception:  # noqa: BLE001 - the process is killed instead
                self.proc.kill()
                self.proc.wait(3)


async def ready_status(url: str) -> tuple[int, dict[str, Any]]:
    """``/readyz`` of the node at ``url``: status and body."""
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def wait_status(url: str, want: int, within: float, poll: float = 0.25) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers ``want`` (``within`` seconds, scaled); its last body."""
    deadline = time.monotonic() + within * SCALE
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await ready_status(url)
        if status == want:
            return body
        await asyncio.sleep(poll)
    raise AssertionError(f"/readyz did not answer {want} within {within}s; last body {body}")
