"""Background tasks whose end is always observed (asyncio only).

A task started with :meth:`Supervisor.spawn` is either

* *long-lived* (``restart=True``): it must run until :meth:`Supervisor.stop`. If it raises,
  returns or is cancelled from outside before that, its end is logged (with the traceback),
  counted in ``task_failures``, recorded in :attr:`Supervisor.failures` (the manager's
  ``health()`` is then not ready, with the reason) and it is started again after a backoff
  delay; the record is cleared when the new run starts; or
* *one-shot* (``restart=False``): an exception is logged with its traceback and counted;
  nothing is restarted.

Nothing is reported after :meth:`Supervisor.stop`: the owner is shutting its tasks down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.retry import backoff

__all__ = ["Supervisor"]

TaskFactory = Callable[[], Coroutine[Any, Any, Any]]


class Supervisor:
    def __init__(
        self,
        *,
        prefix: str,
        logger: logging.Logger,
        metrics: ManagerMetrics,
        on_change: Callable[[], None],
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.prefix = prefix
        self.logger = logger
        self.metrics = metrics
        self.on_change = on_change
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        #: long-lived tasks that ended before stop(): name -> reason (cleared on restart)
        self.failures: dict[str, str] = {}
        self._named: dict[str, asyncio.Task[Any]] = {}
        self._all: set[asyncio.Task[Any]] = set()
        self._delays: dict[str, Iterator[float]] = {}
        self._restarts: dict[str, asyncio.TimerHandle] = {}
        self._stopping = False

    # ------------------------------------------------------------------ starting
    def spawn(self, name: str, factory: TaskFactory, *, restart: bool) -> asyncio.Task[Any]:
        """Start ``factory()`` as task ``name``; see the module docstring for ``restart``."""
        task = asyncio.get_running_loop().create_task(factory(), name=f"{self.prefix}-{name}")
        self._all.add(task)
        started = time.monotonic()
        if restart:
            self._named[name] = task
            if self.failures.pop(name, None) is not None:
                self.logger.warning("background task %s restarted", name)
                self.on_change()
        task.add_done_callback(lambda t: self._done(t, name, factory, restart, started))
        return task

    def task(self, name: str) -> asyncio.Task[Any] | None:
        """The current run of long-lived task ``name``."""
        return self._named.get(name)

    def __len__(self) -> int:
        return len(self._all)

    # ------------------------------------------------------------------ observing
    def _done(self, task: asyncio.Task[Any], name: str, factory: TaskFactory, restart: bool,
              started: float) -> None:
        self._all.discard(task)
        if self._stopping:
            if not task.cancelled() and task.exception() is not None:
                self.logger.warning("background task %s failed while stopping", name,
                                    exc_info=task.exception())
            return
        if not restart:
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.metrics.task_failures += 1
                self.logger.error("background task %s failed", name, exc_info=exc)
            return
        if task.cancelled():
            reason = "cancelled"
            self.logger.error("background task %s was cancelled from outside", name)
        elif (exc := task.exception()) is not None:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            self.logger.error("background task %s died", name, exc_info=exc)
        else:
            reason = "returned"
            self.logger.error("background task %s returned; it should run until close()", name)
        self.metrics.task_failures += 1
        self.failures[name] = reason
        if time.monotonic() - started > self.backoff_max or name not in self._delays:
            self._delays[name] = backoff(self.backoff_initial, self.backoff_max)
        delay = next(self._delays[name])
        self.logger.warning("restarting background task %s in %.1fs", name, delay)
        self._restarts[name] = asyncio.get_running_loop().call_later(
            delay, lambda: self._restart(name, factory))
        self.on_change()

    def _restart(self, name: str, factory: TaskFactory) -> None:
        self._restarts.pop(name, None)
        if not self._stopping:
            self.spawn(name, factory, restart=True)

    # ------------------------------------------------------------------ stopping
    def stop_supervising(self) -> None:
        """From now on nothing is restarted or reported (the owner is closing)."""
        self._stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()

    async def cancel(self, names: tuple[str, ...] | None = None, grace: float = 5.0) -> list[str]:
        """Cancel the named long-lived tasks (``None``: every task) and wait for them.

        Returns the names of tasks still running after ``grace`` seconds.
        """
        current = asyncio.current_task()
        if names is None:
            pending = {t for t in self._all if t is not current}
        else:
            pending = {t for n in names if (t := self._named.get(n)) is not None and not t.done()}
        deadline = time.monotonic() + grace
        while pending and time.monotonic() < deadline:
            # Python 3.11's wait_for (used inside the SDK's socket reads) can swallow a
            # cancellation that races with a completed read: cancel again until they stop.
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        return sorted(t.get_name() for t in pending)
