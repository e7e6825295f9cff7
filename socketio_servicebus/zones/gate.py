"""The receiving side of trust zones in a relay node or emitter (pure apart from logging).

:class:`ReceiveGate` is what the manager asks, per received message and per envelope: does the
proof of origin hold, may this zone do this here, may this node id join the registry, may this
hello be answered. Every refusal is counted by reason (``forged_dropped{reason=...}`` in
:meth:`ReceiveGate.snapshot`) and logged at warning with the claimed origin; the log is bounded
(:data:`LOG_LINES_PER_MINUTE` per reason, then one line saying how many were not logged), so a
flood of forgeries cannot flood the log too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from socketio_servicebus.wire.envelope import Batch, Envelope
from socketio_servicebus.zones.bounds import DEFAULT_MAX_REGISTRY_NODES, HelloLimiter, NodeAdmission
from socketio_servicebus.zones.config import Zone, ZoneKind
from socketio_servicebus.zones.guard import BusGuard, claimed_origin
from socketio_servicebus.zones.policy import Reason, Verdict

__all__ = ["ReceiveGate", "props_of", "LOG_LINES_PER_MINUTE"]

LOG_LINES_PER_MINUTE = 10
_NO_OP_ELSEWHERE = frozenset({Reason.ROOM_OUTSIDE_ZONE, Reason.NOT_OWN_SOCKETS})


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def props_of(msg: Any) -> dict[str, Any]:
    """Application properties of a received SDK message with ``str`` keys and values."""
    props = getattr(msg, "application_properties", None) or {}
    return {str(_text(k)): _text(v) for k, v in props.items()}


class ReceiveGate:
    def __init__(self, guard: BusGuard, *, max_nodes: int = DEFAULT_MAX_REGISTRY_NODES,
                 hello_interval: float = 5.0, logger: logging.Logger | None = None) -> None:
        self.guard = guard
        self.admission = NodeAdmission(max_nodes)
        self.hello = HelloLimiter(hello_interval, per_zone=max_nodes)
        self.log = logger or logging.getLogger("socketio_servicebus.zones")
        self._log_window: dict[str, tuple[float, int, int]] = {}
        #: refused envelopes that would not have touched a socket here (not counted as forged)
        self.untouched = 0

    # ------------------------------------------------------------------ checks
    def message(self, body: bytes, props: Mapping[str, Any], batch: Batch, msg_id: Any = None) -> Zone | None:
        """The zone that signed this message, or ``None`` (refused: counted per envelope, logged)."""
        zone, verdict = self.guard.check_message(body, props, batch)
        if zone is None:
            self._refused(verdict, len(batch.envelopes), props, batch, msg_id)
        return zone

    def envelope(self, zone: Zone, env: Envelope, props: Mapping[str, Any], batch: Batch, msg_id: Any = None,
                 touches_local: Callable[[Envelope], bool] | None = None) -> bool:
        """May ``env`` be handled here? A refused emit or socket operation that would not reach
        any socket of this node (``touches_local`` says so) is a no-op here anyway: not handled,
        and not counted either - python-socketio broadcasts a site's ``to=sid`` emits and the
        disconnects of its own sockets to every node, and those are not forgeries."""
        verdict = self.guard.police(zone, env)
        if verdict.ok:
            return True
        if verdict.reason in _NO_OP_ELSEWHERE and touches_local is not None and not touches_local(env):
            self.untouched += 1
            return False
        self._refused(verdict, 1, props, batch, msg_id, env)
        return False

    def join(self, zone: Zone, env: Envelope, registered: Collection[str], props: Mapping[str, Any],
             batch: Batch) -> bool:
        """May the heartbeat's node enter (or stay in) the registry?"""
        verdict = self.admission.admit(env.origin_node, zone, registered)
        if not verdict.ok:
            self._refused(verdict, 1, props, batch, None, env)
        return verdict.ok

    def hello_reply(self, zone: Zone, env: Envelope) -> bool:
        """May a hello from this node be answered now? (Not answered = counted in ``hello_limited``.)"""
        cap = zone.max_nodes if zone.kind is ZoneKind.ONPREM else None
        return self.hello.allow(env.origin_node, zone.name, time.monotonic(), cap)

    # ------------------------------------------------------------------ counting / logging
    def snapshot(self) -> dict[str, int]:
        out = {f"forged_dropped{{reason={r}}}": n for r, n in sorted(self.guard.dropped.items())}
        out["hello_limited"] = self.hello.limited
        out["zone_untouched_dropped"] = self.untouched
        return out

    def _refused(self, verdict: Verdict, n: int, props: Mapping[str, Any], batch: Batch, msg_id: Any,
                 env: Envelope | None = None) -> None:
        self.guard.count(verdict, n)
        reason = verdict.reason.value if verdict.reason is not None else "refused"
        now = time.monotonic()
        start, logged, skipped = self._log_window.get(reason, (now, 0, 0))
        if now - start >= 60.0:
            if skipped:
                self.log.warning("forged_dropped reason=%s: %d more refusal(s) not logged in the last minute",
                                 reason, skipped)
            start, logged, skipped = now, 0, 0
        if logged >= LOG_LINES_PER_MINUTE:
            self._log_window[reason] = (start, logged, skipped + 1)
            return
        self._log_window[reason] = (start, logged + 1, skipped)
        what = f"envelope {env.id} ({env.kind.value})" if env is not None else f"{n} envelope(s)"
        self.log.warning("forged_dropped reason=%s: message %s, %s from %s refused: %s", reason, msg_id, what,
                         claimed_origin(props, batch), verdict.detail or reason)
