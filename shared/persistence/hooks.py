"""Application hooks run by the persist function after an event is stored.

In the application's hooks module (named by the app setting ``SIO_HOOKS_MODULE``, imported once
when ``function_app.py`` is loaded)::

    from shared.persistence.hooks import hooks, StoredEvent

    @hooks.on("chat")
    async def moderate(event: StoredEvent) -> None:
        if "spam" in str(event.data):
            ...

    @hooks.on("*")            # every persisted event
    def audit(event: StoredEvent) -> None: ...

Semantics: **at least once**. Hooks run after the table write, in registration order. A hook that
raises makes the persist invocation fail; Service Bus redelivers the whole message, its events
are not stored again (same rows, same cursors), and *every* hook of that message runs again - so hooks must be
idempotent (``event.id`` is stable across retries). After ``maxDeliveryCount`` (5, from
``topology.json``) the message is dead-lettered in the region's ``persist`` subscription: never
silently lost.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["StoredEvent", "HookRegistry", "HookFailed", "hooks", "load_hooks_module"]

log = logging.getLogger("socketio_servicebus.hooks")


@dataclass(frozen=True)
class StoredEvent:
    """One persisted socket.io emit, as stored in Table Storage and returned by the history API."""

    id: str
    ns: str
    room: str | None
    event: str
    #: the socket.io arguments, exactly as emitted (a list: ``emit("ev", x)`` gives ``[x]``)
    args: list[Any]
    sid: str | None
    node: str
    region: str
    ts: float
    cursor: str = ""

    @property
    def data(self) -> Any:
        """The single argument for the common ``emit(event, data)`` case, else the list."""
        return self.args[0] if len(self.args) == 1 else self.args

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ns": self.ns,
            "room": self.room,
            "event": self.event,
            "data": self.data,
            "args": self.args,
            "sid": self.sid,
            "node": self.node,
            "region": self.region,
            "ts": self.ts,
            "cursor": self.cursor,
        }


Hook = Callable[[StoredEvent], Awaitable[None] | None]


class HookFailed(RuntimeError):
    """A hook raised; the persist invocation fails so Service Bus redelivers."""

    def __init__(self, hook: str, event: StoredEvent, cause: BaseException) -> None:
        self.hook = hook
        self.event_id = event.id
        super().__init__(f"hook {hook} failed for event {event.id} ({event.event!r}): {type(cause).__name__}: {cause}")


class HookRegistry:
    """Event name -> hooks. ``"*"`` matches every event."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Hook]] = {}

    def on(self, event: str) -> Callable[[Hook], Hook]:
        if not isinstance(event, str) or not event:
            raise ValueError("hooks.on() needs an event name (or '*')")

        def register(fn: Hook) -> Hook:
            self._hooks.setdefault(event, []).append(fn)
            return fn

        return register

    def handlers(self, event: str) -> list[Hook]:
        return [*self._hooks.get(event, ()), *self._hooks.get("*", ())]

    def clear(self) -> None:
        self._hooks.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self._hooks.values())

    async def run(self, event: StoredEvent) -> int:
        """Run the hooks for ``event`` in order; raise :class:`HookFailed` on the first failure."""
        n = 0
        for fn in self.handlers(event.event):
            name = getattr(fn, "__qualname__", repr(fn))
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("hook %s failed for event %s", name, event.id)
                raise HookFailed(name, event, exc) from exc
            n += 1
        return n


#: The registry the application's hooks module registers into.
hooks = HookRegistry()


def load_hooks_module(name: str | None) -> Any:
    """Import the module named by ``SIO_HOOKS_MODULE`` (its import registers the hooks)."""
    if not name:
        return None
    module = importlib.import_module(name)
    log.info("hooks module %s loaded: %d hook(s)", name, len(hooks))
    return module
