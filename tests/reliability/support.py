"""Helpers of the reliability suite: printed figures, counting clients, polling, process stats."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.support.history_api import fetch_history  # noqa: F401 - re-exported for the suite

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "reliability"
FIGURES = OUTPUT / "figures.json"
#: one knob for every wait of this suite (slow CI machines)
SCALE = float(os.environ.get("RELIABILITY_TIMEOUT_SCALE", "1"))


def figure(scenario: str, **values: Any) -> dict[str, Any]:
    """Print one figure line (flushed) and append it to test-output/reliability/figures.json."""
    record = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **values}
    print(f"\nFIGURE {scenario}: " + "  ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(FIGURES.read_text()) if FIGURES.exists() else []
        if not isinstance(existing, list):
            existing = []
    except ValueError:
        existing = []
    existing.append(record)
    FIGURES.write_text(json.dumps(existing, indent=1) + "\n")
    return record


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str,  # noqa: ASYNC109
                     interval: float = 0.1) -> float:
    """Poll until ``predicate()`` is true; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout * SCALE
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * SCALE:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


class Counting:
    """A python-socketio client that counts what it receives, by id, per event."""

    def __init__(self, name: str, events: tuple[str, ...] = ("chat", "tick")):
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False)
        self.seen: dict[str, Counter[str]] = {e: Counter() for e in events}
        self.items: dict[str, list[Any]] = {e: [] for e in events}
        self.last: dict[str, Any] = {}
        self.lags: list[float] = []
        for event in events:
            self.client.on(event, self._handler(event))

    def _handler(self, event: str) -> Callable[[Any], None]:
        def on(data: Any) -> None:
            key = str(data.get("id") if isinstance(data, dict) else data)
            self.seen[event][key] += 1
            self.items[event].append(data)
            if isinstance(data, dict) and isinstance(data.get("ts"), (int, float)):
                self.lags.append(time.time() - data["ts"])
            self.last[event] = data
        return on

    async def connect(self, url: str, room: str | None = None) -> Counting:
        await self.client.connect(url, transports=["websocket"], wait_timeout=10)
        if room is not None:
            ack = await self.client.call("join", room, timeout=10)
            assert ack and ack.get("ok"), ack
        return self

    def ids(self, event: str) -> set[str]:
        return set(self.seen[event])

    def duplicated(self, event: str) -> int:
        return sum(n - 1 for n in self.seen[event].values() if n > 1)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.disconnect(), 5)
        except Exception:  # noqa: BLE001 - already gone
            pass


async def http_status(url: str, timeout: float = 2.0) -> int:  # noqa: ASYNC109
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url) as resp:
            return resp.status
    except Exception:  # noqa: BLE001 - down counts as 0
        return 0


class ReadyWatch:
    """Poll ``/readyz`` of some nodes in the background and keep each status transition."""

    def __init__(self, urls: dict[str, str], interval: float = 0.2):
        self.urls = urls
        self.interval = interval
        self.status: dict[str, int] = {}
        self.transitions: dict[str, list[tuple[float, int]]] = {n: [] for n in urls}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for node, url in self.urls.items():
                code = await http_status(url + "/readyz", timeout=1.0)
                if self.status.get(node) != code:
                    self.status[node] = code
                    self.transitions[node].append((time.monotonic(), code))
            await asyncio.sleep(self.interval)

    def start(self) -> ReadyWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def codes(self, node: str) -> list[int]:
        return [c for _, c in self.transitions[node]]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


