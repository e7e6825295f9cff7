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


def _reply(origin: str, target_region: str | None) -> Batch:
    env = Envelope(kind=Kind.RESPONSE, origin_node="n1", origin_region=origin, target_node="n2",
                   target_region=target_region, body={"rid": "r1"})
    return Batch((env,), 0, (origin,))


def propagate(rmap: RegionMap, origin: str, first: Batch | None = None) -> tuple[Counter[str], list[tuple[str, str, bool]]]:
    """Publish once in ``origin``; follow every copy. Returns copies per region and the edges used."""
    first = first or _batch(origin)
    copies: Counter[str] = Counter({origin: 1})
    edges = []
    pending = [(origin, first, first.application_properties())]
    steps = 0
    while pending:
        steps += 1
        assert steps < 100, "routing does not terminate"
        region, batch, props = pending.pop()
        if not ROUTER_RULE.matches({}, props):  # the router subscription does not get it
            continue
        plan = rmap.plan(region, batch.visited, batch.hops, target_region=batch.envelopes[0].target_region)
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


# ------------------------------------------------------------------ targeted (replies, callbacks)
def _distance(rmap: RegionMap, src: str, dst: str) -> int:
    frontier, seen, d = {src}, {src}, 0
    while dst not in frontier:
        frontier = {n for r in frontier for n in rmap.out_edges(r)} - seen
        assert frontier, f"{dst} unreachable from {src}"
        seen |= frontier
        d += 1
    return d


@pytest.mark.parametrize("spec", [MESH3, HUB, CHAIN], ids=["mesh3", "hub-and-spoke", "chain"])
def test_a_reply_reaches_only_its_target_region_along_a_shortest_path(spec: dict) -> None:
    rmap = RegionMap.parse(spec)
    for origin in rmap.names:
        for target in rmap.names:
            copies, edges = propagate(rmap, origin, _reply(origin, target))
            # one copy in the target region, none in regions off the path, one forward per hop
            assert copies[target] == 1 and max(copies.values()) == 1, (origin, target, edges)
            assert len(edges) == _distance(rmap, origin, target), (origin, target, edges)
            assert set(copies) == {origin, target} | {t for _, t, _ in edges}
            # route_done on the copy that lands in the target region, and only there
            assert [done for _, _, done in edges] == [False] * (len(edges) - 1) + [True] * bool(edges)


def test_a_reply_between_spokes_goes_through_the_hubs_only() -> None:
    rmap = RegionMap.parse(HUB)
    _, edges = propagate(rmap, "edge1", _reply("edge1", "edge3"))
    assert edges == [("edge1", "eu", False), ("eu", "us", False), ("us", "edge3", True)]
    _, edges = propagate(rmap, "edge1", _reply("edge1", "edge2"))
    assert edges == [("edge1", "eu", False), ("eu", "edge2", True)]


def test_the_router_rule_skips_replies_inside_their_region_and_old_replies_without_a_region() -> None:
    assert not ROUTER_RULE.matches({}, _reply("eu", "eu").application_properties())
    assert not ROUTER_RULE.matches({}, _reply("eu", None).application_properties())
    assert ROUTER_RULE.matches({}, _reply("eu", "us").application_properties())
    fwd = _reply("eu", "us").forwarded("us")
    assert not ROUTER_RULE.matches({}, fwd.application_properties(route_done=True))


@pytest.mark.parametrize(
    ("spec", "here", "visited", "target", "reason"),
    [
        (MESH3, "eu", ["eu"], "mars", "unknown-region"),
        ({"a": {"neighbors": []}, "b": {}}, "a", ["a"], "b", "unreachable"),
        (CHAIN, "b", ["c", "b"], "c", "loop"),
        (CHAIN, "c", ["a", "b", "c"], "b", "loop"),
    ],
)
def test_targeted_unroutable(spec: dict, here: str, visited: list[str], target: str, reason: str) -> None:
    with pytest.raises(Unroutable) as info:
        RegionMap.parse(spec).plan(here, visited, len(visited) - 1, target_region=target)
    assert info.value.reason == reason


def test_a_targeted_path_avoids_visited_regions() -> None:
    rmap = RegionMap.parse(MESH3)
    assert rmap.next_hop("us", "asia", avoid=["eu", "us"]) == "asia"
    ring = RegionMap.parse({"a": {"neighbors": ["b", "d"]}, "b": {"neighbors": ["c"]}, "c": {"neighbors": []},
                            "d": {"neighbors": ["c"]}})
    assert ring.next_hop("a", "c") == "b"
    assert ring.next_hop("a", "c", avoid=["b"]) == "d"
    assert ring.plan("a", ["a"], 0, target_region="a").hops == ()
