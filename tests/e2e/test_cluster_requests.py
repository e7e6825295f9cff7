"""fetch_sockets, server_side_emit and ``who`` across regions, over the whole local stack (issue 26).

Four relay nodes in two regions (``a1``, ``a2`` in westeurope; ``b1`` and the on-premise
``factory1`` in northeurope), the router function between them, a client of the same chat room on
every node. Requests go out through the router, replies come back through it (targeted at the
requester's region), and a request ends when the last node has answered. A node killed with
SIGKILL costs one request its timeout, and that request says which node is missing.

The times are printed (``-s`` shows them); what is asserted is behaviour: every node answered
(``missing`` empty) and the manager counted no timed-out request, or exactly one for the request
that had to wait for the killed node.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from local_stack.stack import LocalStack, StackPorts, scrape

from .conftest import OUTPUT

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODES = ["a1", "a2", "b1", "factory1"]
REGION = {"a1": "westeurope", "a2": "westeurope", "b1": "northeurope", "factory1": "northeurope"}
TIMED_OUT = "socketio_servicebus_requests_timed_out_total"
#: the manager's default request_timeout (the relay node does not change it)
REQUEST_TIMEOUT = 10.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    run_dir = tmp_path_factory.mktemp("cluster-stack")
    stack = LocalStack(
        run_dir=run_dir, ports=StackPorts.ephemeral(), with_dashboard=False,
        node_extra_args=["--app", "relay_node.chat:setup", "--app", "tests.e2e.cluster_app:setup"],
    )
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
        logs = run_dir / "logs"
        if logs.exists():
            shutil.copytree(logs, OUTPUT / "cluster-logs", dirs_exist_ok=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(stack: LocalStack) -> AsyncIterator[dict[str, Any]]:
    """One client per node, all in one chat room; returns {"room", node: client}."""
    room = f"factory1-lobby-{uuid.uuid4().hex[:8]}"  # factory1 asks too: a room of its trust zone
    out: dict[str, Any] = {"room": room}
    try:
        for node in NODES:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(stack.node_url(node), transports=["websocket"], wait_timeout=10)
            out[node] = client
            ack = await client.call("join", room, timeout=10)
            assert ack["node"] == node, ack
        # every node's registry knows the three others (heartbeats cross regions through the router)
        for node in NODES:
            await until(lambda n=node: known(out[n]), lambda ids: ids >= set(NODES), 30, f"{node} knows all nodes")
        yield out
    finally:
        for node in NODES:
            if node in out and out[node].connected:
                await out[node].disconnect()


async def known(client: Any) -> set[str]:
    return {n["node_id"] for n in await client.call("cluster:nodes", timeout=10)}


async def until(get: Any, ok: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {within}s"
        await asyncio.sleep(0.5)


async def timed_out(stack: LocalStack, node: str) -> float:
    async with aiohttp.ClientSession() as session:
        return (await scrape(session, stack.node_url(node))).get(TIMED_OUT, 0.0)


async def timed(coro: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = await coro
    return value, time.perf_counter() - t0


def router_forwards(stack: LocalStack, since: int) -> list[str]:
    """Router log lines of request/response forwards written after byte ``since`` of the log."""
    text = (stack.run_dir / "logs" / "functions.log").read_bytes()[since:].decode("utf-8", "replace")
    return [line for line in text.splitlines() if re.search(r"router\[\w+\] message \S+ \((request|response),", line)]


def log_size(stack: LocalStack) -> int:
    return (stack.run_dir / "logs" / "functions.log").stat().st_size


async def test_who_from_each_region_lists_all_four_nodes_members(stack: LocalStack, clients: dict[str, Any]) -> None:
    room = clients["room"]
    expected = {(clients[n].get_sid(), n, REGION[n]) for n in NODES}
    for asker in ("a1", "b1"):
        before = await timed_out(stack, asker)
        who, took = await timed(clients[asker].call("who", room, timeout=REQUEST_TIMEOUT + 10))
        print(f"\nwho from {asker} ({REGION[asker]}): {who['count']} members on "
              f"{sorted({m['node'] for m in who['members']})} in {took * 1000:.0f} ms "
              f"(request timeout {REQUEST_TIMEOUT:.0f} s)")
        assert {(m["sid"], m["node"], m["region"]) for m in who["members"]} == expected
        assert who["missing"] == []
        assert await timed_out(stack, asker) == before  # it ended with the last answer, not at the timeout


async def test_fetch_sockets_from_each_region_returns_every_node(stack: LocalStack, clients: dict[str, Any]) -> None:
    for asker in ("a2", "factory1"):
        res, took = await timed(clients[asker].call("cluster:fetch", clients["room"], timeout=REQUEST_TIMEOUT + 10))
        print(f"\nfetch_sockets from {asker}: {len(res['sockets'])} sockets in {took * 1000:.0f} ms "
              f"(manager: {res['elapsed'] * 1000:.0f} ms)")
        assert sorted(s["node"] for s in res["sockets"]) == sorted(NODES)
        assert {s["sid"] for s in res["sockets"]} == {clients[n].get_sid() for n in NODES}
        assert res["missing"] == []


async def test_server_side_emit_from_a1_gets_acks_from_both_regions(stack: LocalStack, clients: dict[str, Any]) -> None:
    res, took = await timed(clients["a1"].call("cluster:emit", timeout=REQUEST_TIMEOUT + 10))
    print(f"\nserver_side_emit from a1: acks from {[a['node'] for a in res['acks']]} in {took * 1000:.0f} ms")
    assert res["acks"] == [{"node": n, "region": REGION[n]} for n in ("a2", "b1", "factory1")]
    assert res["missing"] == [] and res["errors"] == {}


async def test_a_client_ack_comes_back_from_the_other_region(stack: LocalStack, clients: dict[str, Any]) -> None:
    """sio.call() on a1 to a client of b1: the client's ack is a python-socketio callback message
    targeted at a1, and it carries a1's region (from a1's heartbeats) so the router brings it back."""
    clients["b1"].on("question", lambda question: f"a client of b1 heard {question!r}")
    res, took = await timed(clients["a1"].call("cluster:ask", clients["b1"].get_sid(), timeout=20))
    print(f"\nsio.call from a1 to a client of b1: {took * 1000:.0f} ms")
    assert res == {"answer": "a client of b1 heard 'who are you?'"}


async def test_one_request_crosses_the_router_once_each_way(stack: LocalStack, clients: dict[str, Any]) -> None:
    """A request from a1: one forward of the request into northeurope, one forward of each of the
    two northeurope replies back; a2's reply stays in westeurope. Nothing else, nothing twice."""
    await asyncio.sleep(1.0)  # let heartbeats and earlier traffic leave the router
    mark = log_size(stack)
    res = await clients["a1"].call("cluster:fetch", clients["room"], timeout=REQUEST_TIMEOUT + 10)
    assert res["missing"] == []
    await asyncio.sleep(3.0)  # a looping copy would show up here
    lines = router_forwards(stack, mark)
    print("\nrouter forwards for one fetch_sockets from a1:\n  " + "\n  ".join(lines))
    requests = [line for line in lines if "(request," in line]
    responses = [line for line in lines if "(response," in line]
    assert len(requests) == 1 and "router[westeurope]" in requests[0] and "['northeurope']" in requests[0]
    assert len(responses) == 2
    assert all("router[northeurope]" in line and "to node a1 in westeurope" in line
               and "['westeurope']" in line for line in responses)


async def test_a_killed_node_costs_one_timeout_and_is_named(stack: LocalStack, clients: dict[str, Any]) -> None:
    room = clients["room"]
    stack.processes["node-factory1"].signal(signal.SIGKILL)
    before = await timed_out(stack, "a1")

    who, took = await timed(clients["a1"].call("who", room, timeout=REQUEST_TIMEOUT + 10))
    print(f"\nwho from a1 right after SIGKILL of factory1: {took * 1000:.0f} ms, missing {who['missing']}")
    assert who["missing"] == ["factory1"]
    assert sorted(m["node"] for m in who["members"]) == ["a1", "a2", "b1"]
    assert await timed_out(stack, "a1") == before + 1

    # a1's next requests do not wait for it (it missed a request): none times out, and it is named
    # as long as the registry knows it (it may forget it meanwhile: node_timeout after its last
    # heartbeat, which was up to one interval before the kill)
    for _ in range(2):
        res, took = await timed(clients["a1"].call("cluster:fetch", room, timeout=REQUEST_TIMEOUT + 10))
        print(f"fetch_sockets from a1 again: {took * 1000:.0f} ms, missing {res['missing']}")
        assert res["missing"] in (["factory1"], []) and sorted(s["node"] for s in res["sockets"]) == ["a1", "a2", "b1"]
    assert await timed_out(stack, "a1") == before + 1

    # once the registries have dropped it (no heartbeat for node_timeout), nobody asks it any more
    for node in ("a1", "b1"):
        await until(lambda n=node: known(clients[n]), lambda ids: "factory1" not in ids, 40, f"{node} drops factory1")
    b1_before = await timed_out(stack, "b1")
    for asker, call in (("a1", "cluster:fetch"), ("b1", "who")):
        res, took = await timed(clients[asker].call(call, room, timeout=REQUEST_TIMEOUT + 10))
        nodes = sorted(s["node"] for s in res.get("sockets", res.get("members", [])))
        print(f"{call} from {asker} after the registry dropped factory1: {took * 1000:.0f} ms, nodes {nodes}")
        assert res["missing"] == [] and nodes == ["a1", "a2", "b1"]
    assert await timed_out(stack, "a1") == before + 1
    assert await timed_out(stack, "b1") == b1_before
