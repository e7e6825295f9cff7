# ruff: noqa: F811
"""ServiceBusManager's lifecycle and failure paths over the real emulator: nothing is lost
silently, and ``health()`` says why it is not ready.

Faults are injected into the manager's own parts (a method that raises, a handler that hangs);
Service Bus is always the real emulator, driven by the unmodified SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from socketio_servicebus import Envelope, Kind, ManagerClosed, ServiceBusManager, encode_batch
from socketio_servicebus.servicebus.clients import ConnectionSettingsError, servicebus_client
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from tests.library.test_manager import (  # noqa: F401 - fixtures
    NODES,
    Factory,
    Node,
    cluster,
    eventually,
    meshed,
    node_config,
    quiet,
    sb,
    sb_conn,
    topic,
)
from tests.library.test_manager_faults import free_port, routed_to
from tests.support.emulator_process import EmulatorProcess


def emit_body(data: Any) -> dict[str, Any]:
    return {"method": "emit", "event": "msg", "data": [data], "binary": False, "namespace": "/",
            "room": None, "skip_sid": None, "callback": None, "host_id": "outsider"}


# ====================================================================== 1. lifecycle


async def test_emit_after_close_raises_and_nothing_is_queued(cluster: Factory) -> None:
    a = await cluster()
    await a.mgr.close()
    assert a.mgr.health()["state"] == "closed" and a.mgr.health()["ready"] is False
    with pytest.raises(ManagerClosed):
        await a.sio.emit("msg", "after close")
    with pytest.raises(ManagerClosed):
        await a.mgr.emit("msg", "after close")
    with pytest.raises(ManagerClosed):
        await a.mgr.start()
    assert await a.mgr.wait_ready(0.2) is False
    assert a.mgr.health()["buffered"] == 0
    await a.mgr.close()  # idempotent


async def test_close_wakes_wait_ready_with_false(sb_conn: str, topic: str) -> None:
    dead = free_port()  # an endpoint nobody listens on: never ready
    mgr = ServiceBusManager(connection_string=sb_conn, topic=topic, write_only=True,
                            client_options={"custom_endpoint_address": f"sb://127.0.0.1:{dead}"})
    await mgr.start()
    waiter = asyncio.ensure_future(mgr.wait_ready(600))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await mgr.close()
    assert await asyncio.wait_for(waiter, 30) is False  # woken by close, not by its 600 s timeout


async def test_failed_start_leaves_the_manager_new_not_wedged() -> None:
    # passes the constructor's check, fails when the SDK client is built
    mgr = ServiceBusManager(connection_string="Endpoint=http://nowhere/;SharedAccessKeyName=k;SharedAccessKey=v",
                            write_only=True)
    for _ in range(2):  # the same clear error each time, not a half-started manager
        with pytest.raises(ConnectionSettingsError):
            await mgr.start()
        assert mgr.health()["state"] == "new" and not mgr.health()["ready"]
    with pytest.raises(ConnectionSettingsError):
        await mgr.emit("msg", "x")
    await mgr.close()
    assert mgr.health()["state"] == "closed"
    with pytest.raises(ManagerClosed):
        await mgr.emit("msg", "x")


async def test_bad_key_is_reported_not_wedged(sb_conn: str, topic: str) -> None:
    import re

    bad = re.sub(r"SharedAccessKey=[^;]*", "SharedAccessKey=d3Jvbmcta2V5", sb_conn)
    assert bad != sb_conn
    mgr = ServiceBusManager(connection_string=bad, topic=topic, write_only=True, backoff_initial=0.2, backoff_max=0.5)
    try:
        await mgr.start()
        await eventually(lambda: mgr.health()["last_error"] is not None, what="the refusal reported")
        health = mgr.health()
        assert health["state"] == "running" and not health["ready"]
        assert "Authentication" in health["reason"] or "Unauthorized" in health["reason"], health
        errors = mgr.metrics.snapshot()["publish_errors"]
        await mgr.emit("msg", "kept")  # buffered, retried with backoff: not lost, not raised
        await eventually(lambda: mgr.metrics.snapshot()["publish_errors"] > errors, what="a failed send of it")
        assert mgr.health()["buffered"] == 1
    finally:
        await mgr.close()
    assert mgr.metrics.snapshot()["close_dropped"] == 1  # counted when close() gave up on it


@pytest.mark.slow
async def test_start_against_closed_port_becomes_ready_when_the_emulator_comes_up(tmp_path: Any) -> None:
    port = free_port()
    cfg = tmp_path / "Config.json"
    cfg.write_text(json.dumps(node_config(["socketio"], NODES, port=port)))
    first = EmulatorProcess(cfg, port=port)
    first.start()  # only to learn the connection string (its key) for that port
    conn = first.connection_string("sbemulatorns")
    first.stop()
    em = EmulatorProcess(cfg, port=port)
    mgr = ServiceBusManager(connection_string=conn, node_id="n0",
                            backoff_initial=0.2, backoff_max=1.0,
                            subscription=node_subscription_spec(topic="socketio", node_id="n0").name)
    node = Node(mgr)
    try:
        await node.start()  # nothing listens on the port yet
        assert await mgr.wait_ready(2) is False
        health = mgr.health()
        assert health["state"] == "running" and health["reason"].startswith("servicebus not connected")
        assert health["last_error"]
        em.start()
        assert await mgr.wait_ready(30), mgr.health()
        assert mgr.health()["reason"] is None
    finally:
        await node.stop()
        em.stop()


# ====================================================================== 2. supervised tasks


async def test_dead_outbox_is_reported_then_restarted_without_losing_envelopes(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    cb = await b.client()
    outbox = a.mgr._outbox
    assert outbox is not None
    broken = True
    real_take = outbox._take

    def take() -> Any:
        if broken:
            raise RuntimeError("injected outbox fault")
        return real_take()

    outbox._take = take  # type: ignore[method-assign]
    await a.sio.emit("msg", "survives")
    await eventually(lambda: not a.mgr.health()["ready"], what="not ready once the outbox died")
    health = a.mgr.health()
    assert "outbox" in health["failed_tasks"] and "injected outbox fault" in health["reason"], health
    await eventually(lambda: a.mgr.metrics.snapshot()["task_failures"] >= 2, what="restarted, died again")
    assert not a.mgr.health()["ready"]
    broken = False
    await eventually(lambda: a.mgr.health()["ready"], what="ready after a restart that lives")
    await eventually(lambda: cb.got["msg"] == ["survives"], what="the buffered emit is delivered")


async def test_dead_heartbeat_loop_is_reported_then_restarted(cluster: Factory) -> None:
    a = await cluster()
    broken = True
    real = a.mgr._heartbeat_envelope

    def heartbeat(**kw: Any) -> Envelope:
        if broken:
            raise RuntimeError("injected heartbeat fault")
        return real(**kw)

    a.mgr._heartbeat_envelope = heartbeat  # type: ignore[method-assign]
    await eventually(lambda: "heartbeat" in a.mgr.health()["failed_tasks"], what="heartbeat death reported")
    assert "injected heartbeat fault" in a.mgr.health()["reason"]
    broken = False
    await eventually(lambda: a.mgr.health()["ready"], what="ready once the restarted loop lives")
    before = a.mgr.metrics.snapshot()["envelopes_published"]
    await eventually(lambda: a.mgr.metrics.snapshot()["envelopes_published"] > before, what="heartbeats again")


async def test_listener_cancelled_from_outside_is_restarted(cluster: Factory) -> None:
    a, b = await cluster(), await cluster()
    ca = await a.client()
    assert a.mgr._supervisor is not None
    first = a.mgr._supervisor.task("listener")
    assert first is not None
    first.cancel()
    await eventually(lambda: a.mgr._supervisor is not None and a.mgr._supervisor.task("listener") is not first,
                     what="listener restarted")
    assert a.mgr.metrics.snapshot()["task_failures"] >= 1
    await eventually(lambda: a.mgr.health()["ready"], what="ready again")

    async def delivered() -> bool:
        await b.sio.emit("msg", "after restart")
        await asyncio.sleep(0.3)
        return "after restart" in ca.got["msg"]

    await eventually(delivered, what="receiving again")


async def test_requests_beyond_the_bound_are_answered_busy(cluster: Factory) -> None:
    a = await cluster()
    b = await cluster(max_concurrent_requests=1)
    await meshed(a, b)
    release = asyncio.Event()

    @b.mgr.on_server_event("slow")
    async def slow() -> str:
        await release.wait()
        return "done"

    first = asyncio.ensure_future(a.mgr.server_side_emit("slow", timeout=10))
    await eventually(lambda: b.mgr._requests_active == 1, what="first request being served")
    assert await a.mgr.server_side_emit("slow", timeout=5) == []  # b answered "busy" at once
    assert b.mgr.metrics.snapshot()["requests_refused"] == 1
    assert a.mgr.metrics.snapshot()["requests_timed_out"] == 0
    release.set()
    assert await first == ["done"]


# ====================================================================== 3. close order


async def test_close_settles_every_message_it_received(cluster: Factory, sb_conn: str, topic: str) -> None:
    # a pre-provisioned subscription: close() keeps it, so what it did not settle would stay
    a = await cluster(subscription=node_subscription_spec(topic=topic, node_id="n0").name, node_id="n0",
                      receive_mode="peek_lock")
    n = 400
    async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
        for start in range(0, n, 100):
            batch = [ServiceBusMessage(encode_batch([Envelope(kind=Kind.EMIT, origin_node="outsider",
                                                              origin_region="local", body=emit_body(i))],
                                                    visited=("local",)), application_properties=routed_to(a))
                     for i in range(start, start + 100)]
            await sender.send_messages(batch)
    await eventually(lambda: a.mgr.metrics.snapshot()["messages_received"] >= 50, what="receiving")
    await a.mgr.close()  # in the middle of the stream
    snap = a.mgr.metrics.snapshot()
    assert snap["settle_errors"] == 0, snap
    assert snap["settled"] == snap["messages_received"] > 0, snap
    assert a.mgr._to_settle == []
    # what was settled is gone; the rest is still there for the next node
    async with servicebus_client(connection_string=sb_conn) as client, \
            client.get_subscription_receiver(topic, a.mgr.subscription_name) as r:
        left = 0
        while msgs := await r.receive_messages(max_message_count=100, max_wait_time=1):
            left += len(msgs)
            for m in msgs:
                await r.complete_message(m)
    assert left == n - snap["settled"]


# ====================================================================== 4. idempotence that retries


async def test_abandoned_message_is_processed_on_redelivery(cluster: Factory, sb_conn: str, topic: str) -> None:
    a = await cluster(receive_mode="peek_lock")  # settlement exists only with peek_lock
    calls: list[str] = []
    real = a.mgr._on_heartbeat

    def flaky(env: Envelope) -> None:
        if env.origin_node == "outsider":
            calls.append(env.id)
            if len(calls) == 1:
                raise RuntimeError("injected handler fault")
        real(env)

    a.mgr._on_heartbeat = flaky  # type: ignore[method-assign]
    hb = Envelope(kind=Kind.HEARTBEAT, origin_node="outsider", origin_region="local",
                  body={"clients": 3, "interval": 5})
    async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
        await sender.send_messages(ServiceBusMessage(encode_batch([hb], visited=("local",)),
                                                     application_properties=routed_to(a)))
    await eventually(lambda: any(n["node_id"] == "outsider" for n in a.mgr.nodes()), what="redelivery processed")
    snap = a.mgr.metrics.snapshot()
    assert calls == [hb.id, hb.id]
    assert snap["abandoned"] == 1 and snap["duplicates_dropped"] == 0, snap


async def test_handling_failure_with_receive_and_delete_is_counted_and_logged_as_dropped(
        cluster: Factory, sb_conn: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    a = await cluster()  # the default: receive_and_delete, nothing to abandon
    assert a.mgr.receive_mode == "receive_and_delete"

    def broken(env: Envelope) -> None:
        raise RuntimeError("injected handler fault")

    a.mgr._on_heartbeat = broken  # type: ignore[method-assign]
    hb = Envelope(kind=Kind.HEARTBEAT, origin_node="outsider", origin_region="local", body={"clients": 1})
    with caplog.at_level(logging.ERROR, logger="socketio.servicebus"):
        async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
            await sender.send_messages(ServiceBusMessage(encode_batch([hb], visited=("local",)),
                                                         application_properties=routed_to(a)))
        await eventually(lambda: a.mgr.metrics.snapshot()["processing_failures"] == 1, what="failure counted")
    snap = a.mgr.metrics.snapshot()
    assert snap["abandoned"] == 0 and snap["settled"] == 0, snap
    assert any("dropped (receive_and_delete" in r.getMessage() and r.levelno >= logging.ERROR
               for r in caplog.records)


async def test_redelivery_skips_only_the_envelopes_already_handled(cluster: Factory, sb_conn: str,
                                                                   topic: str) -> None:
    a = await cluster(receive_mode="peek_lock")  # settlement exists only with peek_lock
    handled: list[str] = []
    failing: set[str] = set()
    real = a.mgr._on_heartbeat

    def flaky(env: Envelope) -> None:
        if env.origin_node == "outsider":
            if env.id in failing:
                failing.discard(env.id)
                raise RuntimeError("injected handler fault")
            handled.append(env.id)
        real(env)

    a.mgr._on_heartbeat = flaky  # type: ignore[method-assign]
    first = Envelope(kind=Kind.HEARTBEAT, origin_node="outsider", origin_region="local", body={"clients": 1})
    second = Envelope(kind=Kind.HEARTBEAT, origin_node="outsider", origin_region="local", body={"clients": 2})
    failing.add(second.id)
    async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
        # one Service Bus message: the first envelope is handled, the second fails once
        await sender.send_messages(ServiceBusMessage(_two_envelopes(first, second),
                                                     application_properties=routed_to(a)))
    await eventually(lambda: len(handled) == 2, what="second envelope handled on redelivery")
    await quiet()
    assert handled == [first.id, second.id]  # the first one not again
    snap = a.mgr.metrics.snapshot()
    assert snap["abandoned"] == 1 and snap["duplicates_dropped"] == 1, snap


def _two_envelopes(e1: Envelope, e2: Envelope) -> bytes:
    from socketio_servicebus import assemble_batch, encode_envelope

    return assemble_batch([encode_envelope(e1), encode_envelope(e2)], hops=0, visited=("local",))


# ====================================================================== 5. send failures


@pytest.mark.slow
async def test_a_refused_message_drops_only_its_envelopes(tmp_path: Any) -> None:
    """The broker's limit (64 KiB) is below the manager's (256 KiB): of three messages sent
    together, the oversized one is refused and counted; the other two are delivered."""
    cfg = node_config(["socketio"], NODES)
    cfg["UserConfig"]["Namespaces"][0]["MaxMessageSizeInKilobytes"] = 64
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(cfg))
    em = EmulatorProcess(path)
    em.start()
    conn = em.connection_string("sbemulatorns")
    nodes: list[Node] = []
    try:
        for n, kw in (("n0", {"send_interval": 1.0}), ("n1", {})):
            mgr = ServiceBusManager(connection_string=conn, node_id=n, backoff_initial=0.2, backoff_max=1.0,
                                    subscription=node_subscription_spec(topic="socketio", node_id=n).name,
                                    heartbeat_interval=30, **kw)  # type: ignore[arg-type]
            nodes.append(Node(mgr))
            await nodes[-1].start()
            assert await mgr.wait_ready(15), mgr.health()
        a, b = nodes
        cb = await b.client()
        await a.sio.emit("msg", "first")  # leaves at once; the next ones wait for send_interval
        await a.sio.emit("msg", "before")
        await a.sio.emit("msg", "x" * 100_000, namespace="/big")  # another batch key: its own message
        await a.sio.emit("msg", "after")
        assert await a.mgr.flush(10)
        await eventually(lambda: cb.got["msg"] == ["first", "before", "after"], what="the two small ones")
        snap = a.mgr.metrics.snapshot()
        assert snap["send_dropped"] == 1 and snap["envelopes_published"] >= 3, snap
        assert a.mgr.health()["ready"]
    finally:
        for node in nodes:
            await node.stop()
        em.stop()


# ====================================================================== 6. loud failures


async def test_settle_failures_are_counted_and_logged_at_warning(cluster: Factory, sb_conn: str, topic: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    a = await cluster(receive_mode="peek_lock")  # settlement exists only with peek_lock
    ca = await a.client()

    async def refuse(*_: Any) -> None:
        raise RuntimeError("injected settle fault")

    a.mgr._settle_one = refuse  # type: ignore[method-assign]
    env = Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", body=emit_body("x"))
    with caplog.at_level(logging.WARNING, logger="socketio.servicebus"):
        async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
            await sender.send_messages(ServiceBusMessage(encode_batch([env], visited=("local",)),
                                                         application_properties=routed_to(a)))
        await eventually(lambda: a.mgr.metrics.snapshot()["settle_errors"] >= 1, what="settle error counted")
    assert ca.got["msg"][:1] == ["x"]
    assert any("injected settle fault" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# ====================================================================== 7. misaddressed envelopes are counted


async def test_misaddressed_envelopes_are_counted_not_delivered(cluster: Factory, sb_conn: str, topic: str) -> None:
    """What the node assertions elsewhere rely on: an envelope that gets past a subscription
    rule (here: application properties that lie) but is not for this node is counted."""
    a = await cluster()
    ca = await a.client()
    other = Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", target_node="someone-else",
                     body=emit_body("not for a"))
    own = Envelope(kind=Kind.EMIT, origin_node=a.mgr.node_id, origin_region="local", body=emit_body("a's own"))
    good = Envelope(kind=Kind.EMIT, origin_node="outsider", origin_region="local", body=emit_body("for a"))
    async with servicebus_client(connection_string=sb_conn) as client, client.get_topic_sender(topic) as sender:
        for env in (other, own, good):
            await sender.send_messages(ServiceBusMessage(encode_batch([env], visited=("local",)),
                                                         application_properties=routed_to(a)))
    await eventually(lambda: ca.got["msg"] == ["for a"], what="the good one")
    await eventually(lambda: a.mgr.metrics.snapshot()["misaddressed_dropped"] == 2, what="two counted")
    await quiet()
    assert ca.got["msg"] == ["for a"]


async def test_subscription_check_failures_are_counted_and_logged(cluster: Factory,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    a = await cluster(subscription_check_interval=0.2)

    def broken_admin() -> Any:
        raise RuntimeError("injected admin fault")

    a.mgr._admin = broken_admin  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="socketio.servicebus"):
        await eventually(lambda: a.mgr.metrics.snapshot()["subscription_check_errors"] >= 2, what="checks failing")
    assert any("injected admin fault" in r.getMessage() for r in caplog.records)
    assert a.mgr.health()["ready"]  # the subscription itself is fine


# ====================================================================== 8. SDK options are public


async def test_admin_and_client_options_reach_the_sdk(sb_conn: str, topic: str) -> None:
    """Options are passed through: a proxy nobody listens on (admin) and an endpoint nobody
    listens on (data plane) show up as the errors that keep the node from being ready."""
    dead = free_port()
    mgr = ServiceBusManager(connection_string=sb_conn, topic=topic, node_id="n3", backoff_initial=0.2,
                            backoff_max=0.5,
                            admin_options={"proxies": {"http": f"http://127.0.0.1:{dead}",
                                                       "https": f"http://127.0.0.1:{dead}"}})
    node = Node(mgr)
    try:
        await node.start()
        assert await mgr.wait_ready(2) is False
        await eventually(lambda: str(dead) in (mgr.health()["last_error"] or ""), what="the proxy's port in the error")
    finally:
        await node.stop()
    emitter = ServiceBusManager(connection_string=sb_conn, topic=topic, write_only=True, backoff_initial=0.2,
                                client_options={"custom_endpoint_address": f"sb://127.0.0.1:{dead}"})
    try:
        await emitter.start()
        assert await emitter.wait_ready(2) is False
        assert emitter.health()["reason"].startswith("servicebus not connected")
    finally:
        await emitter.close()
    plain = ServiceBusManager(connection_string=sb_conn, topic=topic, write_only=True)
    try:
        await plain.start()
        assert await plain.wait_ready(10), plain.health()  # the same settings without the options work
    finally:
        await plain.close()
