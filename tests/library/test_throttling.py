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
