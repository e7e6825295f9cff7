"""History tokens for the sockets of this node: the ``relay:history_token`` event.

A client asks over its socket.io connection, after it has (re)joined a room::

    socket.emit("relay:history_token", {"room": "chat:lobby"}, ack)
    # ack: {"ok": true, "token", "ns", "room", "expires", "historyUrl"}
    #   or {"ok": false, "error": "..."}

and sends the token as ``Authorization: Bearer <token>`` to the Functions history API
(``GET /api/history?ns=<ns>&room=<room>``). A token is only minted for a room the socket is in
at that moment (never its own sid room), in the namespace it asked on, with the user of the
connection's claims (``sub`` or ``name``, when auth is on) and its sid, for ``ttl`` seconds.
Without a key (``SIO_HISTORY_TOKEN_KEY``) the node answers ``ok: false``. See docs/security.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from socketio_servicebus.history_token import MAX_TTL, key_id, mint

__all__ = ["EVENT", "HistoryTokenIssuer"]

log = logging.getLogger("relay_node.history")

EVENT = "relay:history_token"
MAX_ROOM_CHARS = 512


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
        now = time.time()
        token = mint(self._key, ns=ns, room=room, sub=self._user(ns, sid), sid=sid, issuer=self.node_id,
                     ttl=self.ttl, now=now)
        self.issued += 1
        return {"ok": True, "token": token, "ns": ns, "room": room, "expires": int(now) + int(self.ttl),
                "historyUrl": self.history_url}

    def _refuse(self, reason: str) -> dict[str, Any]:
        self.refused += 1
        return {"ok": False, "error": reason}
