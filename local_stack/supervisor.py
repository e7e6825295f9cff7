"""Restart what dies: the local stack's processes, with backoff, each restart counted and shown.

One loop looks at every process of the stack four times a second. A process that exited without
being asked to (crash, SIGKILL, or SIGTERM from outside) is restarted after a backoff: 1 s after
a process that had been up for a while, doubling for each quick death in a row (up to 30 s). A
restart that fails (the process does not become ready) counts as a quick death and is retried.
The rows of :meth:`Supervisor.rows` are what the dashboard and the status line show.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .processes import ManagedProcess, ProcessState

__all__ = ["ServiceState", "Supervisor"]


class ServiceState(enum.Enum):
    RUNNING = "running"
    #: died; waiting for the backoff to pass
    BACKOFF = "restarting"
    #: being started again, not ready yet
    STARTING = "starting"
    STOPPED = "stopped"


@dataclass
class _Entry:
    name: str
    state: ServiceState = ServiceState.RUNNING
    restarts: int = 0
    #: quick deaths in a row (the backoff exponent)
    failures: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    last_restart_at: float | None = None
    next_attempt_at: float | None = None
    up_since: float = 0.0
    error: str | None = None


Restart = Callable[[str], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        processes: Callable[[], Mapping[str, ManagedProcess]],
        restart: Restart,
        *,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        stable_after: float = 30.0,
        interval: float = 0.25,
        say: Callable[[str], None] = print,
    ) -> None:
        self.processes = processes
        self.restart = restart
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.interval = interval
        self.say = say
        self._entries: dict[str, _Entry] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        now = time.time()
        for name in self.processes():
            self._entries.setdefault(name, _Entry(name, up_since=now))
        self._loop = asyncio.create_task(self._run(), name="supervisor")

    async def stop(self) -> None:
        """Stop restarting (before the stack stops its processes)."""
        self._closed = True
        tasks = [t for t in (self._loop, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for entry in self._entries.values():
            entry.state = ServiceState.STOPPED

    def entry(self, name: str) -> _Entry:
        return self._entries.setdefault(name, _Entry(name, up_since=time.time()))

    async def _run(self) -> None:
        while not self._closed:
            for name, proc in list(self.processes().items()):
                entry = self.entry(name)
                if entry.state is ServiceState.RUNNING and proc.state is ProcessState.EXITED:
                    self._died(entry, proc)
            await asyncio.sleep(self.interval)

    def _died(self, entry: _Entry, proc: ManagedProcess) -> None:
        now = time.time()
        entry.last_exit = proc.returncode
        entry.last_exit_at = now
        if now - entry.up_since >= self.stable_after:
            entry.failures = 0
        delay = min(self.max_delay, self.base_delay * 2 ** entry.failures)
        entry.failures += 1
        entry.state = ServiceState.BACKOFF
        entry.next_attempt_at = now + delay
        self.say(f"local-stack: {entry.name} exited (code {proc.returncode}); restarting in {delay:.0f} s")
        self._tasks[entry.name] = asyncio.create_task(self._restart(entry), name=f"restart-{entry.name}")

    async def _restart(self, entry: _Entry) -> None:
        while not self._closed:
            await asyncio.sleep(max(0.0, (entry.next_attempt_at or 0.0) - time.time()))
            entry.state = ServiceState.STARTING
            try:
                await self.restart(entry.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried with a longer backoff, said once per attempt
                entry.error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                delay = min(self.max_delay, self.base_delay * 2 ** entry.failures)
                entry.failures += 1
                entry.state = ServiceState.BACKOFF
                entry.next_attempt_at = time.time() + delay
                self.say(f"local-stack: {entry.name} did not come back ({entry.error}); next try in {delay:.0f} s")
                continue
            now = time.time()
            entry.restarts += 1
            entry.state = ServiceState.RUNNING
            entry.up_since = entry.last_restart_at = now
            entry.next_attempt_at = None
            entry.error = None
            self.say(f"local-stack: {entry.name} restarted (restart #{entry.restarts})")
            return

    def rows(self) -> list[dict[str, Any]]:
        """One row per process: name, state, pid, restarts, last exit code and times (epoch s)."""
        procs = self.processes()
        out = []
        for name, proc in procs.items():
            entry = self.entry(name)
            out.append({
                "name": name, "state": entry.state.value, "pid": proc.pid if proc.alive() else None,
                "restarts": entry.restarts, "lastExit": entry.last_exit, "lastExitAt": entry.last_exit_at,
                "lastRestartAt": entry.last_restart_at, "nextAttemptAt": entry.next_attempt_at,
                "error": entry.error,
            })
        return out
