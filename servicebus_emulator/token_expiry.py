"""Links live only as long as a token covers them: the emulator checks again when a token expires.

Service Bus authorizes a link when it attaches and closes it once the token it was attached
under expires without a new ``put-token`` on ``$cbs`` (the SDK renews before expiry). Each
authorized link keeps the path and right it needs (:func:`remember`); :class:`ExpiryWatch` wakes
the connection at the earliest expiry among its grants, and :func:`uncovered` names the links no
unexpired grant covers any more, for the connection to detach with ``amqp:unauthorized-access``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from proton import Endpoint

from .sas import Grant

__all__ = ["ExpiryWatch", "remember", "uncovered"]

_ATTR = "sas_need"


def remember(link: Any, parts: list[str], right: str | None) -> None:
    """Record what ``link`` was authorized for (``right`` None: it needs no token, e.g. ``$cbs``)."""
    setattr(link, _ATTR, (list(parts), right) if right is not None else None)


def uncovered(connection: Any, grants: list[Grant], now: float) -> Iterator[Any]:
    """The open links of ``connection`` that no unexpired grant covers any more."""
    link = connection.link_head(Endpoint.LOCAL_ACTIVE)
    while link is not None:
        following = link.next(Endpoint.LOCAL_ACTIVE)
        need = getattr(link, _ATTR, None)
        if need is not None and not any(g.covers(need[0], need[1], now) for g in grants):
            yield link
        link = following


class ExpiryWatch:
    """One timer per connection, at the earliest expiry of its grants."""

    def __init__(self, on_expiry: Callable[[], None]):
        self.on_expiry = on_expiry
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def watch(self, grants: list[Grant], now: float) -> None:
        """Wake at the earliest expiry of ``grants`` still ahead (replacing a later wake-up)."""
        ahead = [g.expires_at for g in grants if g.expires_at > now]
        if not ahead:
            return
        at = min(ahead)
        if self._handle is not None and self._at is not None and self._at <= at:
            return
        self.cancel()
        loop = asyncio.get_running_loop()
        self._at = at
        self._handle = loop.call_later(max(0.0, at - now) + 0.01, self._fire)

    def _fire(self) -> None:
        self._handle, self._at = None, None
        self.on_expiry()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, None
