"""Bounds on amplification over the bus (pure; the caller passes the clock).

* :class:`HelloLimiter`: a heartbeat with ``hello`` makes every node answer (1 in, N out). Each
  node answers a given origin node at most once per ``interval`` and an origin zone at most
  ``per_zone`` times per ``interval``; the rest are counted (``hello_limited``), not answered.
* :class:`NodeAdmission`: a node id enters the registry only if its zone signs for it, the zone
  has fewer than its ``max_nodes`` (K) ids registered, and the registry holds fewer than
  ``max_nodes`` in all. A refused id is never registered, so it never makes ``fetch_sockets`` wait.
"""

from __future__ import annotations

from collections.abc import Collection

from socketio_servicebus.zones.config import Zone, ZoneKind
from socketio_servicebus.zones.policy import ACCEPT, Reason, Verdict

__all__ = ["HelloLimiter", "NodeAdmission", "DEFAULT_MAX_REGISTRY_NODES"]

#: Default cap on the number of other nodes one manager keeps in its registry.
DEFAULT_MAX_REGISTRY_NODES = 1000


class HelloLimiter:
    def __init__(self, interval: float, per_zone: int = 64) -> None:
        self.interval = interval
        self.per_zone = per_zone
        self._last: dict[str, float] = {}
        self._zone_window: dict[str, tuple[float, int]] = {}
        self.limited = 0

    def allow(self, node: str, zone: str, now: float, per_zone: int | None = None) -> bool:
        """May this node answer a hello from ``node`` of ``zone`` now? (``per_zone`` overrides the default cap)"""
        cap = self.per_zone if per_zone is None else per_zone
        last = self._last.get(node)
        start, n = self._zone_window.get(zone, (now, 0))
        if now - start >= self.interval:
            start, n = now, 0
        if (last is not None and now - last < self.interval) or n >= cap:
            self.limited += 1
            return False
        self._last[node] = now
        self._zone_window[zone] = (start, n + 1)
        if len(self._last) > 4 * self.per_zone + 1024:  # forget old entries: memory stays bounded
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        return True


class NodeAdmission:
    def __init__(self, max_nodes: int = DEFAULT_MAX_REGISTRY_NODES) -> None:
        if max_nodes < 1:
            raise ValueError("max_nodes must be >= 1")
        self.max_nodes = max_nodes
        self._zone_of: dict[str, str] = {}

    def admit(self, node: str, zone: Zone, registered: Collection[str]) -> Verdict:
        """May ``node`` (signed for by ``zone``) join a registry that holds ``registered`` now?"""
        if node in registered:
            return ACCEPT
        if not zone.owns_node(node):
            return Verdict.refuse(Reason.NODE_NOT_IN_ZONE, f"zone {zone.name} does not sign for node {node!r}")
        self._zone_of = {n: z for n, z in self._zone_of.items() if n in registered}
        if len(registered) >= self.max_nodes:
            return Verdict.refuse(Reason.REGISTRY_FULL, f"{len(registered)} nodes registered (max {self.max_nodes})")
        in_zone = sum(1 for z in self._zone_of.values() if z == zone.name)
        if zone.kind is ZoneKind.ONPREM and in_zone >= zone.max_nodes:
            return Verdict.refuse(Reason.ZONE_NODE_CAP,
                                  f"zone {zone.name} already has {in_zone} nodes (max {zone.max_nodes})")
        self._zone_of[node] = zone.name
        return ACCEPT
