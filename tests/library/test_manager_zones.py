# ruff: noqa: ASYNC109, B023
"""Trust zones on the bus, end to end: real python-socketio servers with ServiceBusManagers in two
zones (cloud nodes ``a1``, ``a2``; on-premise ``factory1``), real clients, the emulator over TCP,
and an attacker holding the topic's **Listen+Send** key who sends with the real azure-servicebus
SDK: unsigned forgeries, and (a compromised site) messages correctly signed with the site's key
but outside its policy. After each attack the cloud clients are still connected and in their
rooms, nothing forged reached a client, and the drop is counted and logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from local_stack.topology_config import connection_string
from socketio_servicebus import ServiceBusManager
from socketio_servicebus.manager.options import ClusterOptions, ConnectionOptions, Limits
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind
from socketio_servicebus.zones import ZoneKey
from tests.library.test_manager import Client, Node, eventually, quiet
from tests.support.emulator_process import EmulatorProcess
from tests.support.zones import make_zones

NODE_IDS = ["a1", "a2", "factory1"]
TOPICS = 12
ONPREM_KEY = "onprem-listen-send-key-0123456789"
ROOT_KEY = "root-key-for-the-zone-tests-0123456789"
Z = make_zones()


def config(topics: list[str]) -> dict[str, Any]:
    def subs(topic: str) -> list[dict[str, Any]]:
        out = []
        for n in NODE_IDS:
            spec = node_subscription_spec(topic=topic, node_id=n)
            out.append({"Name": spec.name, "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 5,
                                                           "DefaultMessageTimeToLive": "PT5M"},
                        "Rules": [{"Name": spec.rule, "Properties": {"FilterType": "Sql",
                                                                     "SqlFilter": {"SqlExpression": spec.sql}}}]})
        return out

    listen_send = [{"Name": "sio-onprem", "Key": ONPREM_KEY, "Rights": ["Listen", "Send"]}]
    ns = {"Name": "sbemulatorns",
          "SharedAccessPolicies": [{"Name": "root", "Key": ROOT_KEY, "Rights": ["Manage", "Listen", "Send"]}],
          "Topics": [{"Name": t, "SharedAccessPolicies": listen_send, "Subscriptions": subs(t)} for t in topics]}
    return {"UserConfig": {"Namespaces": [ns], "Logging": {"Type": "Console"}}}


_next = iter(range(TOPICS))


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("sbzones") / "Config.json"
    path.write_text(json.dumps(config([f"z-{i}" for i in range(TOPICS)])))
    proc = EmulatorProcess(path)
    proc.start()
    yield proc
    proc.stop()


class Fleet:
    def __init__(self, sb: EmulatorProcess, topic: str, node_timeout: float = 3.0) -> None:
        self.node_timeout = node_timeout
        port = sb.port_of("sbemulatorns")
        self.root = connection_string(port, "root", ROOT_KEY)
        self.onprem = connection_string(port, "sio-onprem", ONPREM_KEY)
        self.topic = topic
        self.nodes: dict[str, Node] = {}

    async def node(self, node_id: str, zone: str) -> Node:
        conn = self.onprem if zone != "cloud" else self.root
        mgr = ServiceBusManager(
            connection=ConnectionOptions(connection_string=conn, topic=self.topic, subscription=f"node-{node_id}",
                                         backoff_initial=0.2, backoff_max=1.0),
            cluster=ClusterOptions(heartbeat_interval=0.5, node_timeout=self.node_timeout, request_timeout=3.0),
            limits=Limits(max_nodes=50), node_id=node_id, region="eu", zones=Z.zone_set(zone))
        node = Node(mgr)
        self.nodes[node_id] = node
        await node.start()
        assert await mgr.wait_ready(15), mgr.health()
        return node

    async def forge(self, kind: Kind, body: dict[str, Any], *, node: str | list[str] = "a2",
                    key: ZoneKey | None = None, target: str | None = None, persist: bool = False, count: int = 1,
                    props: dict[str, Any] | None = None) -> None:
        """Send ``count`` messages per origin node with the Listen+Send key, each one envelope,
        signed with ``key`` (``None``: unsigned), claiming origin ``node`` (or each of a list)."""
        if kind.value in {"emit", "disconnect", "enter_room", "leave_room", "close_room", "callback"}:
            body = {"method": kind.value, "namespace": "/", **body}
        msgs = []
        for origin in [node] * count if isinstance(node, str) else [n for n in node for _ in range(count)]:
            env = Envelope(kind=kind, origin_node=origin, origin_region="eu", target_node=target, persist=persist,
                           body={**body, "host_id": origin} if "method" in body else dict(body))
            batch = Batch((env,), 0, ("eu",))
            data = batch.encode()
            p: dict[Any, Any] = dict(batch.application_properties())
            if key is not None:
                p.update(key.sign(data, batch.hops, batch.visited))
            p.update(props or {})
            msgs.append(ServiceBusMessage(data, application_properties=p, message_id=env.id))
        async with ServiceBusClient.from_connection_string(self.onprem) as client, \
                client.get_topic_sender(self.topic) as sender:
            for i in range(0, len(msgs), 100):
                await sender.send_messages(msgs[i:i + 100])

    def dropped(self, node_id: str, reason: str) -> int:
        return self.nodes[node_id].mgr.metrics.forged_dropped[reason]

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes.values()), return_exceptions=True)


async def start_fleet(sb: EmulatorProcess, node_timeout: float = 3.0) -> Fleet:
    f = Fleet(sb, f"z-{next(_next)}", node_timeout)
    await f.node("a1", "cloud")
    await f.node("a2", "cloud")
    await f.node("factory1", "factory1")
    await eventually(lambda: all(n.mgr.server_count() == 3 for n in f.nodes.values()), what="3 nodes meshed")
    return f


@pytest.fixture
async def fleet(sb: EmulatorProcess) -> AsyncIterator[Fleet]:
    f = await start_fleet(sb)
    yield f
    await f.stop()


@pytest.fixture
async def patient_fleet(sb: EmulatorProcess) -> AsyncIterator[Fleet]:
    """Nodes that forget a silent node only after 2 minutes: what is registered stays registered
    for the whole test, however slowly the machine sends the flood."""
    f = await start_fleet(sb, node_timeout=120.0)
    yield f
    await f.stop()


async def still_fine(fleet: Fleet, victims: list[tuple[Client, list[str]]]) -> None:
    """Every victim is connected, in its rooms on its node, and gets a real emit to each room."""
    for client, rooms in victims:
        assert client.sio.connected
        mgr = client.node.mgr
        assert set(rooms) <= set(mgr.get_rooms(client.sid, "/")), mgr.get_rooms(client.sid, "/")
    for room in {r for _, rooms in victims for r in rooms}:
        await fleet.nodes["a2"].sio.emit("msg", f"real to {room}", room=room)
        await eventually(lambda: all(f"real to {room}" in c.got["msg"] for c, rooms in victims if room in rooms),
                         what=f"a real emit to {room}")


def forgeries() -> list[tuple[str, Kind, Callable[[Client, Client], dict[str, Any]], str]]:
    return [
        ("disconnect", Kind.DISCONNECT, lambda v, evil: {"sid": v.sid}, "unsigned"),
        ("enter_room", Kind.ENTER_ROOM, lambda v, evil: {"sid": evil.sid, "room": "lobby"}, "unsigned"),
        ("leave_room", Kind.LEAVE_ROOM, lambda v, evil: {"sid": v.sid, "room": "lobby"}, "unsigned"),
        ("close_room", Kind.CLOSE_ROOM, lambda v, evil: {"room": "lobby"}, "unsigned"),
        ("emit claiming a cloud node", Kind.EMIT,
         lambda v, evil: {"event": "msg", "data": ["forged"], "room": "lobby", "binary": False}, "unsigned"),
    ]


@pytest.mark.parametrize("name, kind, body, reason", forgeries(), ids=[f[0] for f in forgeries()])
async def test_forged_messages_with_a_listen_send_key_change_nothing(
        fleet: Fleet, name: str, kind: Kind, body: Callable[[Client, Client], dict[str, Any]], reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    victim = await fleet.nodes["a1"].client()
    await victim.join("lobby")
    evil = await fleet.nodes["a2"].client()  # the attacker's own socket, on a cloud node
    with caplog.at_level(logging.WARNING):
        await fleet.forge(kind, body(victim, evil), node="a2")
        await eventually(lambda: fleet.dropped("a1", reason) == 1, what="a1 counts the forgery")
        await quiet()
    assert "forged_dropped reason=unsigned" in caplog.text and "node 'a2'" in caplog.text
    assert "forged" not in victim.got["msg"] and not evil.got["msg"]
    assert "lobby" not in fleet.nodes["a2"].mgr.get_rooms(evil.sid, "/")
    await still_fine(fleet, [(victim, ["lobby"])])
    assert evil.got["msg"] == []  # the attacker's socket was never put into the room


async def test_a_compromised_site_key_is_refused_outside_its_policy(fleet: Fleet) -> None:
    victim = await fleet.nodes["a1"].client()
    await victim.join("lobby")
    await victim.join("chat:factory1")
    site = Z.site
    await fleet.forge(Kind.DISCONNECT, {"sid": victim.sid}, node="factory1", key=site)
    await fleet.forge(Kind.CLOSE_ROOM, {"room": "lobby"}, node="factory1", key=site)
    await fleet.forge(Kind.LEAVE_ROOM, {"sid": victim.sid, "room": "lobby"}, node="factory1", key=site)
    await fleet.forge(Kind.EMIT, {"event": "msg", "data": ["outside"], "room": "lobby", "binary": False},
                      node="factory1", key=site)
    await fleet.forge(Kind.EMIT, {"event": "msg", "data": ["as a1"], "room": "chat:factory1", "binary": False},
                      node="a1", key=site)  # a cloud node's id: a1 filters it out, a2 refuses it
    await fleet.forge(Kind.EMIT, {"event": "msg", "data": ["inside"], "room": "chat:factory1", "binary": False},
                      node="factory1", key=site)
    await eventually(lambda: victim.got["msg"] == ["inside"], what="the site's own room still works")
    await eventually(lambda: fleet.dropped("a1", "not-own-sockets") == 3, what="socket ops refused on a1")
    await eventually(lambda: fleet.dropped("a1", "room-outside-zone") == 1, what="emit outside refused on a1")
    await eventually(lambda: fleet.dropped("a2", "node-not-in-zone") == 1, what="claim of a1 refused on a2")
    await still_fine(fleet, [(victim, ["lobby", "chat:factory1"])])
    assert victim.got["msg"][0] == "inside" and "outside" not in victim.got["msg"] and "as a1" not in victim.got["msg"]


async def test_the_site_chats_both_ways_in_its_rooms_and_is_refused_outside_them(fleet: Fleet) -> None:
    cloud = await fleet.nodes["a1"].client()
    plant = await fleet.nodes["factory1"].client()
    plant_peer = await fleet.nodes["factory1"].client()
    for c in (cloud, plant, plant_peer):
        await c.join("chat:factory1")
        await c.join("lobby")
    await fleet.nodes["factory1"].sio.emit("msg", "from the plant", room="chat:factory1")
    await fleet.nodes["a1"].sio.emit("msg", "from the cloud", room="chat:factory1")
    await fleet.nodes["a1"].sio.emit("msg", "cloud in lobby", room="lobby")
    for c in (cloud, plant, plant_peer):
        await eventually(lambda: {"from the plant", "from the cloud", "cloud in lobby"} <= set(c.got["msg"]),
                         what="both ways in the site's room; the cloud reaches the site everywhere")
    await fleet.nodes["factory1"].sio.emit("msg", "plant in lobby", room="lobby")
    await fleet.nodes["factory1"].sio.emit("msg", "just you", to=plant.sid)  # its own socket: not a forgery
    await eventually(lambda: fleet.dropped("a1", "room-outside-zone") == 1, what="the plant refused in lobby")
    await quiet()
    assert "plant in lobby" in plant_peer.got["msg"]  # its own node still delivers it locally
    assert "plant in lobby" not in cloud.got["msg"]
    assert fleet.nodes["a2"].mgr.metrics.forged_dropped["room-outside-zone"] == 0  # no member of lobby on a2
    assert sum(fleet.nodes["a1"].mgr.metrics.forged_dropped.values()) == 1  # the to=sid emit is no forgery
    await eventually(lambda: fleet.nodes["a1"].mgr.metrics.zone_untouched_dropped >= 1, what="to=sid counted apart")


async def test_a_hello_flood_is_answered_once_per_interval(fleet: Fleet) -> None:
    a1 = fleet.nodes["a1"].mgr
    await quiet()
    before = a1.metrics.hello_limited
    body = {"clients": 0, "interval": 0.5, "hello": True}
    await fleet.forge(Kind.HEARTBEAT, body, node="factory1", key=Z.site, count=200)
    await fleet.forge(Kind.HEARTBEAT, body, node="a2", count=200)  # unsigned, claiming a cloud node
    await eventually(lambda: a1.metrics.hello_limited - before >= 190, what="hellos limited on a1")
    await eventually(lambda: fleet.dropped("a1", "unsigned") == 200, what="unsigned hellos dropped")
    assert a1.metrics.hello_limited - before <= 200


@pytest.mark.slow
async def test_made_up_node_ids_never_enter_the_registry(patient_fleet: Fleet,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    fleet = patient_fleet
    a1 = fleet.nodes["a1"].mgr
    body = {"clients": 0, "interval": 0.5}

    made_up = [f"ghost-{i}" for i in range(1000)]
    with caplog.at_level(logging.WARNING):
        await fleet.forge(Kind.HEARTBEAT, body, node=made_up)
        await eventually(lambda: fleet.dropped("a1", "unsigned") == 1000, timeout=120, what="1000 unsigned ids")
        site_ids = [f"factory1-{i}" for i in range(1000)]  # the site owns "factory1-*", K = 4
        await fleet.forge(Kind.HEARTBEAT, body, node=site_ids, key=Z.site)
        await fleet.forge(Kind.HEARTBEAT, body, node=made_up[:50], key=Z.site)  # not its ids at all
        await eventually(lambda: fleet.dropped("a1", "zone-node-cap") == 997, timeout=120,
                         what="the site's ids beyond K")
        await eventually(lambda: fleet.dropped("a1", "node-not-in-zone") == 50, what="ids the site does not own")
    live = {n["node_id"] for n in a1.nodes()}
    assert not any(n.startswith("ghost-") for n in live)
    assert len([n for n in live if n.startswith("factory1")]) == 4  # factory1 itself + K - 1 made up
    # logged, and bounded: at most 10 lines per reason and minute on each of the three nodes
    assert 0 < caplog.text.count("forged_dropped reason=unsigned:") <= 30

