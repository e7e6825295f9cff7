# ruff: noqa: F811
"""ServiceBusManager under faults: poison messages, duplicate deliveries, broker restart,
subscription deleted from outside.  Raw ``azure-servicebus`` SDK calls play the outside world."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from socketio_servicebus import Envelope, Kind, encode_batch
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from tests.library.test_manager import (  # noqa: F401 - fixtures
    NODES,
    Factory,
    Node,
    cluster,
    eventually,
    node_config,
    quiet,
    sb,
    sb_conn,
    topic,
)
from tests.support.emulator_process import EmulatorProcess


def routed_to(node: Node) -> dict[str, Any]:
    """Application properties that the node's subscription rule admits."""
    return {"sio_origin_node": "outsider", "sio_origin_region": "local", "sio_kind": "emit", "sio_ns": "/",
            "sio_persist": False, "sio_hops": 0}


async def dead_letters(conn: str, topic: str, subscription: str, want: int) -> list[Any]:
    async with servicebus_client(connection_string=conn) as client:
        async with client.get_subscription_receiver(topic, subscription, sub_queue="deadletter") as r:
            got: list[Any] = []
            deadline = time.monotonic() + 10
            while len(got) < want and time.monotonic() < deadline:
                got += await r.receive_messages(max_message_count=10, max_wait_time=1)
            return got


async def test_poison_messages_are_dead_lettered_with_reason(cluster: Factory, sb_conn: str, topic: str) -> None:
    a = await cluster(receive_mode="peek_lock")
    ca = await a.client()
    good = encode_batch([Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", body={
        "method": "emit", "event": "msg", "data": ["after-poison"], "binary": False, "namespace": "/",
        "room": None, "skip_sid": None, "callback": None, "host_id": "outsider"})], visited=("local",))
    deep = b'{"v":1,"envelopes":' + b"[" * 200 + b"]" * 200 + b"}"
    poison = {
        b"not json at all": "not-json",
        json.dumps({"v": 99, "envelopes": []}).encode(): "bad-version",
        json.dumps({"v": 1, "envelopes": [{"v": 1}]}).encode(): "bad-field:id",
        deep: "too-deep",
    }
    async with servicebus_client(connection_string=sb_conn) as client:
        async with client.get_topic_sender(topic) as sender:
            for body in poison:
                await sender.send_messages(ServiceBusMessage(body, application_properties=routed_to(a)))
            await sender.send_messages(ServiceBusMessage(good, application_properties=routed_to(a)))
    await eventually(lambda: ca.got["msg"] == ["after-poison"], what="good message after poison")
    await eventually(lambda: a.mgr.metrics.snapshot()["dead_lettered"] == 4, what="4 dead-lettered")
    dlq = await dead_letters(sb_conn, topic, a.mgr.subscription_name, 4)
    reasons = sorted(m.dead_letter_reason for m in dlq)
    assert reasons == sorted(poison.values()), reasons
    assert all(m.dead_letter_error_description for m in dlq)
    assert a.mgr.health()["ready"]


async def test_poison_messages_counted_and_logged_in_receive_and_delete(
    cluster: Factory, sb_conn: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The default mode cannot dead-letter: a poison message is counted, logged with its reason
    and dropped, and the listener goes on."""
    a = await cluster()
    assert a.mgr.receive_mode == "receive_and_delete"
    ca = await a.client()
    good = encode_batch([Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", body={
        "method": "emit", "event": "msg", "data": ["after-poison"], "binary": False, "namespace": "/",
        "room": None, "skip_sid": None, "callback": None, "host_id": "outsider"})], visited=("local",))
    with caplog.at_level("WARNING", logger="socketio.servicebus"):
        async with servicebus_client(connection_string=sb_conn) as client:
            async with client.get_topic_sender(topic) as sender:
                await sender.send_messages(ServiceBusMessage(b"not json at all", application_properties=routed_to(a)))
                await sender.send_messages(ServiceBusMessage(good, application_properties=routed_to(a)))
        await eventually(lambda: ca.got["msg"] == ["after-poison"], what="good message after poison")
    snap = a.mgr.metrics.snapshot()
    assert snap["poison_received"] == 1 and snap["dead_lettered"] == 0
    assert any("not-json" in r.getMessage() and "cannot be dead-lettered" in r.getMessage() for r in caplog.records)
    assert a.mgr.health()["ready"]


async def test_same_message_delivered_twice_reaches_client_once(cluster: Factory, sb_conn: str, topic: str) -> None:
    a = await cluster()
    ca = await a.client()
    body = encode_batch([Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", body={
        "method": "emit", "event": "msg", "data": ["once"], "binary": False, "namespace": "/",
        "room": None, "skip_sid": None, "callback": None, "host_id": "outsider"})], visited=("local",))
    async with servicebus_client(connection_string=sb_conn) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages(ServiceBusMessage(body, application_properties=routed_to(a)))
            await sender.send_messages(ServiceBusMessage(body, application_properties=routed_to(a)))
    await eventually(lambda: a.mgr.metrics.snapshot()["duplicates_dropped"] == 1, what="duplicate dropped")
    await quiet()
    assert ca.got["msg"] == ["once"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
async def test_emulator_restart_on_same_port(tmp_path: Any) -> None:
    """Broker down mid-stream: local delivery goes on, the buffer holds, health flips, and
    after the restart (same port) delivery resumes and the buffer drains."""
    from socketio_servicebus import ServiceBusManager
    from tests.library.test_manager import Node as _Node

    port = free_port()
    cfg = tmp_path / "Config.json"
    cfg.write_text(json.dumps(node_config(["socketio"], NODES, port=port)))
    em = EmulatorProcess(cfg, port=port)
    em.start()
    conn = em.connection_string("sbemulatorns")
    nodes: list[_Node] = []
    try:
        for n in ("n0", "n1"):
            mgr = ServiceBusManager(connection_string=conn, node_id=n, heartbeat_interval=0.3, node_timeout=3,
                                    backoff_initial=0.2, backoff_max=1.0,
                                    subscription=node_subscription_spec(topic="socketio", node_id=n).name)
            node = _Node(mgr)
            nodes.append(node)
            await node.start()
            assert await mgr.wait_ready(15)
        a, b = nodes
        ca, cb = await a.client(), await b.client()
        await a.sio.emit("msg", "before")
        await eventually(lambda: cb.got["msg"] == ["before"], what="before outage")

        em.stop()
        for i in range(20):
            await a.sio.emit("msg", f"during-{i}")
        assert ca.got["msg"][-1] == "during-19" or len(ca.got["msg"]) >= 1
        await eventually(lambda: ca.got["msg"][-1:] == ["during-19"], what="local delivery during outage")
        await eventually(lambda: not a.mgr.health()["ready"], what="health flips to not ready")
        assert a.mgr.health()["buffered"] > 0
        assert a.mgr.health()["last_error"]

        em2 = EmulatorProcess(cfg, port=port)
        em2.start()
        try:
            await eventually(lambda: a.mgr.health()["ready"] and b.mgr.health()["ready"], timeout=20,
                             what="both ready again")
            await eventually(lambda: a.mgr.health()["buffered"] == 0, timeout=10, what="buffer drained")
            await eventually(lambda: cb.got["msg"][-1:] == ["during-19"], timeout=10, what="buffered delivered")
            assert cb.got["msg"] == ["before"] + [f"during-{i}" for i in range(20)]
            await b.sio.emit("msg", "after")
            await eventually(lambda: ca.got["msg"][-1:] == ["after"], what="after restart")
            # The outage itself was observed above (a not ready, buffered, last_error set) and
            # both directions work again. Which counter records the recovery (a manager-level
            # reconnect, a failed send, or neither when the SDK's own retry reattached inside one
            # call) depends on timing, so none is asserted: each was 0 in some runs.
        finally:
            for node in nodes:
                await node.stop()
            nodes.clear()
            em2.stop()
    finally:
        for node in nodes:
            await node.stop()
        em.stop()


@pytest.mark.slow
async def test_subscription_deleted_from_outside_is_recreated(cluster: Factory, sb_conn: str, topic: str) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    await a.sio.emit("msg", "one")
    await eventually(lambda: cb.got["msg"] == ["one"], what="before deletion")
    async with admin_client(connection_string=sb_conn) as admin:
        await admin.delete_subscription(topic, b.mgr.subscription_name)
    await eventually(lambda: b.mgr.metrics.snapshot()["subscription_recreated"] >= 1, timeout=10, what="recreated")
    await eventually(lambda: b.mgr.health()["ready"], timeout=10, what="ready again")

    async def delivered() -> bool:
        await a.sio.emit("msg", "two")
        await asyncio.sleep(0.3)
        return "two" in cb.got["msg"]

    await eventually(delivered, timeout=10, what="delivery resumes")
