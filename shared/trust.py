"""Trust zones in the Functions: verify the proof of origin and police every envelope before the
router forwards, persist stores or the Web PubSub push sends (``socketio_servicebus.zones``).

The Function App is in the cloud zone (``SIO_ZONE``), so an on-premise zone's message is judged as
a cloud node would judge it. A refused message or envelope is never forwarded, stored or pushed;
it is counted (:attr:`~socketio_servicebus.zones.BusGuard.dropped`) and logged with the claimed
origin as ``forged_dropped reason=<reason>`` (Application Insights can count that line), at
warning - except what a site legitimately sends to its own sockets (an emit ``to=sid``, a
``disconnect`` of its own socket: python-socketio broadcasts both) and the router or the Web PubSub
push therefore cannot tell from a forgery: those (``room-outside-zone``, ``not-own-sockets``) are
logged at info there; nodes count them only when they would have touched one of their sockets.
The invocation then succeeds: a refused message is not retried or dead-lettered.
With zones off (no ``SIO_ZONE``) everything passes, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.appcontext import AppContext
from socketio_servicebus.wire.envelope import Batch, Envelope
from socketio_servicebus.zones import Reason, Verdict, claimed_origin

__all__ = ["admit", "Admitted"]

log = logging.getLogger("socketio_servicebus.zones")

#: refusals a site's legitimate traffic to its own sockets also gets outside its zone
_KEPT_IN_ZONE = frozenset({Reason.ROOM_OUTSIDE_ZONE, Reason.NOT_OWN_SOCKETS})


class Admitted:
    """What may pass: ``envelopes`` (policed one by one) and ``whole`` (every envelope passed and
    the proof of origin held: the message may be forwarded as is)."""

    def __init__(self, envelopes: list[Envelope], whole: bool, zone: str | None) -> None:
        self.envelopes = envelopes
        self.whole = whole
        self.zone = zone


def _drop(ctx: AppContext, where: str, region: str, msg: Any, props: dict[str, Any], batch: Batch,
          verdict: Verdict, n: int) -> None:
    assert ctx.guard is not None
    ctx.guard.count(verdict, n)
    level = logging.INFO if where != "persist" and verdict.reason in _KEPT_IN_ZONE else logging.WARNING
    log.log(level, "forged_dropped reason=%s %s[%s] message %s: %d envelope(s) from %s refused: %s",
                verdict.reason, where, region, getattr(msg, "message_id", None), n, claimed_origin(props, batch),
                verdict.detail or verdict.reason)


def admit(ctx: AppContext, where: str, region: str, msg: Any, body: bytes, props: dict[str, Any],
          batch: Batch) -> Admitted:
    """Which envelopes of ``batch`` (decoded from ``body``, sent with ``props``) may pass."""
    if ctx.guard is None:
        return Admitted(list(batch.envelopes), True, None)
    zone, verdict = ctx.guard.check_message(body, props, batch)
    if zone is None:
        _drop(ctx, where, region, msg, props, batch, verdict, len(batch.envelopes))
        return Admitted([], False, None)
    ok: list[Envelope] = []
    for env in batch.envelopes:
        v = ctx.guard.police(zone, env)
        if v.ok:
            ok.append(env)
        else:
            _drop(ctx, where, region, msg, props, batch, v, 1)
    return Admitted(ok, len(ok) == len(batch.envelopes), zone.name)
