"""Cross-region routing decisions (pure: no I/O).

The Function App serves every region of a deployment. Each region has its own Service Bus
namespace with the topic ``socketio``; the router function of region X receives, through X's
``router`` subscription, every message that still needs forwarding and republishes it into the
topics of the regions it should reach next.

**The region graph.** ``SIO_REGION_MAP`` (see ``infra/README.md``) maps a region name to
``{"fullyQualifiedNamespace": ..., "neighbors": [...]}``. ``neighbors`` is optional:

* a region **with** ``neighbors`` forwards exactly to those regions (directed edges, as listed);
* a region **without** it forwards to every other region that has no ``neighbors`` list either
  (the full mesh) and to every region that names it in its own ``neighbors`` (its spokes).

So a full mesh needs no configuration at all, and an on-premise/edge site that lists only its hub
(``"neighbors": ["westeurope"]``) is reachable only through that hub: the other mesh regions do
not forward to it directly.

**Exactly once, loop-free.** A message first published in region O (``visited[0]``) is delivered
along the breadth-first spanning tree of the graph rooted at O (ties broken by region name, so every
router computes the same tree from the same map). The router of X forwards only to X's children in
O's tree, never to a region already in ``visited`` and never beyond ``len(regions)`` hops. Each
reachable region therefore receives one copy per original publish (redeliveries aside), and no
copy ever returns to a region it has visited.

**route_done.** A copy is sent with ``sio_route_done = TRUE`` when its target has no children of
its own in O's tree: the target's ``router`` subscription rule (``sio_route_done IS NULL AND
(sio_target_node IS NULL OR sio_target_region <> sio_origin_region)``) then skips it, saving an
invocation per leaf region.

**Targeted messages** (replies to ``fetch_sockets`` / ``server_side_emit``, callbacks: a
``target_node`` and its ``target_region``) go to one region only, along a shortest path of the
graph from the region at hand that avoids every visited region: each router forwards one copy to
the next region of that path, and the copy that reaches the target region carries
``sio_route_done``. Regions off the path never see the message; a target region the graph cannot
reach is :class:`Unroutable` (``unreachable``).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REGION_NAME_RE",
    "RegionMapError",
    "Unroutable",
    "Region",
    "RegionMap",
    "Hop",
    "RoutePlan",
]

#: Region names become parts of app setting and function names: keep them plain.
REGION_NAME_RE = re.compile(r"^[a-z0-9]{1,40}$")


class RegionMapError(ValueError):
    """``SIO_REGION_MAP`` cannot be used; the message says what to fix."""


class Unroutable(ValueError):
    """A message the router can never forward, whatever the number of retries.

    ``reason`` is a short code (``malformed:<envelope reason>``, ``unknown-region``,
    ``region-mismatch``, ``loop``, ``too-many-hops``, ``unreachable``); it is logged with the message id and used as the
    dead-letter reason where the runtime lets us dead-letter (see ``docs/functions.md``).
    """

    def __init__(self, reason: str, description: str) -> None:
        self.reason = reason
        self.description = description
        super().__init__(f"{reason}: {description}")


@dataclass(frozen=True)
class Region:
    name: str
    fully_qualified_namespace: str | None = None
    neighbors: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Hop:
    """One copy to send: into ``target``'s topic, with ``route_done`` set when it is a leaf."""

    target: str
    route_done: bool


@dataclass(frozen=True)
class RoutePlan:
    hops: tuple[Hop, ...] = ()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(h.target for h in self.hops)


@dataclass(frozen=True)
class RegionMap:
    regions: Mapping[str, Region]
    _out: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | None) -> RegionMap:
        """Parse the ``SIO_REGION_MAP`` JSON (or an already parsed dict). Strict."""
        if value is None or value == "":
            return cls.from_regions({})
        if isinstance(value, str):
            try:
                data = json.loads(value)
            except json.JSONDecodeError as exc:
                raise RegionMapError(f"SIO_REGION_MAP is not valid JSON: {exc}") from None
        else:
            data = value
        if not isinstance(data, Mapping):
            raise RegionMapError("SIO_REGION_MAP must be a JSON object {region: {...}}")
        regions: dict[str, Region] = {}
        for name, spec in data.items():
            if not isinstance(name, str) or not REGION_NAME_RE.match(name):
                raise RegionMapError(
                    f"SIO_REGION_MAP: region name {name!r} must be 1-40 lowercase letters and digits"
                )
            if spec is None:
                spec = {}
            if not isinstance(spec, Mapping):
                raise RegionMapError(f"SIO_REGION_MAP[{name!r}] must be an object")
            fqns = spec.get("fullyQualifiedNamespace")
            if fqns is not None and (not isinstance(fqns, str) or not fqns):
                raise RegionMapError(f"SIO_REGION_MAP[{name!r}].fullyQualifiedNamespace must be a string")
            nbrs = spec.get("neighbors")
            if nbrs is not None:
                if not isinstance(nbrs, list) or not all(isinstance(n, str) for n in nbrs):
                    raise RegionMapError(f"SIO_REGION_MAP[{name!r}].neighbors must be a list of region names")
                nbrs = tuple(dict.fromkeys(n for n in nbrs if n != name))
            regions[name] = Region(name, fqns, nbrs)
        for r in regions.values():
            unknown = [n for n in r.neighbors or () if n not in regions]
            if unknown:
                raise RegionMapError(
                    f"SIO_REGION_MAP[{r.name!r}].neighbors names unknown region(s) {unknown}; "
                    f"known: {sorted(regions)}"
                )
        return cls.from_regions(regions)

    @classmethod
    def from_regions(cls, regions: Mapping[str, Region]) -> RegionMap:
        out: dict[str, tuple[str, ...]] = {}
        for name, r in regions.items():
            if r.neighbors is not None:
                out[name] = tuple(sorted(r.neighbors))
            else:
                out[name] = tuple(
                    sorted(
                        other
                        for other, o in regions.items()
                        if other != name and (o.neighbors is None or name in o.neighbors)
                    )
                )
        return cls(dict(regions), out)

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.regions)

    def __contains__(self, name: object) -> bool:
        return name in self.regions

    def __len__(self) -> int:
        return len(self.regions)

    def out_edges(self, region: str) -> tuple[str, ...]:
        """Regions ``region`` forwards to directly."""
        return self._out.get(region, ())

    def tree(self, root: str) -> dict[str, str | None]:
        """Parent of each region reachable from ``root`` in the BFS spanning tree (root -> None)."""
        parent: dict[str, str | None] = {root: None}
        queue = deque([root])
        while queue:
            here = queue.popleft()
            for nxt in self._out.get(here, ()):
                if nxt not in parent:
                    parent[nxt] = here
                    queue.append(nxt)
        return parent

    def children(self, root: str, region: str) -> tuple[str, ...]:
        return tuple(sorted(r for r, p in self.tree(root).items() if p == region))

    def reachable(self, root: str) -> frozenset[str]:
        return frozenset(self.tree(root))

    # ------------------------------------------------------------------ the decision
    def plan(
        self, here: str, visited: Sequence[str], hops: int, *, target_region: str | None = None
    ) -> RoutePlan:
        """Where the router of ``here`` sends a batch with this ``visited`` list and ``hops``.

        With ``target_region`` (a targeted message) the plan is at most one hop: the next region
        on the way to ``target_region`` (see the module docstring); empty once it is there.
        Raises :class:`Unroutable` for messages that no retry can fix.
        """
        if here not in self.regions:
            raise Unroutable("unknown-region", f"this router's region {here!r} is not in SIO_REGION_MAP")
        visited = tuple(visited) or (here,)
        unknown = [r for r in visited if r not in self.regions]
        if unknown:
            raise Unroutable(
                "unknown-region", f"visited region(s) {unknown} not in SIO_REGION_MAP {sorted(self.regions)}"
            )
        if visited[-1] != here:
            raise Unroutable(
                "region-mismatch",
                f"message received in {here!r} but last published in {visited[-1]!r} "
                f"(visited={list(visited)}): a node configured with the wrong region?",
            )
        if len(set(visited)) != len(visited):
            raise Unroutable("loop", f"a region appears twice in visited={list(visited)}")
        if hops > len(self.regions) or len(visited) > len(self.regions) + 1:
            raise Unroutable("too-many-hops", f"hops={hops}, visited={list(visited)}")
        if target_region is not None:
            return self._plan_targeted(here, visited, target_region)
        root = visited[0]
        tree = self.tree(root)
        seen = set(visited)
        out = []
        for target in sorted(r for r, p in tree.items() if p == here):
            if target in seen:
                continue
            grandchildren = [r for r, p in tree.items() if p == target and r not in seen and r != target]
            out.append(Hop(target, route_done=not grandchildren))
        return RoutePlan(tuple(out))

    def _plan_targeted(self, here: str, visited: tuple[str, ...], target: str) -> RoutePlan:
        if target not in self.regions:
            raise Unroutable(
                "unknown-region", f"target region {target!r} not in SIO_REGION_MAP {sorted(self.regions)}"
            )
        if target == here:
            return RoutePlan()
        if target in visited:
            raise Unroutable("loop", f"target region {target!r} already in visited={list(visited)}, now in {here!r}")
        nxt = self.next_hop(here, target, avoid=visited)
        if nxt is None:
            raise Unroutable(
                "unreachable", f"no path from {here!r} to target region {target!r} avoiding visited={list(visited)}"
            )
        return RoutePlan((Hop(nxt, route_done=nxt == target),))

    def next_hop(self, here: str, target: str, *, avoid: Sequence[str] = ()) -> str | None:
        """First region on a shortest path ``here`` -> ``target`` that enters no region of ``avoid``.

        Breadth-first over :meth:`out_edges` (sorted, so every router picks the same path); None
        when there is no such path.
        """
        blocked = set(avoid)
        first: dict[str, str] = {}
        queue = deque([here])
        seen = {here}
        while queue:
            at = queue.popleft()
            for nxt in self._out.get(at, ()):
                if nxt in seen or nxt in blocked:
                    continue
                seen.add(nxt)
                first[nxt] = first.get(at, nxt)
                if nxt == target:
                    return first[nxt]
                queue.append(nxt)
        return None
