"""Node registry built from heartbeats (pure; the caller passes the clock).

Each known node is in one :class:`NodeState`:

* ``LIVE``: heard from recently; requests wait for its answer.
* ``SILENT``: it missed its heartbeats (none for two of its announced intervals); requests
  still go to it (they are broadcast) but do not wait for it.
* ``UNRESPONSIVE``: it let a request time out since its last heartbeat; not waited for either,
  so a dead node costs one request its timeout, not every request until it is forgotten.

A heartbeat makes a node ``LIVE`` again. A node without heartbeat for ``node_timeout`` seconds, or
that says goodbye, is forgotten (:meth:`NodeRegistry.prune`, :meth:`NodeRegistry.remove`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["NodeInfo", "NodeRegistry", "NodeState"]


class NodeState(enum.Enum):
    LIVE = "live"
    SILENT = "silent"
    UNRESPONSIVE = "unresponsive"


@dataclass(slots=True)
class NodeInfo:
    node_id: str
    region: str
    clients: int
    last_seen: float  # wall clock (epoch seconds) of the last heartbeat received
    seen_mono: float  # monotonic time of the same, used for expiry
    interval: float  # the heartbeat interval the node announces
    #: set by a request it did not answer in time; cleared by its next heartbeat
    unresponsive: bool = False

    def state(self, mono: float) -> NodeState:
        if self.unresponsive:
            return NodeState.UNRESPONSIVE
        if mono - self.seen_mono > 2 * self.interval:
            return NodeState.SILENT
        return NodeState.LIVE

    def as_dict(self, mono: float | None = None) -> dict[str, object]:
        d: dict[str, object] = {"node_id": self.node_id, "region": self.region, "clients": self.clients,
                                "last_seen": self.last_seen}
        if mono is not None:
            d["state"] = self.state(mono).value
        return d


class NodeRegistry:
    """Other nodes, each known until ``node_timeout`` seconds pass without a heartbeat
    or until it says goodbye."""

    def __init__(self, node_timeout: float, default_interval: float | None = None) -> None:
        self.node_timeout = node_timeout
        #: heartbeat interval assumed for nodes that do not announce one
        self.default_interval = default_interval if default_interval is not None else node_timeout / 3
        self._nodes: dict[str, NodeInfo] = {}

    def seen(self, node_id: str, region: str, clients: int, wall: float, mono: float,
             interval: float | None = None) -> bool:
        """Record a heartbeat; ``True`` when the node was not known (a join)."""
        if interval is None or not 0 < interval < self.node_timeout:
            interval = self.default_interval
        info = self._nodes.get(node_id)
        if info is None:
            self._nodes[node_id] = NodeInfo(node_id, region, clients, wall, mono, interval)
            return True
        info.region, info.clients, info.last_seen, info.seen_mono = region, clients, wall, mono
        info.interval, info.unresponsive = interval, False
        return False

    def remove(self, node_id: str) -> bool:
        return self._nodes.pop(node_id, None) is not None

    def prune(self, mono: float) -> list[str]:
        """Forget nodes silent for longer than ``node_timeout``; returns their ids."""
        gone = [n for n, i in self._nodes.items() if mono - i.seen_mono > self.node_timeout]
        for n in gone:
            del self._nodes[n]
        return gone

    def mark_unresponsive(self, node_ids: set[str]) -> None:
        """These nodes let a request time out: do not wait for them until they send a heartbeat."""
        for n in node_ids:
            info = self._nodes.get(n)
            if info is not None:
                info.unresponsive = True

    def region_of(self, node_id: str) -> str | None:
        info = self._nodes.get(node_id)
        return info.region if info is not None else None

    def live(self, mono: float) -> list[NodeInfo]:
        """Every node not yet forgotten (not expired), whatever its state."""
        return [i for i in self._nodes.values() if mono - i.seen_mono <= self.node_timeout]

    def live_ids(self, mono: float) -> set[str]:
        return {i.node_id for i in self.live(mono)}

    def awaited_ids(self, mono: float) -> set[str]:
        """The nodes a request waits for: known and in state ``LIVE``."""
        return {i.node_id for i in self.live(mono) if i.state(mono) is NodeState.LIVE}

    def __len__(self) -> int:
        return len(self._nodes)
