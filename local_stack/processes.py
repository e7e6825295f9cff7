"""Child processes of the local stack: start, wait until ready, log, stop by PID."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ProcessState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    #: exited without being asked to (crash, kill from outside): the supervisor restarts it
    EXITED = "exited"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class ManagedProcess:
    """One child process; its stdout+stderr go to a log file and a short in-memory tail."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_pattern: str | None = None
    log_dir: Path | None = None
    #: what :meth:`stop` sends first (Azurite saves its tables on SIGINT only)
    stop_signal: int = signal.SIGTERM
    proc: asyncio.subprocess.Process | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    matches: dict[str, str] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    @property
    def state(self) -> ProcessState:
        if self.proc is None:
            return ProcessState.NEW
        if self.proc.returncode is None:
            return ProcessState.STOPPING if self._stopping else ProcessState.RUNNING
        return ProcessState.STOPPED if self._stopping else ProcessState.EXITED

    async def start(self, ready_within: float = 30.0) -> None:
        """Start the process (again, after it exited: same arguments, the log file is appended to)."""
        if self.proc is not None:  # a restart: reap the old process, its reader ends with its pipe
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        self._ready = asyncio.Event()
        self._stopping = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            limit=1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")
        if self.ready_pattern is None:
            return
        try:
            await asyncio.wait_for(self._ready.wait(), ready_within)
        except TimeoutError as exc:
            raise RuntimeError(
                f"{self.name} did not become ready within {ready_within:.0f} s; last output:\n" + "\n".join(self.tail)
            ) from exc

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115, ASYNC230 - small appends, closed below
        try:
            stream = self.proc.stdout
            while True:
                try:
                    line = await stream.readline()
                except ValueError:  # a line longer than the limit: keep what fits
                    line = await stream.read(64 * 1024)
                if not line:
                    break
                if log is not None:
                    log.write(line)
                    log.flush()
                text = line.decode("utf-8", "replace").rstrip()
                self.tail.append(text)
                if self.ready_pattern and not self._ready.is_set():
                    match = re.search(self.ready_pattern, text)
                    if match:
                        self.matches.update({k: v for k, v in match.groupdict().items() if v})
                        self._ready.set()
        finally:
            if log is not None:
                log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float = 15.0) -> int | None:
        """``stop_signal`` (SIGTERM) to the process group, SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return None
        self._stopping = True
        self.signal(self.stop_signal)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.signal(signal.SIGKILL)
        code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        return code


def python_args(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
