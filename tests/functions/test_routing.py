"""Routing decisions (pure): exactly once per region, loop-free, route_done precise.

The propagation is simulated with the real subscription rule of ``topology.json`` evaluated by the
emulator's SQL filter engine, so "the target's router skips it" is checked, not assumed.
"""

from __future__ import annotations

from collections import Counter

import pytest

from servicebus_emulator.filters import sql_filter
from shared.routing.plan import RegionMap, RegionMapError, Unroutable
from socketio_servicebus.topology import load_topology
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind

ROUTER_RULE = sql_filter(load_topology()["functionSubscriptions"]["router"]["sql"])

MESH3 = {"eu": {}, "us": {}, "asia": {}}
HUB = {"eu": {}, "us": {}, "asia": {}, "edge1": {"neighbors": ["eu"]}, "edge2": {"neighbors": ["eu"]},
       "edge3": {"neighbors": ["us"]}}
CHAIN = {"a": {"neighbors": ["b"]}, "b": {"neighbors": ["a", "c"]}, "c": {"neighbors": ["b", "d"]},
         "d": {"neighbors": ["c"]}}


def _batch(origin: str) -> Batch:
    env = Envelope(kind=Kind.EMIT, origin_node="n1", origin_region=origin, body={"method": "emit"})
    return Batch((env,), 0, (origin,))


def propagate(rmap: RegionMap, origin: str) -> tuple[Counter[str], list[tuple[str, str, bool]]]:
    """Publish once in ``origin``; follow every copy. Returns copies per region and the edges used."""
    copies: Counter[str] = Counter({origin: 1})
    edges = []
    pending = [(origin, _batch(origin), _batch(origin).application_properties())]
    steps = 0
    while pending:
        steps += 1
        assert steps < 100, "routing does not terminate"
        region, batch, props = pending.pop()
        if not ROUTER_RULE.matches({}, props):  # the router subscription does not get it
            continue
        plan = rmap.plan(region, batch.visited, batch.hops)
        for hop in plan.hops:
            fwd = batch.forwarded(hop.target)
            copies[hop.target] += 1
            edges.append((region, hop.target, hop.route_done))
            pending.append((hop.target, fwd, fwd.application_properties(route_done=hop.route_done)))
    return copies, edges


@pytest.mark.parametrize("spec", [MESH3, HUB, CHAIN], ids=["mesh3", "hub-and-spoke", "chain"])
def test_every_region_exactly_once_from_every_origin(spec: dict) -> None:
    rmap = RegionMap.parse(spec)
    for origin in rmap.names:
        copies, edges = propagate(rmap, origin)
        assert copies == Counter({r: 1 for r in rmap.names}), (origin, copies, edges)


@pytest.mark.parametrize("spec", [MESH3, HUB, CHAIN], ids=["mesh3", "hub-and-spoke", "chain"])
def test_route_done_exactly_when_the_target_has_nothing_left(spec: dict) -> None:
    rmap = RegionMap.parse(spec)
    for origin in rmap.names:
        _, edges = propagate(rmap, origin)
        sources = {src for src, _, _ in edges}
        for _src, target, done in edges:
            # route_done <=> the target forwards nothing itself
            assert done == (target not in sources), (origin, edges)


def test_mesh_forwards_directly_and_marks_leaves_done() -> None:
    rmap = RegionMap.parse(MESH3)
    plan = rmap.plan("eu", ["eu"], 0)
    assert [(h.target, h.route_done) for h in plan.hops] == [("asia", True), ("us", True)]
    # a copy that arrives anyway (route_done ignored) is not forwarded again
    assert rmap.plan("us", ["eu", "us"], 1).hops == ()


def test_spokes_are_reached_only_through_their_hub() -> None:
    rmap = RegionMap.parse(HUB)
    assert rmap.out_edges("us") == ("asia", "edge3", "eu")
    assert rmap.out_edges("edge1") == ("eu",)
    _, edges = propagate(rmap, "us")
    assert ("eu", "edge1", True) in edges and ("eu", "edge2", True) in edges
    assert ("us", "eu", False) in edges  # eu still has spokes to serve
    assert all(not (t.startswith("edge") and s not in ("eu", "us")) for s, t, _ in edges)
    _, edges = propagate(rmap, "edge1")
    assert edges[0] == ("edge1", "eu", False)
    assert {(s, t) for s, t, _ in edges} == {("edge1", "eu"), ("eu", "us"), ("eu", "asia"), ("eu", "edge2"),
                                             ("us", "edge3")}


def test_visited_regions_are_never_targets_even_with_an_inconsistent_path() -> None:
    rmap = RegionMap.parse(MESH3)
    # arrived in asia via us (not the tree path): asia must not send back to eu or us
    assert rmap.plan("asia", ["eu", "us", "asia"], 2).hops == ()


@pytest.mark.parametrize(
    ("here", "visited", "hops", "reason"),
    [
        ("eu", ["mars", "eu"], 1, "unknown-region"),
        ("eu", ["us"], 0, "region-mismatch"),
        ("eu", ["us", "asia", "us", "eu"], 3, "loop"),
        ("eu", ["eu"], 99, "too-many-hops"),
    ],
)
def test_unroutable(here: str, visited: list[str], hops: int, reason: str) -> None:
    with pytest.raises(Unroutable) as info:
        RegionMap.parse(MESH3).plan(here, visited, hops)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"EU": {}}', "lowercase"),
        ('{"eu": {"neighbors": ["nope"]}}', "unknown region"),
        ('{"eu": {"neighbors": "us"}}', "list of region names"),
        ('{"eu": 3}', "must be an object"),
    ],
)
def test_bad_region_maps_are_rejected_with_a_reason(value: str, fragment: str) -> None:
    with pytest.raises(RegionMapError, match=fragment):
        RegionMap.parse(value)


def test_region_map_from_infra_example_parses() -> None:
    rmap = RegionMap.parse(
        '{"westeurope": {"fullyQualifiedNamespace": "sb-x-westeurope.servicebus.windows.net", "neighbors": ["northeurope"]},'
        ' "northeurope": {"fullyQualifiedNamespace": "sb-x-northeurope.servicebus.windows.net", "neighbors": ["westeurope"]}}'
    )
    assert rmap.out_edges("westeurope") == ("northeurope",)
    assert rmap.regions["westeurope"].fully_qualified_namespace.startswith("sb-x-westeurope")
