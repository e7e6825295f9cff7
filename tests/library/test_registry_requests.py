"""The node registry's states and the request tracker's waiting rules (pure, fake clock)."""

from __future__ import annotations

import asyncio

from socketio_servicebus.manager.registry import NodeRegistry, NodeState
from socketio_servicebus.manager.requests import Reply, RequestTracker
from socketio_servicebus.manager.results import ClusterResult, IncompleteResult


def registry() -> NodeRegistry:
    reg = NodeRegistry(node_timeout=15.0)
    reg.seen("a2", "westeurope", 1, 1000.0, 100.0, interval=5.0)
    reg.seen("b1", "northeurope", 2, 1000.0, 100.0, interval=5.0)
    return reg


def test_a_node_that_missed_its_heartbeats_is_asked_but_not_awaited() -> None:
    reg = registry()
    assert reg.awaited_ids(109.0) == {"a2", "b1"}
    reg.seen("a2", "westeurope", 1, 1011.0, 111.0, interval=5.0)
    # b1: nothing for 11 s = two intervals and more
    assert reg.awaited_ids(111.0) == {"a2"} and reg.live_ids(111.0) == {"a2", "b1"}
    assert {i.node_id: i.state(111.0) for i in reg.live(111.0)} == {"a2": NodeState.LIVE, "b1": NodeState.SILENT}
    assert reg.prune(116.0) == ["b1"] and reg.live_ids(116.0) == {"a2"}


def test_a_node_that_let_a_request_time_out_is_not_awaited_until_its_next_heartbeat() -> None:
    reg = registry()
    reg.mark_unresponsive({"b1", "gone-already"})
    assert reg.awaited_ids(101.0) == {"a2"}
    assert [i.state(101.0) for i in reg.live(101.0) if i.node_id == "b1"] == [NodeState.UNRESPONSIVE]
    assert not reg.seen("b1", "northeurope", 2, 1002.0, 102.0, interval=5.0)
    assert reg.awaited_ids(102.0) == {"a2", "b1"}


def test_regions_come_from_heartbeats_and_odd_intervals_fall_back() -> None:
    reg = registry()
    assert reg.region_of("b1") == "northeurope" and reg.region_of("nobody") is None
    reg.seen("c1", "asia", 0, 1000.0, 100.0, interval=-1)  # nonsense: the registry's default (timeout / 3)
    assert reg.awaited_ids(109.0) >= {"c1"} and reg.awaited_ids(111.0) == set()
    assert reg.live(100.0)[0].as_dict(100.0)["state"] == "live"


async def test_a_request_ends_with_the_last_awaited_answer() -> None:
    tracker = RequestTracker()
    req = tracker.open("fetch_sockets", {"a2", "b1", "f1"}, awaited={"a2", "b1"})
    assert tracker.deliver(req.rid, Reply("a2", True, [1]))
    assert not req.done.is_set()
    assert tracker.deliver(req.rid, Reply("b1", True, [2]))
    assert req.done.is_set()  # f1 is asked, not awaited: nothing left to wait for
    done = await tracker.wait(req, timeout=60)
    assert done.missing == {"f1"} and done.overdue == set()
    assert not tracker.deliver(req.rid, Reply("f1", True, [3]))  # late: the request is over


async def test_a_request_times_out_on_an_awaited_node_and_says_which() -> None:
    tracker = RequestTracker()
    req = tracker.open("server_side_emit", {"a2", "b1"})
    tracker.deliver(req.rid, Reply("a2", True, "ack"))
    done = await tracker.wait(req, timeout=0.05)
    assert done.missing == done.overdue == {"b1"} and len(tracker) == 0


async def test_a_node_that_leaves_during_a_request_is_neither_awaited_nor_missing() -> None:
    tracker = RequestTracker()
    req = tracker.open("fetch_sockets", {"a2", "b1"})
    waiting = asyncio.ensure_future(tracker.wait(req, timeout=60))
    tracker.deliver(req.rid, Reply("a2", True, []))
    tracker.forget_node("b1")
    done = await waiting
    assert done.missing == set() and set(done.replies) == {"a2"}


def test_cluster_result_is_a_list_that_names_the_missing_nodes() -> None:
    res = ClusterResult([{"sid": "s1"}], missing={"f1", "b1"}, errors={"a2": "boom"}, elapsed=0.25)
    assert res == [{"sid": "s1"}] and isinstance(res, list)
    assert res.missing == ("b1", "f1") and not res.complete and res.errors == {"a2": "boom"}
    exc = IncompleteResult("fetch_sockets", res)
    assert isinstance(exc, TimeoutError) and exc.result is res and exc.missing == ("b1", "f1")
    assert "b1, f1" in str(exc)
    assert ClusterResult([]).complete
