"""On-premise over AMQP WebSockets through a real HTTP proxy (Debian's tinyproxy), real processes.

- an on-premise relay node (topic-scoped Listen+Send key, pre-provisioned subscription) with
  ``--transport websockets --http-proxy http://127.0.0.1:PORT`` and a cloud node on plain AMQP
  share region B's topic; a python-socketio client on each; chat crosses both ways. tinyproxy's
  log must show ``CONNECT localhost:<emulator port>`` and the emulator's WebSocket counters must
  grow with the chat (so the traffic really went over the WebSocket, not around it);
- the SDK itself through the proxy: the sync client with its own ``http_proxy`` (websocket-client
  asks for CONNECT), and the aio client through :class:`ConnectTunnel` (aiohttp would send a
  ``GET ws://...`` that proxies refuse; see ``socketio_servicebus/servicebus/tunnel.py``);
- why the tunnel: the aio SDK given the proxy itself is refused by tinyproxy (``GET ws://``);
- a proxy that refuses the CONNECT: the node says so and exits 1 after ``--startup-timeout``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio  # type: ignore[import-untyped]
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode, TransportType
from azure.servicebus.exceptions import ServiceBusError

from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.servicebus.tunnel import ConnectTunnel
from tests.support.emulator_process import EmulatorProcess, running_emulator
from tests.support.tinyproxy import TinyProxy

from .conftest import ONPREM_KEY, ONPREM_KEY_NAME, ONPREM_NODE
from .support import SCALE, RelayProcess

pytestmark = pytest.mark.slow

WAIT = 15.0 * SCALE


async def ws_stats(port: int) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/$emulator/websockets") as r:
        assert r.status == 200
        body: dict[str, int] = await r.json()
        return body


async def sio_client(url: str) -> tuple[socketio.AsyncClient, asyncio.Queue[Any]]:
    client = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[Any] = asyncio.Queue()
    client.on("chat", got.put_nowait)
    await client.connect(url, transports=["websocket"], wait_timeout=5)
    return client, got


async def next_from(got: asyncio.Queue[Any], node: str) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = await asyncio.wait_for(got.get(), WAIT)
        if msg["node"] == node:
            return msg


async def test_onprem_node_over_websockets_through_tinyproxy_chats_with_an_amqp_node(
    regions: EmulatorProcess, conn_b: str, tmp_path: Path,
) -> None:
    port_b = regions.port_of("regionb")
    proxy = TinyProxy(tmp_path, connect_ports=[port_b]).start()
    onprem_conn = (f"Endpoint=sb://localhost:{port_b};SharedAccessKeyName={ONPREM_KEY_NAME};"
                   f"SharedAccessKey={ONPREM_KEY};UseDevelopmentEmulator=true")
    onprem = RelayProcess("--connection-string", onprem_conn, "--node-id", ONPREM_NODE, "--region", "B",
                          "--subscription", f"node-{ONPREM_NODE}",
                          "--transport", "websockets", "--http-proxy", proxy.url)
    cloud = RelayProcess("--connection-string", conn_b, "--node-id", "b-amqp", "--region", "B")
    try:
        onprem.spawn()
        cloud.spawn()
        onprem.wait_started()
        cloud.wait_started()
        log = proxy.log()
        assert f"): CONNECT localhost:{port_b} HTTP/1.1" in log, log[-3000:]
        assert 'Established connection to host "localhost"' in log
        assert f"through the HTTP proxy {proxy.url}" in onprem.stderr()
        assert "CONNECT tunnel 127.0.0.1:" in onprem.stderr()
        c_on, got_on = await sio_client(onprem.url)
        c_cloud, got_cloud = await sio_client(cloud.url)
        try:
            await c_on.call("join", "proxied")
            await c_cloud.call("join", "proxied")
            before = await ws_stats(port_b)
            assert before["connections_open"] >= 1  # the on-premise node's AMQP connection
            await c_on.call("chat", {"room": "proxied", "text": "through the proxy"})
            msg = await next_from(got_cloud, ONPREM_NODE)
            assert (msg["region"], msg["text"]) == ("B", "through the proxy")
            mid = await ws_stats(port_b)
            assert mid["bytes_in"] > before["bytes_in"]  # the on-premise node's send went up the WebSocket
            await c_cloud.call("chat", {"room": "proxied", "text": "back to the site"})
            msg = await next_from(got_on, "b-amqp")
            assert msg["text"] == "back to the site"
            after = await ws_stats(port_b)
            assert after["bytes_out"] > mid["bytes_out"]  # ... and the cloud's message came down it
        finally:
            await c_on.disconnect()
            await c_cloud.disconnect()
        # every tunnel went to the emulator's port, nowhere else (e.g. not 443)
        assert set(proxy.connects()) == {f"localhost:{port_b}"}
        assert onprem.stop() == 0
        assert "Traceback" not in onprem.stderr()
        assert ONPREM_KEY not in onprem.stderr() + (onprem.out.text() if onprem.out else "")
    finally:
        onprem.stop(signal.SIGKILL)
        cloud.stop()
        proxy.stop()


CONFIG = {"UserConfig": {"Namespaces": [{"Name": "proxied",
                                         "Topics": [{"Name": "t", "Subscriptions": [{"Name": "s"}]}]}]}}


@pytest.fixture(scope="module")
def own_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("proxied-emulator"), CONFIG) as proc:
        yield proc


def _sync_sdk_round_trip(conn: str, port: int, proxy_port: int) -> list[str]:
    """The sync SDK with its own ``http_proxy`` (bare host, as the SDK documents it)."""
    with ServiceBusClient.from_connection_string(
        conn, transport_type=TransportType.AmqpOverWebsocket, custom_endpoint_address=f"sb://127.0.0.1:{port}",
        http_proxy={"proxy_hostname": "127.0.0.1", "proxy_port": proxy_port},
    ) as client:
        with client.get_topic_sender("t") as sender:
            sender.send_messages([ServiceBusMessage(f"sync-{i}") for i in range(3)])
        with client.get_subscription_receiver("t", "s") as receiver:
            got: list[str] = []
            for _ in range(10):
                for msg in receiver.receive_messages(max_message_count=10, max_wait_time=5):
                    receiver.complete_message(msg)
                    got.append(str(msg))
                if len(got) >= 3:
                    break
            return got


async def test_the_sdk_itself_through_tinyproxy(own_emulator: EmulatorProcess, tmp_path: Path) -> None:
    conn, port = own_emulator.connection_string("proxied"), own_emulator.port_of("proxied")
    proxy = TinyProxy(tmp_path, connect_ports=[port]).start()
    try:
        before = await ws_stats(port)
        assert await asyncio.to_thread(_sync_sdk_round_trip, conn, port, proxy.port) == [f"sync-{i}" for i in range(3)]
        assert "127.0.0.1:" + str(port) in proxy.connects()
        n_sync = len(proxy.connects())

        tunnel = ConnectTunnel("127.0.0.1", proxy.port, "localhost", port)
        local = await tunnel.start()
        try:
            async with servicebus_client(connection_string=conn, transport_type=TransportType.AmqpOverWebsocket,
                                         custom_endpoint_address=f"sb://127.0.0.1:{local}") as client:
                async with client.get_topic_sender("t") as sender:
                    await sender.send_messages(ServiceBusMessage("aio through the tunnel"))
                async with client.get_subscription_receiver(
                    "t", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
                ) as receiver:
                    msgs = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
            assert [str(m) for m in msgs] == ["aio through the tunnel"]
            assert tunnel.opened >= 2 and tunnel.failed == 0  # one connection per client + the admin-free CBS
        finally:
            await tunnel.close()
        assert proxy.connects()[n_sync:].count(f"localhost:{port}") == tunnel.opened
        after = await ws_stats(port)
        assert after["connections_total"] - before["connections_total"] >= 4  # sync + aio, all over WebSockets
    finally:
        proxy.stop()


async def test_why_the_node_tunnels_itself_for_the_emulator(own_emulator: EmulatorProcess, tmp_path: Path) -> None:
    """The aio SDK given the proxy directly, against the emulator's plain ws://: aiohttp sends
    ``GET ws://...`` to the proxy instead of CONNECT, and tinyproxy refuses it. If this starts
    passing (aiohttp asks for CONNECT for ws:// too), ``ConnectTunnel`` is no longer needed."""
    conn, port = own_emulator.connection_string("proxied"), own_emulator.port_of("proxied")
    proxy = TinyProxy(tmp_path, connect_ports=[port]).start()
    try:
        with pytest.raises(ServiceBusError, match="400"):
            async with servicebus_client(connection_string=conn, transport_type=TransportType.AmqpOverWebsocket,
                                         http_proxy={"proxy_hostname": "127.0.0.1", "proxy_port": proxy.port},
                                         retry_total=0) as client, client.get_topic_sender("t") as sender:
                await sender.send_messages(ServiceBusMessage("never"))
        assert f"): GET ws://localhost:{port}/$servicebus/websocket HTTP/1.1" in proxy.log(), proxy.log()[-2000:]
        assert proxy.connects() == []
    finally:
        proxy.stop()


def test_a_proxy_that_refuses_connect_is_named_and_the_node_exits_1(
    own_emulator: EmulatorProcess, tmp_path: Path,
) -> None:
    conn, port = own_emulator.connection_string("proxied"), own_emulator.port_of("proxied")
    proxy = TinyProxy(tmp_path, connect_ports=[443]).start()  # the emulator's port is not allowed
    node = RelayProcess("--connection-string", conn, "--topic", "t", "--subscription", "s",
                        "--http-proxy", proxy.url, "--startup-timeout", "4")
    try:
        node.spawn()
        assert node.wait(40) == 1
        err = node.stderr()
        refusal = f"the proxy answered CONNECT localhost:{port} with 'HTTP/1.1 403 Access violation'"
        final = [line for line in err.splitlines() if line.startswith("relay-node: error: ")]
        assert len(final) == 1 and f"the proxy {proxy.url} did not open a tunnel" in final[0], err[-3000:]
        assert refusal in final[0]
    finally:
        node.stop(signal.SIGKILL)
        proxy.stop()
