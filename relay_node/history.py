"""History tokens for the sockets of this node: the ``relay:history_token`` event.

A client asks over its socket.io connection, after it has (re)joined a room::

    socket.emit("relay:history_token", {"room": "chat:lobby"[, "resume": <earlier token>]}, ack)
    # ack: {"ok": true, "token", "ns", "room", "expires", "since", "historyUrl"}
    #   or {"ok": false, "error": "..."}

and sends the token as ``Authorization: Bearer <token>`` to the Functions history API
(``GET /api/history?ns=<ns>&room=<room>``). A token is only minted for a room the socket is in
at that moment (never its own sid room), in the namespace it asked on, with the user of the
connection's claims (``sub`` or ``name``, when auth is on) and its sid, for ``ttl`` seconds.

The token's ``since`` is the time the socket joined the room (:mod:`relay_node.authorize`), so
the history API serves nothing older; ``0`` (the whole history) only when the ``authorize_room``
hook answered ``"read-history"``. A client back after a reconnect proves that it was in the room
before with ``resume``: a token this node's key signed for the same namespace, room and user,
expired at most :data:`RESUME_WINDOW` ago; the new token's ``since`` is then the earlier one.
Without a key (``SIO_HISTORY_TOKEN_KEY``) the node answers ``ok: false``. See docs/security.md.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from socketio_servicebus.history_token import MAX_TTL, TokenError, key_id, mint, verify

from . import authorize

__all__ = ["EVENT", "HistoryTokenIssuer"]

log = logging.getLogger("relay_node.history")

EVENT = "relay:history_token"
MAX_ROOM_CHARS = 512
#: how long after its expiry a token still proves an earlier membership (``resume``), seconds
RESUME_WINDOW = 24 * 3600


class HistoryTokenIssuer:
    """Registers :data:`EVENT` on the given namespaces of ``sio`` and counts what it answers."""

    def __init__(self, sio: Any, *, key: str | None, ttl: float, node_id: str, history_url: str | None = None):
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be in (0, {MAX_TTL}]")
        self.sio = sio
        self._key = key
        self.ttl = ttl
        self.node_id = node_id
        self.history_url = history_url
        self.issued = 0
        self.refused = 0
        self.resumed = 0

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @property
    def key_id(self) -> str | None:
        """The public id of the signing key (safe to log: a truncated hash)."""
        return key_id(self._key) if self._key is not None else None

    def install(self, namespaces: list[str]) -> None:
        for ns in namespaces:
            self.sio.on(EVENT, self._handler(ns), namespace=ns)

    def _handler(self, ns: str) -> Any:
        async def history_token(sid: str, data: Any = None) -> dict[str, Any]:
            return self.issue(ns, sid, data)

        return history_token

    def _user(self, ns: str, sid: str) -> str | None:
        try:
            claims = (self.sio.get_environ(sid, namespace=ns) or {}).get("relay.claims") or {}
        except KeyError:
            return None
        name = claims.get("sub") or claims.get("name")
        return str(name)[:256] if name else None

    def issue(self, ns: str, sid: str, data: Any) -> dict[str, Any]:
        room = data.get("room") if isinstance(data, dict) else data
        if self._key is None:
            return self._refuse("history tokens are not offered by this node (no SIO_HISTORY_TOKEN_KEY)")
        if not isinstance(room, str) or not room or len(room) > MAX_ROOM_CHARS:
            return self._refuse(f'{EVENT} takes {{"room": "<socket.io room>"}}')
        if room == sid or room not in self.sio.rooms(sid, namespace=ns):
            return self._refuse(f"not in room {room[:100]!r}: join it first")
        access = authorize.of(self.sio)
        user = self._user(ns, sid)
        membership = access.membership(self.sio, ns, sid, room)
        resume = data.get("resume") if isinstance(data, dict) else None
        if resume is not None:
            earlier = self._resumable(resume, ns, room, user)
            if earlier is None:
                return self._refuse("resume: not a token of this room and user, or expired too long ago")
            if earlier > 0 or membership.grant is authorize.Grant.READ_HISTORY:
                membership = access.extend(self.sio, ns, sid, room, earlier)
                self.resumed += 1
        now = time.time()
        since = math.floor(membership.token_since * 1000) / 1000  # whole ms, never after the join
        token = mint(self._key, ns=ns, room=room, since=since, sub=user, sid=sid, issuer=self.node_id,
                     ttl=self.ttl, now=now)
        self.issued += 1
        return {"ok": True, "token": token, "ns": ns, "room": room, "expires": int(now) + int(self.ttl),
                "since": since, "historyUrl": self.history_url}

    def _resumable(self, token: Any, ns: str, room: str, user: str | None) -> float | None:
        """The ``since`` of an earlier token of this room and user, or ``None``."""
        if self._key is None or not isinstance(token, str):
            return None
        try:
            claims = verify(token, [self._key], leeway=RESUME_WINDOW)
        except TokenError:
            return None
        if not claims.covers(ns, room) or claims.sub != user:
            return None
        return claims.since

    def _refuse(self, reason: str) -> dict[str, Any]:
        self.refused += 1
        return {"ok": False, "error": reason}
