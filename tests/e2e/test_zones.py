"""Trust zones in the whole local stack: ``factory1`` (its own zone, allowed ``chat:factory1…``)
chats both ways in its rooms and is refused outside them; forgeries sent with the region's
on-premise Listen+Send key reach no client, no history row and no other region, and are counted
and logged where they arrive."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest
import socketio
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from local_stack.stack import LocalStack, parse_metrics
from socketio_servicebus.topology import load_topology
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind
from socketio_servicebus.zones import ZoneKey
from tests.support.history_api import fetch_history

FORGED = "socketio_servicebus_forged_dropped_total"
# the stack's loop: its processes' output (the logs checked below) is read there
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def connect(url: str, rooms: list[str], inbox: list[str]) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    client.on("chat", lambda m: inbox.append(m["text"]))
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    for room in rooms:
        ack = await client.call("join", room, timeout=10)
        assert ack and ack.get("ok"), ack
    return client


async def wait_for(predicate: Any, within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


async def metrics(stack: LocalStack, node: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(stack.node_url(node) + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out = parse_metrics(text)
    for line in text.splitlines():  # keep the reason label too
        if line.startswith(FORGED + "{"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def forged(values: dict[str, float], reason: str) -> float:
    return values.get(f'{FORGED}{{reason="{reason}"}}', 0.0)


async def test_factory1_chats_in_its_rooms_and_is_refused_outside_them(stack: LocalStack) -> None:
    own, outside = f"factory1-z-{uuid.uuid4().hex[:6]}", f"lobby-{uuid.uuid4().hex[:6]}"
    cloud_in: list[str] = []
    near_in: list[str] = []
    plant_in: list[str] = []
    cloud = await connect(stack.node_url("a1"), [own, outside], cloud_in)  # westeurope
    near = await connect(stack.node_url("b1"), [outside], near_in)  # northeurope, with factory1
    plant = await connect(stack.node_url("factory1"), [own, outside], plant_in)
    try:
        b1_before = forged(await metrics(stack, "b1"), "room-outside-zone")
        await plant.call("chat", {"room": own, "text": "from the plant"}, timeout=10)
        await cloud.call("chat", {"room": own, "text": "from the cloud"}, timeout=10)
        await cloud.call("chat", {"room": outside, "text": "cloud in lobby"}, timeout=10)
        await wait_for(lambda: {"from the plant", "from the cloud"} <= set(cloud_in), what="cloud sees both")
        await wait_for(lambda: {"from the plant", "from the cloud", "cloud in lobby"} <= set(plant_in),
                       what="the plant sees both, and the cloud everywhere")
        ack = await plant.call("chat", {"room": outside, "text": "plant in lobby"}, timeout=10)
        assert ack.get("ok")  # its own node delivered it locally
        await wait_for(lambda: "plant in lobby" in plant_in, what="local delivery on factory1")
        deadline = time.monotonic() + 20
        while forged(await metrics(stack, "b1"), "room-outside-zone") <= b1_before:
            assert time.monotonic() < deadline, "b1 did not count the plant's emit outside its rooms"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # time for a stray copy through the router to arrive in westeurope
        assert "plant in lobby" not in cloud_in and "plant in lobby" not in near_in
    finally:
        for c in (cloud, near, plant):
            await c.disconnect()


def _message(kind: Kind, node: str, body: dict[str, Any], key: ZoneKey | None, *, persist: bool = False,
             region: str = "northeurope") -> ServiceBusMessage:
    if kind.value in {"emit", "disconnect", "enter_room", "leave_room", "close_room"}:
        body = {"method": kind.value, "namespace": "/", "host_id": node, **body}
    env = Envelope(kind=kind, origin_node=node, origin_region=region, persist=persist, body=body)
    batch = Batch((env,), 0, (region,))
    data = batch.encode()
    props: dict[Any, Any] = dict(batch.application_properties())
    if key is not None:
        props.update(key.sign(data, batch.hops, batch.visited))
    return ServiceBusMessage(data, application_properties=props, message_id=env.id, content_type="application/json")


async def test_forged_traffic_reaches_no_client_no_table_and_no_other_region(stack: LocalStack) -> None:
    room = f"victims-{uuid.uuid4().hex[:6]}"
    far_in: list[str] = []
    near_in: list[str] = []
    far = await connect(stack.node_url("a1"), [room], far_in)  # the other region
    near = await connect(stack.node_url("b1"), [room], near_in)  # the forger's region
    site = stack.zone_key("factory1")  # a compromised site: its own key, correctly signed
    near_sid = near.get_sid("/")
    emit = {"event": "chat", "data": [{"room": room, "text": "forged"}], "room": "chat:" + room, "binary": False}
    try:
        a1_before, b1_before = await metrics(stack, "a1"), await metrics(stack, "b1")
        msgs = [
            _message(Kind.EMIT, "a2", emit, None, persist=True),  # unsigned, claiming a cloud node
            _message(Kind.EMIT, "factory1", emit, site, persist=True),  # signed, outside its rooms
            _message(Kind.EMIT, "a2", emit, site, persist=True),  # signed by the site for a cloud node id
            _message(Kind.DISCONNECT, "factory1", {"sid": near_sid}, site),
            _message(Kind.CLOSE_ROOM, "factory1", {"room": "chat:" + room}, site),
            _message(Kind.ENTER_ROOM, "a2", {"sid": near_sid, "room": "chat:elsewhere"}, None),
        ]
        topic = load_topology()["topic"]
        async with ServiceBusClient.from_connection_string(stack.on_prem_connection_string("northeurope")) as sb, \
                sb.get_topic_sender(topic) as sender:
            for m in msgs:
                await sender.send_messages(m)
        deadline = time.monotonic() + 30
        while True:
            b1 = await metrics(stack, "b1")
            counted = {r: forged(b1, r) - forged(b1_before, r)
                       for r in ("unsigned", "room-outside-zone", "node-not-in-zone", "not-own-sockets")}
            if counted == {"unsigned": 2, "room-outside-zone": 1, "node-not-in-zone": 1, "not-own-sockets": 2}:
                break
            assert time.monotonic() < deadline, counted
            await asyncio.sleep(0.3)
        # the Functions counted and logged them too (router, persist), with the claimed origin: only
        # then is "nothing reached the table or the other region" a statement about these messages
        log_file = stack.run_dir / "logs" / "functions.log"
        for line in ("forged_dropped reason=unsigned router[northeurope]",
                     "forged_dropped reason=room-outside-zone persist[northeurope]",
                     "forged_dropped reason=node-not-in-zone persist[northeurope]",
                     "forged_dropped reason=unsigned persist[northeurope]"):
            await wait_for(lambda line=line: line in log_file.read_text(errors="replace"), within=30,
                           what=f"log: {line}")
        b1_log = stack.run_dir / "logs" / "node-b1.log"
        for line in ("forged_dropped reason=unsigned", "node 'a2'", "forged_dropped reason=not-own-sockets"):
            await wait_for(lambda line=line: line in b1_log.read_text(errors="replace"), what=f"b1 log: {line}")
        await asyncio.sleep(2.0)  # time for anything the router had forwarded to arrive
        assert "forged" not in far_in and "forged" not in near_in
        assert near.connected and far.connected
        # nothing in the other region: a1 never even saw the forgeries (the router forwarded none)
        a1_after = await metrics(stack, "a1")
        assert a1_after.get(FORGED, 0.0) == a1_before.get(FORGED, 0.0)
        # still in the room, on both sides: a real message reaches both
        await far.call("chat", {"room": room, "text": "still here"}, timeout=10)
        await wait_for(lambda: "still here" in near_in and "still here" in far_in, what="a real chat after")
        assert "forged" not in near_in
        # nothing in the history table: only the real message
        deadline = time.monotonic() + 20
        while not (events := await fetch_history(stack.functions_url, "chat:" + room, "",
                                                 function_key=stack.function_key)):
            assert time.monotonic() < deadline, "the real chat was not persisted"
            await asyncio.sleep(0.3)
        assert [e["data"]["text"] for e in events] == ["still here"]
    finally:
        for c in (far, near):
            await c.disconnect()
