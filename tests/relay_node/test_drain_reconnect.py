"""SIGTERM on a relay node: standard clients with nothing but their defaults come back by
themselves. Two nodes behind a load balancer that routes new connections to a node whose
``/readyz`` says ready; one node is drained; python-socketio's ``AsyncClient()`` (default
``reconnection=True``) and the official JS client in headless Chromium (a blank page, ``io()``,
no demo page script) are both connected again within 10 s, to the other node."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from typing import Any

import socketio

from tests.support.balancer import ReadyBalancer

from .support import ROOT, SCALE, RelayProcess

WITHIN = 10.0


class BrowserClient:
    """``node tests/e2e/js/plain_client.mjs``: its JSON lines, timestamped on arrival."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str) -> BrowserClient:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "Debian's chromium is required (make test installs it)"
        proc = await asyncio.create_subprocess_exec(
            "node", str(ROOT / "tests" / "e2e" / "js" / "plain_client.mjs"), json.dumps({"url": url, "chromium": chromium}),
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                self.events.append((time.monotonic(), json.loads(line)))
            except ValueError:
                continue
            self._new.set()

    async def wait(self, type_: str, count: int, within: float) -> float:
        """Time at which the ``count``-th event of ``type_`` arrived."""
        deadline = time.monotonic() + within * SCALE
        while True:
            hits = [t for t, e in self.events if e.get("type") == type_]
            if len(hits) >= count:
                return hits[count - 1]
            left = deadline - time.monotonic()
            assert left > 0, f"no {type_} #{count} from the browser within {within}s: {self.events}"
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._task.cancel()


async def test_sigterm_standard_clients_reconnect_by_themselves_within_10s(conn_a: str) -> None:
    nodes = [RelayProcess("--connection-string", conn_a, "--node-id", f"rc{i}", "--drain-seconds", "5") for i in (1, 2)]
    for n in nodes:
        n.spawn()
    for n in nodes:
        n.wait_started()
    first, second = nodes
    assert first.port and second.port
    balancer = await ReadyBalancer([first.port, second.port]).start()
    await asyncio.sleep(0.5)  # both probed ready; new connections go to the first
    py = socketio.AsyncClient()  # the defaults: reconnection=True, polling then WebSocket
    py_events: list[tuple[float, str, Any]] = []
    py.on("connect", lambda: py_events.append((time.monotonic(), "connect", None)))
    py.on("disconnect", lambda reason=None: py_events.append((time.monotonic(), "disconnect", reason)))
    hint: list[Any] = []
    py.on("relay:reconnect", hint.append)
    browser = await BrowserClient.start(balancer.url)
    try:
        await py.connect(balancer.url, wait_timeout=10)
        await browser.wait("connect", 1, 20)
        assert balancer.routed.get(first.port) and not balancer.routed.get(second.port)
        await asyncio.sleep(1)  # let both upgrade to WebSocket

        assert first.proc is not None
        sigterm = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)

        reconnected_browser = await browser.wait("connect", 2, WITHIN)
        deadline = sigterm + WITHIN * SCALE
        while sum(1 for _, what, _ in py_events if what == "connect") < 2:
            assert time.monotonic() < deadline, f"python client not back within {WITHIN}s: {py_events}"
            await asyncio.sleep(0.05)
        reconnected_py = [t for t, what, _ in py_events if what == "connect"][1]
        assert reconnected_py - sigterm < WITHIN * SCALE and reconnected_browser - sigterm < WITHIN * SCALE
        print(f"\nFIGURE drain-reconnect: python {reconnected_py - sigterm:.1f} s, "
              f"browser {reconnected_browser - sigterm:.1f} s after SIGTERM", flush=True)
        assert py.connected
        # they dropped as a lost connection, not as a server disconnect (which is final)
        lost = {"transport close", "transport error"}
        assert [r for _, what, r in py_events if what == "disconnect"] in ([r] for r in lost), py_events
        reasons = [e["reason"] for _, e in browser.events if e.get("type") == "disconnect"]
        assert reasons in ([r] for r in lost), browser.events
        assert hint and hint[0]["reason"] == "draining"  # the hint is still sent first
        assert balancer.routed.get(second.port)  # back on the other node
        assert await asyncio.to_thread(first.wait, 15) == 0, first.stderr()
        # and the reconnected python client works there
        ack = await py.call("join", "after-drain", timeout=5)
        assert ack["ok"] and ack["node"] == "rc2"
    finally:
        await browser.close()
        await py.disconnect()
        await balancer.stop()
        for n in nodes:
            n.stop(signal.SIGKILL)
