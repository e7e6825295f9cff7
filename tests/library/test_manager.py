# ruff: noqa: ASYNC109, B023
"""ServiceBusManager end to end: real python-socketio servers (aiohttp, 127.0.0.1, ephemeral
ports), real socketio.AsyncClient over TCP, the emulator over TCP.  Nothing is mocked.

Nodes create their own subscriptions through the emulator's admin API, as in production;
:func:`require_admin` fails the test at once (with the admin error) if that API does not work.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import socketio
from aiohttp import web

from socketio_servicebus import IncompleteResult, ServiceBusManager
from socketio_servicebus.servicebus.clients import admin_client
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from tests.support.emulator_process import EmulatorProcess

#: One scale for every wait in these tests.
T = 1.0
TOPICS = 40  # one fresh topic per test: no test sees another's leftovers
NODES = [f"n{i}" for i in range(4)]  # node ids (and pre-provisioned subscriptions) per topic


def node_config(topics: list[str], node_ids: list[str], port: int | None = None) -> dict[str, Any]:
    """Config.json: every topic gets the node subscriptions exactly as a node would create them."""
    def subs(topic: str) -> list[dict[str, Any]]:
        out = []
        for n in node_ids:
            spec = node_subscription_spec(topic=topic, node_id=n)
            out.append({
                "Name": spec.name,
                "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": spec.max_delivery_count,
                               "DefaultMessageTimeToLive": "PT5M"},
                "Rules": [{"Name": spec.rule, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": spec.sql}}}],
            })
        return out

    ns: dict[str, Any] = {"Name": "sbemulatorns", "Topics": [{"Name": t, "Subscriptions": subs(t)} for t in topics]}
    if port is not None:
        ns["Port"] = port
    return EmulatorProcess.default_config(ns)  # with a named key: the restart tests keep their connection string


_topics = itertools.count()


def next_topic() -> str:
    i = next(_topics)
    assert i < TOPICS, "raise TOPICS"
    return f"sio-{i}"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A module's own emulator with per-test topics and node subscriptions pre-provisioned."""
    global _topics
    _topics = itertools.count()
    config = tmp_path_factory.mktemp("sbmgr") / "Config.json"
    config.write_text(json.dumps(node_config([f"sio-{i}" for i in range(TOPICS)], NODES)))
    proc = EmulatorProcess(config)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def sb_conn(sb: EmulatorProcess) -> str:
    return sb.connection_string("sbemulatorns")


@pytest.fixture
def topic() -> str:
    return next_topic()


_admin_checked: set[str] = set()


async def require_admin(conn: str) -> None:
    """Raise (with the admin error) unless the emulator's admin API can create and delete
    subscriptions; checked once per emulator."""
    if conn not in _admin_checked:
        async with admin_client(connection_string=conn) as admin:
            await admin.create_subscription("sio-0", "probe-admin")
            await admin.delete_subscription("sio-0", "probe-admin")
        _admin_checked.add(conn)


class Node:
    """One python-socketio server with a ServiceBusManager, served by aiohttp on 127.0.0.1."""

    def __init__(self, mgr: ServiceBusManager):
        self.mgr = mgr
        self.sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, logger=False, engineio_logger=False)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner = web.AppRunner(self.app)
        self.port = 0
        self.clients: list[socketio.AsyncClient] = []

        @self.sio.event
        async def join(sid: str, room: str) -> str:
            await self.sio.enter_room(sid, room)
            return "ok"

        @self.sio.event
        async def whoami(sid: str) -> str:
            return sid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.mgr.start()

    async def client(self, events: tuple[str, ...] = ("msg",)) -> Client:
        c = Client(self, events)
        await c.connect()
        self.clients.append(c.sio)
        return c

    async def stop(self) -> None:
        for c in self.clients:
            try:
                await c.disconnect()
            except Exception:  # noqa: BLE001 - teardown: the manager close below is what matters
                pass
        await self.mgr.close()
        await self.runner.cleanup()


class Client:
    """A real socketio.AsyncClient over TCP that records what it receives."""

    def __init__(self, node: Node, events: tuple[str, ...]):
        self.node = node
        self.sio = socketio.AsyncClient(reconnection=False)
        self.got: dict[str, list[Any]] = {e: [] for e in events}
        self.ack_reply: Any = "ack"
        self.sid = ""
        for e in events:
            self.sio.on(e, self._recorder(e))

    def _recorder(self, event: str) -> Callable[..., Any]:
        async def handler(*args: Any) -> Any:
            self.got[event].append(args[0] if len(args) == 1 else list(args))
            return self.ack_reply

        return handler

    async def connect(self) -> None:
        await self.sio.connect(self.node.url, transports=["websocket"], wait_timeout=10)
        self.sid = await self.sio.call("whoami", timeout=5)

    async def join(self, room: str) -> None:
        assert await self.sio.call("join", room, timeout=5) == "ok"


async def eventually(pred: Callable[[], bool | Awaitable[bool]], timeout: float = 8 * T, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


async def quiet(seconds: float = 0.5 * T) -> None:
    """Give stray deliveries a chance to show up before asserting they did not."""
    await asyncio.sleep(seconds)


Factory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def cluster(sb_conn: str, topic: str) -> AsyncIterator[Factory]:
    """``await cluster(**manager_kwargs)`` -> a started, ready :class:`Node` on this test's topic."""
    nodes: list[Node] = []
    await require_admin(sb_conn)
    ids = iter(NODES)

    async def make(ready: bool = True, **kw: Any) -> Node:
        node_id = kw.pop("node_id", None) or next(ids)
        kw.setdefault("heartbeat_interval", 0.3)
        kw.setdefault("node_timeout", 1.5)
        kw.setdefault("request_timeout", 3.0)
        kw.setdefault("backoff_initial", 0.2)
        kw.setdefault("backoff_max", 1.0)
        kw.setdefault("topic", topic)
        mgr = ServiceBusManager(connection_string=kw.pop("conn", sb_conn), node_id=node_id, **kw)
        node = Node(mgr)
        nodes.append(node)
        await node.start()
        if ready:
            assert await mgr.wait_ready(15), mgr.health()
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def silence(node: Node) -> None:
    """Make a node go silent without a goodbye, as if its process hung: stop supervising its
    tasks (so nothing is restarted) and cancel them."""
    sup = node.mgr._supervisor
    assert sup is not None
    sup.stop_supervising()
    assert await sup.cancel() == []


async def meshed(*nodes: Node) -> None:
    """Wait until every node knows every other one from heartbeats."""
    await eventually(lambda: all(n.mgr.server_count() == len(nodes) for n in nodes), what="node registry")


# ====================================================================== broadcast & rooms


async def test_broadcast_two_nodes(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    ca, cb = await a.client(), await b.client()
    await a.sio.emit("msg", {"from": "a"})
    await b.sio.emit("msg", "from-b")
    await eventually(lambda: len(ca.got["msg"]) == 2 and len(cb.got["msg"]) == 2, what="both messages everywhere")
    assert sorted(map(str, ca.got["msg"])) == sorted(map(str, cb.got["msg"]))
    await quiet()
    assert len(ca.got["msg"]) == 2 and len(cb.got["msg"]) == 2  # nothing twice
    snap = a.mgr.metrics.snapshot()
    assert snap["envelopes_published"] >= 1 and snap["messages_published"] >= 1
    assert b.mgr.metrics.snapshot()["envelopes_received"] >= 1


async def test_three_nodes_rooms_sid_and_skip_sid(cluster: Factory) -> None:
    a, b, c = await cluster(), await cluster(), await cluster()
    ca, cb, cc = await a.client(), await b.client(), await c.client()
    await cb.join("blue")
    await cc.join("blue")
    await a.sio.emit("msg", "to-blue", room="blue")
    await eventually(lambda: cb.got["msg"] == ["to-blue"] and cc.got["msg"] == ["to-blue"], what="room delivery")
    await a.sio.emit("msg", "to-c-only", to=cc.sid)
    await eventually(lambda: cc.got["msg"] == ["to-blue", "to-c-only"], what="to sid on another node")
    await a.sio.emit("msg", "all-but-b", skip_sid=cb.sid)
    await eventually(lambda: ca.got["msg"] == ["all-but-b"] and cc.got["msg"][-1] == "all-but-b", what="skip_sid")
    await quiet()
    assert ca.got["msg"] == ["all-but-b"]
    assert cb.got["msg"] == ["to-blue"]
    assert cc.got["msg"] == ["to-blue", "to-c-only", "all-but-b"]


async def test_binary_payload(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    blob = bytes(range(256)) * 40
    await a.sio.emit("msg", {"name": "x", "blob": blob, "more": [b"\x00\xff", "s"]})
    await eventually(lambda: len(cb.got["msg"]) == 1, what="binary message")
    got = cb.got["msg"][0]
    assert got["blob"] == blob and got["more"] == [b"\x00\xff", "s"] and got["name"] == "x"


async def test_callback_from_remote_client(cluster: Factory) -> None:
    a, b, c = await cluster(), await cluster(), await cluster()
    await meshed(a, b, c)
    cb = await b.client()
    cb.ack_reply = {"thanks": True, "bin": b"\x01\x02"}
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await a.sio.emit("msg", "please-ack", to=cb.sid, callback=lambda *args: fut.set_result(args))
    args = await asyncio.wait_for(fut, 8 * T)
    assert args == ({"thanks": True, "bin": b"\x01\x02"},)
    # the callback reply was addressed to a only (target_node): c's rule kept it away
    await quiet()
    for node in (a, b, c):
        assert node.mgr.metrics.snapshot()["misaddressed_dropped"] == 0, node.mgr.node_id


async def test_remote_enter_leave_close_room_and_disconnect(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    await a.sio.enter_room(cb.sid, "green")
    await eventually(lambda: "green" in b.mgr.get_rooms(cb.sid, "/"), what="remote enter_room")
    await a.sio.emit("msg", "green-1", room="green")
    await eventually(lambda: cb.got["msg"] == ["green-1"], what="emit to entered room")
    await a.sio.leave_room(cb.sid, "green")
    await eventually(lambda: "green" not in b.mgr.get_rooms(cb.sid, "/"), what="remote leave_room")
    await a.sio.enter_room(cb.sid, "red")
    await eventually(lambda: "red" in b.mgr.get_rooms(cb.sid, "/"), what="remote enter_room 2")
    await a.sio.close_room("red")
    await eventually(lambda: "red" not in b.mgr.get_rooms(cb.sid, "/"), what="remote close_room")
    await a.sio.disconnect(cb.sid)
    await eventually(lambda: not cb.sio.connected, what="remote disconnect")


# ====================================================================== registry & request/reply


async def test_registry_join_and_goodbye(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    await meshed(a, b)
    c = await cluster(region="eu")
    await meshed(a, b, c)
    await c.client()
    await eventually(
        lambda: any(n["node_id"] == c.mgr.node_id and n["clients"] == 1 and n["region"] == "eu" for n in a.mgr.nodes()),
        what="client count in heartbeat",
    )
    await c.stop()  # goodbye heartbeat: gone well before node_timeout
    t0 = time.monotonic()
    await eventually(lambda: a.mgr.server_count() == 2 and b.mgr.server_count() == 2, timeout=1.0, what="goodbye")
    assert time.monotonic() - t0 < 1.0
    assert a.mgr.metrics.snapshot()["nodes"] == 2


async def test_registry_expires_silent_node(cluster: Factory, sb_conn: str) -> None:
    a = await cluster()
    b = await cluster(heartbeat_interval=0.3)
    await meshed(a, b)
    await silence(b)  # b goes silent without a goodbye
    await eventually(lambda: a.mgr.server_count() == 1, timeout=4 * T, what="expiry after node_timeout")


async def test_fetch_sockets_and_room_members(cluster: Factory) -> None:
    a, b, c = await cluster(), await cluster(), await cluster()
    await meshed(a, b, c)
    ca, cb, cc = await a.client(), await b.client(), await c.client()
    await cb.join("lobby")
    await cc.join("lobby")
    socks = await a.mgr.fetch_sockets("/")
    assert sorted(s["sid"] for s in socks) == sorted([ca.sid, cb.sid, cc.sid])
    by_sid = {s["sid"]: s for s in socks}
    assert by_sid[cb.sid]["node"] == b.mgr.node_id and "lobby" in by_sid[cb.sid]["rooms"]
    assert by_sid[ca.sid]["namespace"] == "/"
    assert await a.mgr.room_members("/", "lobby") == sorted([cb.sid, cc.sid])
    # responses are addressed to a; b and c never see them (nor a its own requests)
    for node in (a, b, c):
        assert node.mgr.metrics.snapshot()["misaddressed_dropped"] == 0, node.mgr.node_id


async def test_fetch_sockets_returns_partial_on_timeout(cluster: Factory) -> None:
    # b announces 1 s heartbeats: a waits for it until 2 s of silence, forgets it after 5 s
    a, b, c = await cluster(node_timeout=5.0), await cluster(heartbeat_interval=1.0), await cluster()
    await meshed(a, b, c)
    await b.client()
    cc = await c.client()
    await silence(b)  # b stays in a's registry for node_timeout, but answers nothing
    t0 = time.monotonic()
    socks = await a.mgr.fetch_sockets("/", timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 2.0
    assert socks == [{"sid": cc.sid, "namespace": "/", "rooms": [cc.sid], "node": c.mgr.node_id}]
    assert socks.missing == (b.mgr.node_id,) and not socks.complete and socks.elapsed >= 0.5
    assert a.mgr.metrics.snapshot()["requests_timed_out"] == 1
    # b let a request time out: the next ones do not wait for it, and still name it
    with pytest.raises(IncompleteResult) as info:
        await a.mgr.fetch_sockets("/", timeout=60, raise_on_missing=True)
    assert info.value.missing == (b.mgr.node_id,) and [s["sid"] for s in info.value.result] == [cc.sid]
    assert (await a.mgr.server_side_emit("anything", timeout=60)).missing == (b.mgr.node_id,)
    assert a.mgr.metrics.snapshot()["requests_timed_out"] == 1
    states = {n["node_id"]: n.get("state") for n in a.mgr.nodes()}
    assert states[b.mgr.node_id] == "unresponsive" and states[c.mgr.node_id] == "live"
    # once forgotten (node_timeout), b is not asked at all
    await eventually(lambda: a.mgr.server_count() == 2, timeout=10 * T, what="b forgotten")
    assert (await a.mgr.fetch_sockets("/", timeout=60)).missing == ()


async def test_server_side_emit_with_acks(cluster: Factory) -> None:
    a, b, c = await cluster(), await cluster(), await cluster()
    await meshed(a, b, c)

    @b.mgr.on_server_event("ping")
    async def on_ping_b(x: int, y: str) -> dict[str, Any]:
        return {"node": "b", "sum": x + 1, "y": y}

    c.mgr.on_server_event("ping", lambda x, y: {"node": "c", "sum": x + 2, "y": y})
    a.mgr.on_server_event("ping", lambda x, y: pytest.fail("the emitting node does not receive its own"))
    acks = await a.mgr.server_side_emit("ping", 40, "hi")
    assert sorted(acks, key=lambda d: d["node"]) == [
        {"node": "b", "sum": 41, "y": "hi"},
        {"node": "c", "sum": 42, "y": "hi"},
    ]
    assert acks.missing == () and acks.errors == {}
    nobody = await a.mgr.server_side_emit("nobody-listens")
    assert nobody == [] and nobody.missing == () and nobody.errors == {}  # no handler: answered, no ack

    def boom() -> None:
        raise RuntimeError("boom")

    c.mgr.on_server_event("fails", boom)
    failed = await a.mgr.server_side_emit("fails")
    assert failed == [] and failed.missing == () and failed.errors == {c.mgr.node_id: "RuntimeError: boom"}


async def test_write_only_emitter_reaches_clients(cluster: Factory, sb_conn: str, topic: str) -> None:
    a, b = await cluster(), await cluster()
    ca, cb = await a.client(), await b.client()
    await cb.join("news")
    emitter = ServiceBusManager(connection_string=sb_conn, topic=topic, write_only=True, node_id="emitter-1")
    try:
        await emitter.emit("msg", "breaking", room="news")
        await emitter.emit("msg", {"everyone": 1})
        assert await emitter.flush(10)
        await eventually(lambda: cb.got["msg"] == ["breaking", {"everyone": 1}], what="emitter -> room")
        await eventually(lambda: ca.got["msg"] == [{"everyone": 1}], what="emitter -> all")
        assert emitter.health()["ready"] and emitter.health()["subscription_ready"] is False
        with pytest.raises(RuntimeError):
            await emitter.fetch_sockets()
    finally:
        await emitter.close()


# ====================================================================== batching & limits


async def test_burst_is_batched_and_ordered(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    n = 300
    for i in range(n):
        await a.sio.emit("msg", i)
    await eventually(lambda: len(cb.got["msg"]) == n, what="burst delivered")
    assert cb.got["msg"] == list(range(n))
    snap = a.mgr.metrics.snapshot()
    assert snap["messages_published"] < n / 3, snap  # adaptive batching while a send is in flight
    assert snap["batch_size_le_1"] >= 1  # the first one left alone (idle -> at once)


async def test_too_large_envelope_raises_to_caller(cluster: Factory) -> None:
    a = await cluster(max_message_bytes=64 * 1024)
    from socketio_servicebus import EnvelopeTooLarge

    with pytest.raises(EnvelopeTooLarge):
        await a.sio.emit("msg", "x" * (64 * 1024))
    await a.sio.emit("msg", "x" * (40 * 1024))  # fits
    assert await a.mgr.flush(10)
    assert a.mgr.metrics.snapshot()["publish_errors"] == 0


async def test_latency_idle_emit_is_not_delayed(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    lat = []
    for i in range(10):
        t0 = time.perf_counter()
        await a.sio.emit("msg", i)
        await eventually(lambda: len(cb.got["msg"]) == i + 1, what="one message")
        lat.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    lat.sort()
    assert lat[5] < 0.15, lat  # median cross-node latency on loopback
