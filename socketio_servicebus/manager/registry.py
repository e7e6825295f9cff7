"""Node registry built from heartbeats (pure; the caller passes the clock)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeInfo", "NodeRegistry"]


@dataclass(slots=True)
class NodeInfo:
    node_id: str
    region: str
    clients: int
    last_seen: float  # wall clock (epoch seconds) of the last heartbeat received
    seen_mono: float  # monotonic time of the same, used for expiry

    def as_dict(self) -> dict[str, object]:
        return {"node_id": self.node_id, "region": self.region, "clients": self.clients, "last_seen": self.last_seen}


class NodeRegistry:
    """Other nodes, each alive until ``node_timeout`` seconds pass without a heartbeat
    or until it says goodbye."""

    def __init__(self, node_timeout: float) -> None:
        self.node_timeout = node_timeout
        self._nodes: dict[str, NodeInfo] = {}

    def seen(self, node_id: str, region: str, clients: int, wall: float, mono: float) -> bool:
        """Record a heartbeat; ``True`` when the node was not known (a join)."""
        info = self._nodes.get(node_id)
        if info is None:
            self._nodes[node_id] = NodeInfo(node_id, region, clients, wall, mono)
            return True
        info.region, info.clients, info.last_seen, info.seen_mono = region, clients, wall, mono
        return False

    def remove(self, node_id: str) -> bool:
        return self._nodes.pop(node_id, None) is not None

    def prune(self, mono: float) -> list[str]:
        """Forget nodes silent for longer than ``node_timeout``; returns their ids."""
        gone = [n for n, i in self._nodes.items() if mono - i.seen_mono > self.node_timeout]
        for n in gone:
            del self._nodes[n]
        return gone

    def live(self, mono: float) -> list[NodeInfo]:
        return [i for i in self._nodes.values() if mono - i.seen_mono <= self.node_timeout]

    def live_ids(self, mono: float) -> set[str]:
        return {i.node_id for i in self.live(mono)}

    def __len__(self) -> int:
        return len(self._nodes)
