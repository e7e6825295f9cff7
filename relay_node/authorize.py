"""Room authorization: the app's ``authorize_room(claims, room)`` hook, and since when a socket is in a room.

The relay node takes one hook (``--authorize-room package.module:function``, env
``RELAY_AUTHORIZE_ROOM``), plain or async::

    def authorize_room(claims: dict, room: str) -> bool | Literal["read-history"]: ...

``claims`` are the connection's JWT claims (``{}`` while client auth is off), ``room`` the
socket.io room asked for (``chat:<name>`` in the demo app). ``True`` lets the socket join;
``"read-history"`` lets it join and read the room's whole stored history; anything else (``False``,
``None``, an exception) refuses. The default, :func:`allow_join`, lets anyone join and reads no
history older than the join.

Apps ask :meth:`RoomAccess.admit` before ``enter_room`` (the demo's ``join`` does). The answer and
the time of the join are kept in the connection's environ, so they go with the socket. History
tokens (:mod:`relay_node.history`) carry that time as ``since``; the history API serves nothing
older, unless the grant was ``"read-history"`` (``since`` 0). See docs/security.md.
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["READ_HISTORY", "Grant", "Membership", "RoomAccess", "allow_join", "attach", "of"]

log = logging.getLogger("relay_node.authorize")

READ_HISTORY = "read-history"
#: where the memberships of a connection live in its environ: ``{(namespace, room): Membership}``
ENVIRON_KEY = "relay.rooms"
_ATTR = "relay_room_access"

Hook = Callable[[dict[str, Any], str], "bool | str | None | Awaitable[bool | str | None]"]


class Grant(enum.Enum):
    DENIED = "denied"
    JOIN = "join"
    READ_HISTORY = READ_HISTORY


@dataclass(frozen=True)
class Membership:
    #: the time the socket joined (seconds since the epoch); ``0`` = it may read the whole history
    since: float
    grant: Grant

    @property
    def token_since(self) -> float:
        return 0.0 if self.grant is Grant.READ_HISTORY else self.since


def allow_join(claims: dict[str, Any], room: str) -> bool:
    """The demo's default: anyone may join any room; no history older than the join."""
    return True


def _grant(result: Any) -> Grant:
    if result is True:
        return Grant.JOIN
    if result == READ_HISTORY:
        return Grant.READ_HISTORY
    return Grant.DENIED


class RoomAccess:
    """Asks the hook, keeps what it answered and when; counts refusals."""

    def __init__(self, hook: Hook = allow_join, *, clock: Callable[[], float] = time.time):
        self.hook = hook
        self.clock = clock
        self.refused = 0

    def _rooms(self, sio: Any, ns: str, sid: str) -> dict[tuple[str, str], Membership] | None:
        try:
            environ = sio.get_environ(sid, namespace=ns)
        except KeyError:
            return None
        if environ is None:
            return None
        rooms: dict[tuple[str, str], Membership] = environ.setdefault(ENVIRON_KEY, {})
        return rooms

    @staticmethod
    def claims(sio: Any, ns: str, sid: str) -> dict[str, Any]:
        try:
            environ = sio.get_environ(sid, namespace=ns) or {}
        except KeyError:
            return {}
        claims = environ.get("relay.claims") or {}
        return dict(claims) if isinstance(claims, dict) else {}

    async def admit(self, sio: Any, ns: str, sid: str, room: str) -> Grant:
        """The hook's answer for ``sid`` joining ``room``; a socket already in it keeps its ``since``."""
        try:
            result = self.hook(self.claims(sio, ns, sid), room)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("authorize_room failed for room %r; refusing", room[:100])
            result = False
        grant = _grant(result)
        rooms = self._rooms(sio, ns, sid)
        if grant is Grant.DENIED or rooms is None:
            self.refused += 1
            return Grant.DENIED
        known = rooms.get((ns, room))
        rooms[(ns, room)] = Membership(known.since if known else self.clock(), grant)
        return grant

    def membership(self, sio: Any, ns: str, sid: str, room: str) -> Membership:
        """What was granted for a room the socket is in; a room an app entered without asking
        counts from the first time it is looked at (nothing older)."""
        rooms = self._rooms(sio, ns, sid)
        if rooms is None:
            return Membership(self.clock(), Grant.JOIN)
        known = rooms.get((ns, room))
        if known is None:
            known = rooms[(ns, room)] = Membership(self.clock(), Grant.JOIN)
        return known

    def extend(self, sio: Any, ns: str, sid: str, room: str, since: float) -> Membership:
        """Move the start of the membership back to ``since`` (a resumed earlier membership)."""
        current = self.membership(sio, ns, sid, room)
        if 0 < since < current.since:
            current = Membership(since, current.grant)
            rooms = self._rooms(sio, ns, sid)
            if rooms is not None:
                rooms[(ns, room)] = current
        return current

    def forget(self, sio: Any, ns: str, sid: str, room: str) -> None:
        rooms = self._rooms(sio, ns, sid)
        if rooms is not None:
            rooms.pop((ns, room), None)


def attach(sio: Any, access: RoomAccess) -> RoomAccess:
    setattr(sio, _ATTR, access)
    return access


def of(sio: Any) -> RoomAccess:
    """The server's :class:`RoomAccess` (a default one, :func:`allow_join`, if none is attached)."""
    access = getattr(sio, _ATTR, None)
    if not isinstance(access, RoomAccess):
        access = attach(sio, RoomAccess())
    return access
