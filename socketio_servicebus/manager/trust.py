"""The manager's trust-zone hooks (``socketio_servicebus.zones``): sign what it sends; verify,
police and bound what it receives. With zones off only the bounds apply (registry cap, hello
rate limit), so an unsigned fleet behaves as before apart from those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.wire.envelope import Batch, Envelope
from socketio_servicebus.zones import BusGuard, ZoneSet
from socketio_servicebus.zones.bounds import HelloLimiter, NodeAdmission
from socketio_servicebus.zones.config import Zone, ZoneKind
from socketio_servicebus.zones.gate import ReceiveGate, props_of

__all__ = ["Trust", "Checked"]

#: the zone every node is in when zones are off (registry cap and hello limit only)
_OPEN = Zone("-", ZoneKind.CLOUD)


@dataclass(slots=True)
class Checked:
    """One received message whose proof of origin held (or zones are off)."""

    zone: Zone | None
    batch: Batch
    msg_id: Any = None
    props: Mapping[str, Any] = field(default_factory=dict)


class Trust:
    def __init__(self, zones: ZoneSet | None, metrics: ManagerMetrics, *, max_nodes: int,
                 heartbeat_interval: float, logger: logging.Logger) -> None:
        self.metrics = metrics
        self.log = logger
        self.gate: ReceiveGate | None = None
        self.signer: Callable[[Batch, bytes], Mapping[str, str]] | None = None
        if zones is not None:
            guard = BusGuard(zones, metrics.forged_dropped)
            if not guard.can_sign:
                raise ValueError(f"zone {zones.local_zone!r}: the manager needs the zone's private key to sign")
            self.signer = guard.sign
            self.gate = ReceiveGate(guard, max_nodes=max_nodes, hello_interval=heartbeat_interval, logger=logger)
            self.admission = self.gate.admission
            self.hello = self.gate.hello
        else:
            self.admission = NodeAdmission(max_nodes)
            self.hello = HelloLimiter(heartbeat_interval, per_zone=max_nodes)

    def _zone_of(self, node: str) -> Zone:
        """The zone that signs for ``node`` (its message passed the policy, so it owns it)."""
        if self.gate is None:
            return _OPEN
        zones = self.gate.guard.zones.zones.values()
        owner = next((z for z in zones if z.kind is ZoneKind.ONPREM and z.owns_node(node)), None)
        return owner or next((z for z in zones if z.kind is ZoneKind.CLOUD), _OPEN)

    def message(self, msg: Any, body: bytes, batch: Batch) -> Checked | None:
        """``None``: refused (counted per envelope, logged); the caller completes the message."""
        if self.gate is None:
            return Checked(None, batch)
        props = props_of(msg)
        zone = self.gate.message(body, props, batch, getattr(msg, "message_id", None))
        return None if zone is None else Checked(zone, batch, getattr(msg, "message_id", None), props)

    def envelope(self, checked: Checked, env: Envelope, touches_local: Callable[[Envelope], bool]) -> bool:
        if self.gate is None or checked.zone is None:
            return True
        before = self.gate.untouched
        ok = self.gate.envelope(checked.zone, env, checked.props, checked.batch, checked.msg_id, touches_local)
        self.metrics.zone_untouched_dropped += self.gate.untouched - before
        return ok

    def join(self, checked: Checked, env: Envelope, registered: Collection[str]) -> bool:
        """May the heartbeat's node enter the registry? (Always, once it is in it.)"""
        if env.origin_node in registered:
            return True
        if self.gate is not None and checked.zone is not None:
            return self.gate.join(checked.zone, env, registered, checked.props, checked.batch)
        verdict = self.admission.admit(env.origin_node, _OPEN, registered)
        if not verdict.ok and verdict.reason is not None:
            self.metrics.forged_dropped[verdict.reason.value] += 1
            self.log.warning("node %s not registered: %s", env.origin_node, verdict.detail)
        return verdict.ok

    def answer_hello(self, env: Envelope) -> bool:
        """May this node answer ``env``'s node now? (At most once per interval per node, and K
        times per interval per on-premise zone; the rest counted in ``hello_limited``.)"""
        zone = self._zone_of(env.origin_node)
        cap = zone.max_nodes if zone.kind is ZoneKind.ONPREM else None
        ok = self.hello.allow(env.origin_node, zone.name, time.monotonic(), cap)
        if not ok:
            self.metrics.hello_limited += 1
        return ok
