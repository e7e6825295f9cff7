"""The manager under Standard-tier throttling, for 60 s (a fault test, slow).

An emulator in ``--tier standard`` with 10 credits a second; node ``a`` (write-only) emits 150
times a second to a client of node ``b``: 45 times what the budget carries unbatched.
Nothing may be duplicated; every emit ``a`` accepted is delivered or counted as dropped;
latency stays bounded; ``a`` reports the throttling and stays ready with the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from aiohttp import web

from relay_node.metrics import translate_snapshot
from socketio_servicebus import ServiceBusManager
from socketio_servicebus.manager.options import ClusterOptions, ConnectionOptions, Limits
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from tests.support.emulator_process import EmulatorProcess

pytestmark = pytest.mark.slow

TOPIC = "throttled"
SECONDS = 60
RATE = 150  # emits per second from a
MAX_QUEUE_DELAY = 2.0


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    spec = node_subscription_spec(topic=TOPIC, node_id="b")
    config = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Topics": [{"Name": TOPIC, "Subscriptions": [{
        "Name": spec.name, "Properties": {"LockDuration": "PT30S", "DefaultMessageTimeToLive": "PT5M"},
        "Rules": [{"Name": spec.rule, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": spec.sql}}}],
    }]}]}], "Logging": {"Type": "Console"}}}
    path = tmp_path_factory.mktemp("throttled") / "Config.json"
    path.write_text(json.dumps(config))
    proc = EmulatorProcess(path, extra_args=["--tier", "standard", "--credits-per-second", "10"])
    proc.start()
    yield proc
    proc.stop()


async def test_a_stream_far_above_the_budget_for_60_s(standard: EmulatorProcess) -> None:
    conn = standard.connection_string("sbemulatorns")
    spec = node_subscription_spec(topic=TOPIC, node_id="b")
    # retry_total=0: the SDK's one retry (the manager's default) absorbs short throttling
    # unseen; here every refusal reaches the outbox, as when heavy throttling outlasts it
    a = ServiceBusManager(connection=ConnectionOptions(connection_string=conn, topic=TOPIC,
                                                       client_options={"retry_total": 0}), node_id="a",
                          write_only=True, limits=Limits(max_queue_delay=MAX_QUEUE_DELAY))
    b = ServiceBusManager(connection=ConnectionOptions(connection_string=conn, topic=TOPIC, subscription=spec.name),
                          cluster=ClusterOptions(heartbeat_interval=30.0, node_timeout=90.0), node_id="b")
    sio_a = socketio.AsyncServer(async_mode="aiohttp", client_manager=a, logger=False)
    sio_b = socketio.AsyncServer(async_mode="aiohttp", client_manager=b, logger=False)
    app = web.Application()
    sio_b.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = socketio.AsyncClient(reconnection=False)
    got: dict[int, float] = {}
    duplicates = 0

    @client.on("m")
    async def on_m(data: dict[str, Any]) -> None:
        nonlocal duplicates
        if data["s"] in got:
            duplicates += 1
        got[data["s"]] = time.monotonic() - data["t"]

    sent_at: dict[int, float] = {}
    throttled_ready: list[dict[str, Any]] = []
    try:
        await a.start()
        await b.start()
        assert await a.wait_ready(30) and await b.wait_ready(30), (a.health(), b.health())
        await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
        t0 = time.monotonic()
        for s in range(SECONDS * RATE):
            delay = t0 + s / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[s] = time.monotonic()
            await sio_a.emit("m", {"s": s, "t": sent_at[s]})
            health = a.health()
            if health["throttled"] and len(throttled_ready) < 5:
                throttled_ready.append(health)
        assert await a.flush(30)
        # what was sent is received: wait until nothing more arrives
        last, still = len(got), 0.0
        while still < 2.0:
            await asyncio.sleep(0.25)
            still = still + 0.25 if len(got) == last else 0.0
            last = len(got)
    finally:
        await client.disconnect()
        await asyncio.gather(a.close(), b.close())
        await runner.cleanup()
    m = a.metrics
    dropped = m.backpressure_dropped + m.expired_dropped + m.buffer_dropped + m.send_dropped + m.close_dropped
    latencies = sorted(got.values())
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    print(f"\nemitted {len(sent_at)}, delivered {len(got)}, dropped {dropped} "
          f"(backpressure {m.backpressure_dropped}, expired {m.expired_dropped}), sends throttled "
          f"{m.sends_throttled}, messages {m.messages_published}, p50 {latencies[len(latencies) // 2]:.3f} s, "
          f"p99 {p99:.3f} s")
    assert duplicates == 0
    assert len(sent_at) == len(got) + dropped  # accepted = delivered + counted drops
    assert m.sends_throttled > 0  # the budget was far below the load
    assert len(got) > 0
    # bounded: the queue bound, plus the send that was in flight and the SDK's own retry
    assert p99 <= MAX_QUEUE_DELAY + 3.0, p99
    # throttled, and ready all the same, with the reason shown
    assert throttled_ready and all(h["ready"] and h["reason"].startswith("throttled") for h in throttled_ready)
    names = {f.name for f in translate_snapshot(m.snapshot())}
    assert any(n.endswith("sends_throttled") for n in names) and any(n.endswith("throttled") for n in names)


@pytest.fixture(scope="module")
def budget60(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    subs = []
    for node in ("p", "q"):
        spec = node_subscription_spec(topic="paired", node_id=node)
        subs.append({"Name": spec.name, "Properties": {"LockDuration": "PT30S", "DefaultMessageTimeToLive": "PT5M"},
                     "Rules": [{"Name": spec.rule, "Properties": {"FilterType": "Sql",
                                                                  "SqlFilter": {"SqlExpression": spec.sql}}}]})
    config = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Topics": [
        {"Name": "paired", "Subscriptions": subs}]}], "Logging": {"Type": "Console"}}}
    path = tmp_path_factory.mktemp("budget60") / "Config.json"
    path.write_text(json.dumps(config))
    proc = EmulatorProcess(path, extra_args=["--tier", "standard", "--credits-per-second", "60"])
    proc.start()
    yield proc
    proc.stop()


async def _paired_run(conn: str, credit_budget: float | None, seconds: float = 12.0, rate: float = 20.0) -> dict[str, Any]:
    """Nodes p and q each emit ``rate``/s to the other's client; the counts after the run."""
    from socketio_servicebus.manager.options import BatchingOptions

    nodes = []
    for node in ("p", "q"):
        spec = node_subscription_spec(topic="paired", node_id=node)
        mgr = ServiceBusManager(
            connection=ConnectionOptions(connection_string=conn, topic="paired", subscription=spec.name,
                                         client_options={"retry_total": 0}),
            batching=BatchingOptions(send_interval=1.0 if credit_budget else 0.015, credit_budget=credit_budget),
            cluster=ClusterOptions(heartbeat_interval=1.0), node_id=node)
        sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, logger=False)
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        nodes.append((mgr, sio, runner, site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]
    clients: list[socketio.AsyncClient] = []
    latencies: list[float] = []
    try:
        for mgr, _, _, port in nodes:
            await mgr.start()
            assert await mgr.wait_ready(30), mgr.health()
            client = socketio.AsyncClient(reconnection=False)

            @client.on("m")
            async def on_m(data: dict[str, Any]) -> None:
                latencies.append(time.monotonic() - data["t"])

            await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
            clients.append(client)
        await asyncio.sleep(2.0)  # heartbeats: each knows the other (the credit estimate counts nodes)

        async def emit(sio: socketio.AsyncServer) -> None:
            t0 = time.monotonic()
            for s in range(int(seconds * rate)):
                delay = t0 + s / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sio.emit("m", {"t": time.monotonic()})

        published0 = [mgr.metrics.envelopes_published for mgr, *_ in nodes]
        messages0 = [mgr.metrics.messages_published for mgr, *_ in nodes]
        await asyncio.gather(*(emit(sio) for _, sio, _, _ in nodes))
        await asyncio.sleep(3.0)
        envelopes = sum(mgr.metrics.envelopes_published for mgr, *_ in nodes) - sum(published0)
        messages = sum(mgr.metrics.messages_published for mgr, *_ in nodes) - sum(messages0)
        latencies.sort()
        return {
            "credit_budget": credit_budget, "messages_per_envelope": round(messages / max(envelopes, 1), 3),
            "throttled": sum(mgr.metrics.sends_throttled for mgr, *_ in nodes),
            "window": max(mgr.metrics.credit_window_seconds_last for mgr, *_ in nodes),
            "p50": round(latencies[len(latencies) // 2], 3), "p99": round(latencies[int(len(latencies) * 0.99)], 3),
            "delivered": len(latencies),
        }
    finally:
        for client in clients:
            await client.disconnect()
        for mgr, _, runner, _ in nodes:
            await mgr.close()
            await runner.cleanup()


async def test_credit_aware_batching_degrades_into_batches_not_throttling(budget60: EmulatorProcess) -> None:
    conn = budget60.connection_string("sbemulatorns")
    default = await _paired_run(conn, None)
    await asyncio.sleep(2.0)  # the meter's debt from the first run is paid
    aware = await _paired_run(conn, 60.0)
    print(f"\ndefault      {default}\ncredit-aware {aware}")
    assert aware["window"] > 0
    assert aware["messages_per_envelope"] < default["messages_per_envelope"]
    assert aware["throttled"] < default["throttled"]
