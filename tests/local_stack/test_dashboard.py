"""The dashboard's collector and server (``local_stack/dashboard/``) over real HTTP and AMQP.

Relay nodes are stood in for by small aiohttp servers that answer ``/readyz`` and serve
``/metrics`` rendered by the relay node's own exporter (``relay_node.metrics``), so the names the
collector reads are the ones a node really exposes. Regions are the session's emulator, driven
through the SDK's ``ServiceBusAdministrationClient`` and receivers. Down detection uses a port
nobody listens on and a server that accepts but never answers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.servicebus import ServiceBusMessage
from prometheus_client import CollectorRegistry, generate_latest

from local_stack.dashboard import Collector, Dashboard, NodeTarget, RegionTarget, parse_metrics
from local_stack.processes import free_port
from relay_node.metrics import translate_snapshot
from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import EmulatorProcess


class _Snapshot:
    """A prometheus collector over a live :class:`ManagerMetrics`, as the relay node exports it."""

    def __init__(self, metrics: ManagerMetrics):
        self.metrics = metrics

    def collect(self) -> Any:
        yield from translate_snapshot(self.metrics.snapshot())


class FakeNode:
    """An HTTP server with a relay node's /readyz and /metrics (real exposition of real names)."""

    def __init__(self) -> None:
        self.metrics = ManagerMetrics()
        self.ready: tuple[int, dict[str, Any]] = (200, {"ready": True})
        self.metrics_text: str | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Snapshot(self.metrics))
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def _readyz(self, request: web.Request) -> web.Response:
        status, body = self.ready
        return web.json_response(body, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        text = self.metrics_text if self.metrics_text is not None else generate_latest(self.registry).decode()
        return web.Response(text=text, content_type="text/plain")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    n = FakeNode()
    await n.start()
    yield n
    await n.stop()


def collector(nodes: list[NodeTarget] | None = None, regions: list[RegionTarget] | None = None) -> Collector:
    return Collector(lambda: nodes or [], lambda: regions or [], interval=0.2, probe_timeout=1.0)


async def poll(c: Collector, target: NodeTarget) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=c.probe_timeout)) as session:
        return await c.poll_node(session, target)


def test_parse_metrics_sums_samples_over_labels_and_rejects_garbage() -> None:
    text = (
        "# TYPE relay_connected_clients gauge\n"
        'relay_connected_clients{namespace="/"} 3.0\n'
        'relay_connected_clients{namespace="/admin"} 2.0\n'
        "# TYPE socketio_servicebus_envelopes_received counter\n"
        "socketio_servicebus_envelopes_received_total 7.0\n"
    )
    values = parse_metrics(text)
    assert values["relay_connected_clients"] == 5.0
    assert values["socketio_servicebus_envelopes_received_total"] == 7.0
    with pytest.raises(ValueError):
        parse_metrics("this is { not prometheus\n")


async def test_node_rates_latency_and_gauges_from_its_metrics(node: FakeNode) -> None:
    c = collector()
    target = NodeTarget("n1", "r1", False, node.url)
    first = await poll(c, target)
    assert first["state"] == "ready" and first["ready"] is True
    assert first["inPerSec"] is None and first["latencyMs"] is None  # no rate from one sample

    node.metrics.envelopes_received += 30
    node.metrics.observe_batch(10)
    for _ in range(4):
        node.metrics.observe_lag(0.050)
    node.metrics.buffer_depth = 7
    node.metrics.reconnects = 2
    await asyncio.sleep(0.5)
    second = await poll(c, target)
    assert second["bufferDepth"] == 7 and second["reconnects"] == 2
    # 30 envelopes in, 10 out over the same >= 0.5 s between the two scrapes
    assert 0 < second["inPerSec"] <= 60.5, second
    assert second["inPerSec"] == pytest.approx(3 * second["outPerSec"], rel=0.01), second
    assert second["latencyMs"] == pytest.approx(50.0, abs=0.01)
    assert second["url"] == node.url + "/"


async def test_node_not_ready_shows_its_reason_and_bad_metrics_do_not_hide_it(node: FakeNode) -> None:
    node.ready = (503, {"ready": False, "reason": "servicebus not connected: refused"})
    node.metrics_text = "{{{ not the exposition format"
    row = await poll(collector(), NodeTarget("n1", "r1", True, node.url))
    assert row["state"] == "not-ready" and row["ready"] is False
    assert row["reason"] == "servicebus not connected: refused"
    assert row["onPrem"] is True
    assert "unreadable metrics" in row["metricsError"]


async def test_node_on_a_dead_port_is_down_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    row = await poll(collector(), NodeTarget("gone", "r1", False, url))
    assert time.monotonic() - started < 1.5
    assert row["state"] == "down" and row["ready"] is False
    assert row["reason"] == "not listening (connection refused)"


async def test_node_that_never_answers_is_down_after_the_probe_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        row = await poll(collector(), NodeTarget("stuck", "r1", False, f"http://127.0.0.1:{port}"))
        elapsed = time.monotonic() - started
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert row["state"] == "down" and row["reason"] == "no answer (timeout)"
    assert 0.9 <= elapsed < 3.0


async def test_a_node_that_stops_goes_down_and_comes_back(node: FakeNode) -> None:
    target = NodeTarget("n1", "r1", False, node.url)
    c = collector(nodes=[target])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        await c.tick(session)
        assert [n["state"] for n in c.state["nodes"]] == ["ready"]
        port = int(node.url.rsplit(":", 1)[1])
        await node.stop()
        await c.tick(session)
        assert [n["state"] for n in c.state["nodes"]] == ["down"]
        assert c.state["seq"] == 2 and len(c.points) == 2
        app_runner = web.AppRunner(web.Application(), access_log=None)
        node.runner = app_runner
        app = app_runner.app
        app.router.add_get("/readyz", node._readyz)
        app.router.add_get("/metrics", node._metrics)
        await app_runner.setup()
        await web.TCPSite(app_runner, "127.0.0.1", port).start()
        await c.tick(session)
        assert [n["state"] for n in c.state["nodes"]] == ["ready"]


# -- regions, against the emulator -----------------------------------------------------------------
@pytest.fixture
async def region(conn_str: str) -> AsyncIterator[RegionTarget]:
    topic = f"dash-{uuid.uuid4().hex[:8]}"
    async with admin_client(connection_string=conn_str) as admin:
        await admin.create_topic(topic)
        for sub in ("router", "persist", "node-x1"):
            await admin.create_subscription(topic, sub)
        yield RegionTarget("r1", "sbemulatorns", topic, conn_str)
        await admin.delete_topic(topic)


async def test_region_counts_and_dead_letters_peeked_not_received(region: RegionTarget) -> None:
    async with servicebus_client(connection_string=region.connection_string) as client:
        async with client.get_topic_sender(region.topic) as sender:
            await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
            later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            await sender.schedule_messages(ServiceBusMessage("later"), later)
        async with client.get_subscription_receiver(region.topic, "persist") as receiver:
            got = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(got) == 1
            await receiver.dead_letter_message(got[0], reason="not-json", error_description="body is not a batch")

    c = collector(regions=[region])
    try:
        row = await c.poll_region(region)
        assert row["up"] is True and row["error"] is None and row["scheduled"] == 1
        subs = {s["name"]: s for s in row["subscriptions"]}
        assert [s["name"] for s in row["subscriptions"]][:2] == ["persist", "router"]  # functions first
        assert subs["persist"] == {"name": "persist", "kind": "function", "active": 2, "deadLetter": 1}
        assert subs["router"]["active"] == 3 and subs["node-x1"]["kind"] == "node"

        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 15
            while not c.state["deadLetters"] and time.monotonic() < deadline:
                await c.tick(session)  # the peek runs beside the ticks
                await asyncio.sleep(0.2)
        [dead] = c.state["deadLetters"]
        assert (dead["subscription"], dead["reason"], dead["description"]) == (
            "persist", "not-json", "body is not a batch")
        assert dead["body"] == "m0" and dead["region"] == "r1"
        again = await c.poll_region(region)  # peeked, not received: still counted
        assert {s["name"]: s["deadLetter"] for s in again["subscriptions"]}["persist"] == 1
    finally:
        await c.close()


async def test_region_on_a_dead_port_is_down_within_the_probe_timeout(region: RegionTarget) -> None:
    dead_port = free_port()
    conn = region.connection_string.replace(region.connection_string.split("sb://", 1)[1].split(";", 1)[0],
                                            f"localhost:{dead_port}")
    target = RegionTarget("gone", "sb-gone", region.topic, conn)
    c = collector(regions=[target])
    try:
        started = time.monotonic()
        row = await c.poll_region(target)
        assert time.monotonic() - started < 2.0
        assert row["up"] is False and row["error"] and row["subscriptions"] == []
    finally:
        await c.close()


async def test_a_region_whose_emulator_stops_goes_down_and_comes_back(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text(json.dumps(EmulatorProcess.default_config()))
    port = free_port()
    first = EmulatorProcess(config, port=port)
    await asyncio.to_thread(first.start)
    target = RegionTarget("r1", "sbemulatorns", "smoke", first.connection_string("sbemulatorns"))
    c = collector(regions=[target])
    second: EmulatorProcess | None = None
    try:
        assert (await c.poll_region(target))["up"] is True
        await asyncio.to_thread(first.kill)
        started = time.monotonic()
        down = await c.poll_region(target)
        assert down["up"] is False and down["error"], down
        assert time.monotonic() - started < 2.0
        second = EmulatorProcess(config, port=port)
        await asyncio.to_thread(second.start)
        for _ in range(50):  # the first probe after the restart may still meet the old connection
            if (row := await c.poll_region(target))["up"]:
                break
            await asyncio.sleep(0.2)
        assert row["up"] is True and {s["name"] for s in row["subscriptions"]} == {"all", "red"}
    finally:
        await c.close()
        first.kill()
        if second is not None:
            second.stop()


# -- the server ----------------------------------------------------------------------------------
async def test_server_streams_ticks_over_sse_and_serves_page_and_uplot(node: FakeNode) -> None:
    c = Collector(lambda: [NodeTarget("n1", "r1", False, node.url)], lambda: [], interval=0.2)
    dash = Dashboard(c, port=0)
    url = await dash.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(url) as r:
                assert r.status == 200 and 'src="/dashboard.js"' in await r.text()
            async with http.get(url + "vendor/uPlot.iife.min.js") as r:
                assert r.status == 200 and "uPlot" in await r.text()
            async with http.get(url + "events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                messages: list[dict[str, Any]] = []
                async for line in r.content:
                    if line.startswith(b"data: "):
                        messages.append(json.loads(line[len(b"data: "):]))
                    if len(messages) == 3:
                        break
            async with http.get(url + "state.json") as r:
                state = await r.json()
        seqs = [m["state"]["seq"] for m in messages]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        # the first message carries the history so far; later ones only the new points
        assert [p["seq"] for p in messages[1]["points"]] == list(range(seqs[0] + 1, seqs[1] + 1))
        assert messages[0]["points"][-1]["seq"] == seqs[0]
        assert messages[2]["state"]["nodes"][0]["state"] == "ready"
        assert state["state"]["seq"] >= seqs[-1] and len(state["points"]) >= 3
    finally:
        started = time.monotonic()
        await dash.stop()
        assert time.monotonic() - started < 5


async def test_server_on_a_taken_port_raises_instead_of_serving_elsewhere() -> None:
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError):
            await Dashboard(collector(), port=port).start()
    finally:
        taken.close()
        await taken.wait_closed()


async def test_a_throttled_node_is_ready_and_says_so(node: FakeNode) -> None:
    node.ready = (200, {"ready": True, "health": {"ready": True, "throttled": True,
                                                   "reason": "throttled: ServiceBusServerBusyError: ... 50009"}})
    node.metrics.throttled = 1
    row = await poll(collector(), NodeTarget("n1", "r1", False, node.url))
    assert row["state"] == "ready" and row["throttled"] is True
    assert row["reason"].startswith("throttled") and "50009" in row["reason"]


async def test_region_credits_per_second_and_headroom_from_the_meter(region: RegionTarget) -> None:
    async with servicebus_client(connection_string=region.connection_string) as client:
        async with client.get_topic_sender(region.topic) as sender:
            for _ in range(3):
                await sender.send_messages(ServiceBusMessage("x"))
    c = collector(regions=[region])
    try:
        async with aiohttp.ClientSession() as session:
            row = await c.poll_region(region, session)
    finally:
        await c.close()
    credits = row["credits"]
    assert credits["tier"] == "premium" and credits["budget"] == 1000.0  # the session emulator's default
    assert credits["perSecond"] >= 0 and credits["headroom"] == pytest.approx(1 - credits["perSecond"] / 1000)
    assert credits["refusedTotal"] == 0
