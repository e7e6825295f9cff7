"""AMQP over WebSockets (``/$servicebus/websocket``, subprotocol ``AMQPWSB10``) against the emulator.

The real aio SDK with ``TransportType.AmqpOverWebsocket``; a python-qpid-proton client engine
over an aiohttp WebSocket for what the SDK never does (split and merged frames, not reading,
text messages); plain HTTP for refusals. The proxy path is in ``tests/relay_node/test_websocket_proxy.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, TransportType
from azure.servicebus.aio import ServiceBusClient
from proton import Collector, Connection, Delivery, Endpoint, Event, Link, Message, Transport

from servicebus_emulator.websocket import HIGH_WATER, MAX_BUFFERED
from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator
from tests.support.sas import sas_token

NS = "wsns"
KEY_NAME, KEY = "RootManageSharedAccessKey", "SAS_KEY_VALUE"
CONFIG = {
    "UserConfig": {
        "Namespaces": [{
            "Name": NS,
            # named here (the raw AMQP client below signs with it); without it the key is random
            "SharedAccessPolicies": [{"Name": KEY_NAME, "Key": KEY, "Rights": ["Manage", "Listen", "Send"]}],
            "Topics": [
                {"Name": "chat", "Subscriptions": [{"Name": "all"}]},
                {"Name": "bulk", "Subscriptions": [{"Name": "s"}]},
                {"Name": "split", "Subscriptions": [{"Name": "s"}]},
            ],
        }]
    }
}
WAIT = 15.0 * float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture(scope="module")
def ws_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("ws-emulator"), CONFIG) as proc:
        yield proc


@pytest.fixture
def cs(ws_emulator: EmulatorProcess) -> str:
    return ws_emulator.connection_string(NS)


@pytest.fixture
def port(ws_emulator: EmulatorProcess) -> int:
    return ws_emulator.port_of(NS)


async def ws_stats(port: int) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/$emulator/websockets") as r:
        assert r.status == 200
        body: dict[str, int] = await r.json()
        return body


def test_the_emulator_prints_its_websocket_endpoint(ws_emulator: EmulatorProcess, port: int) -> None:
    line = f"websocket {NS}: ws://127.0.0.1:{port}/$servicebus/websocket (AMQP over WebSockets, subprotocol AMQPWSB10"
    assert any(out.startswith(line) for out in ws_emulator.output), ws_emulator.output[:5]


async def test_the_sdk_sends_and_receives_over_websockets(cs: str, port: int) -> None:
    """The unmodified SDK, pointed at the emulator's port with ``custom_endpoint_address``."""
    before = await ws_stats(port)
    big = "x" * 200_000  # larger than one AMQP frame: split across frames and WebSocket messages
    async with ServiceBusClient.from_connection_string(
        cs, transport_type=TransportType.AmqpOverWebsocket, custom_endpoint_address=f"sb://127.0.0.1:{port}",
    ) as client:
        async with client.get_topic_sender("chat") as sender:
            await sender.send_messages([ServiceBusMessage(f"m{i}", message_id=f"id-{i}") for i in range(10)])
            await sender.send_messages(ServiceBusMessage(big, message_id="big"))
        got: list[Any] = []
        async with client.get_subscription_receiver("chat", "all") as receiver:
            while len(got) < 11:
                msgs = await receiver.receive_messages(max_message_count=20, max_wait_time=5)
                assert msgs, f"only {len(got)} of 11 arrived"
                for msg in msgs:
                    await receiver.complete_message(msg)
                    got.append(msg)
    assert [m.message_id for m in got] == [f"id-{i}" for i in range(10)] + ["big"]
    assert str(got[-1]) == big
    after = await ws_stats(port)
    assert after["connections_total"] - before["connections_total"] >= 2  # one per client link set
    assert after["bytes_in"] - before["bytes_in"] > 200_000  # the big message went up the WebSocket
    assert after["bytes_out"] - before["bytes_out"] > 200_000  # ... and came back down it
    await _until(lambda s: s["connections_open"] == before["connections_open"], port)


async def test_our_client_helper_derives_the_emulator_endpoint(cs: str, port: int) -> None:
    """``servicebus_client`` with only ``transport_type``: without ``custom_endpoint_address`` the SDK
    would dial port 443; the helper names the emulator's port."""
    before = await ws_stats(port)
    async with servicebus_client(connection_string=cs, transport_type=TransportType.AmqpOverWebsocket) as client:
        async with client.get_topic_sender("chat") as sender:
            await sender.send_messages(ServiceBusMessage("via helper"))
        async with client.get_subscription_receiver(
            "chat", "all", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=5, max_wait_time=5)
    assert [str(m) for m in msgs] == ["via helper"]
    assert (await ws_stats(port))["connections_total"] > before["connections_total"]


async def test_refusals_are_plain_and_say_why(port: int) -> None:
    url = f"http://127.0.0.1:{port}/$servicebus/websocket"
    before = await ws_stats(port)
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:  # no upgrade
            assert r.status == 400
            assert "AMQPWSB10" in await r.text()
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Protocol": "mqtt"}
        async with http.get(url, headers=headers) as r:  # the wrong subprotocol
            assert r.status == 400
            text = await r.text()
            assert "subprotocol AMQPWSB10 required" in text and "mqtt" in text
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:  # a client offering no subprotocol
            await http.ws_connect(url)
        assert err.value.status == 400
        async with http.post(url, data=b"AMQP") as r:
            assert r.status == 405
        ws = await http.ws_connect(url, protocols=("AMQPWSB10",))
        assert ws.protocol == "AMQPWSB10"
        await ws.send_str("AMQP")  # text instead of binary
        msg = await ws.receive(timeout=WAIT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1003
        await ws.close()
    after = await ws_stats(port)
    assert after["refused"] - before["refused"] == 4


# -- a proton client engine over an aiohttp WebSocket ------------------------------------------


class ProtonOverWebSocket:
    """An AMQP client engine whose bytes go over one WebSocket, cut into pieces of our choosing."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, cut: Any = None):
        self.ws = ws
        self.cut = cut or (lambda data: [data])
        self.transport = Transport()
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.connection = Connection()
        self.connection.hostname = "localhost"
        self.transport.bind(self.connection)
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.events: list[Event] = []
        self.received: list[bytes] = []
        self.closed_by_peer = False

    async def send_pending(self) -> None:
        while (pending := self.transport.pending()) > 0:
            data = bytes(self.transport.peek(pending) or b"")
            self.transport.pop(pending)
            for piece in self.cut(data):
                await self.ws.send_bytes(piece)

    async def read_once(self, within: float) -> bool:
        msg = await self.ws.receive(timeout=within)
        if msg.type != aiohttp.WSMsgType.BINARY:
            self.closed_by_peer = True
            return False
        data = memoryview(msg.data)
        while data:
            n = max(1, self.transport.capacity())
            self.transport.push(bytes(data[:n]))
            data = data[n:]
        self._collect()
        return True

    def _collect(self) -> None:
        while (event := self.collector.peek()) is not None:
            self.events.append(event)
            if event.type == Event.DELIVERY and event.delivery is not None and event.link is not None:
                delivery: Delivery = event.delivery
                if event.link.is_receiver and delivery.readable and not delivery.partial:
                    self.received.append(event.link.recv(delivery.pending) or b"")
                    event.link.advance()
                    delivery.update(Delivery.ACCEPTED)
                    delivery.settle()
            self.collector.pop()

    async def until(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            await self.send_pending()
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}"
            if not await self.read_once(left):
                assert done(), f"the emulator closed the WebSocket before {what}"
                return
        await self.send_pending()

    async def open(self) -> Any:
        self.connection.open()
        session = self.connection.session()
        session.open()
        await self.until(lambda: self.connection.state & Endpoint.REMOTE_ACTIVE, "the AMQP open")
        return session

    async def put_token(self, session: Any, port: int, path: str) -> None:
        cbs = session.sender("cbs-out")
        cbs.target.address = "$cbs"
        cbs.open()
        await self.until(lambda: cbs.credit > 0, "credit on $cbs")
        audience = f"sb://localhost:{port}/{path}"
        message = Message(body=sas_token(audience, KEY_NAME, KEY, int(time.time()) + 600), properties={
            "operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience})
        delivery = cbs.delivery(b"t1")  # type: ignore[arg-type]
        cbs.send(message.encode())
        cbs.advance()
        await self.until(lambda: delivery.remote_state == Delivery.ACCEPTED, "the put-token to be accepted")

    def receiver(self, session: Any, address: str, credit: int) -> Link:
        link = session.receiver(f"recv-{address}")
        link.source.address = address
        link.snd_settle_mode = Link.SND_UNSETTLED
        link.open()
        link.flow(credit)
        return link


def body_of(payload: bytes) -> bytes:
    """The data section of an encoded message, as the SDK sent it."""
    message = Message()
    message.decode(payload)
    return bytes(message.body)


async def _until(check: Any, port: int) -> dict[str, int]:
    deadline = time.monotonic() + WAIT
    while True:
        stats = await ws_stats(port)
        if check(stats) or time.monotonic() > deadline:
            assert check(stats), stats
            return stats
        await asyncio.sleep(0.1)


def _random_cuts(rng: random.Random) -> Any:
    def cut(data: bytes) -> list[bytes]:
        pieces, i = [], 0
        while i < len(data):
            n = rng.choice((1, 2, 3, 7, 64))
            pieces.append(data[i : i + n])
            i += n
        return pieces
    return cut


async def test_frames_split_at_any_byte_and_close_from_either_side(cs: str, port: int) -> None:
    """AMQP frames cut into 1..64-byte WebSocket messages going up; whatever comes down is fed
    to the engine as it arrives. An AMQP close ends with WebSocket close 1000; a client that just
    drops the WebSocket has its AMQP connection torn down too (its locks released)."""
    async with servicebus_client(connection_string=cs) as client, client.get_topic_sender("split") as sender:
        await sender.send_messages([ServiceBusMessage(f"s{i}" * 500) for i in range(5)])
    before = await ws_stats(port)
    url = f"http://127.0.0.1:{port}/$servicebus/websocket"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, protocols=("AMQPWSB10",))
        amqp = ProtonOverWebSocket(ws, _random_cuts(random.Random(14)))
        session = await amqp.open()
        await amqp.put_token(session, port, "split/subscriptions/s")
        amqp.receiver(session, "split/subscriptions/s", credit=5)
        await amqp.until(lambda: len(amqp.received) == 5, "five deliveries")
        assert [body_of(p).decode() for p in amqp.received] == [f"s{i}" * 500 for i in range(5)]
        assert (await ws_stats(port))["connections_open"] == before["connections_open"] + 1
        amqp.connection.close()
        await amqp.until(lambda: amqp.connection.state & Endpoint.REMOTE_CLOSED, "the AMQP close")
        msg = await ws.receive(timeout=WAIT)  # then the emulator closes the WebSocket
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        assert ws.close_code == 1000
        await ws.close()
        await _until(lambda s: s["connections_open"] == before["connections_open"], port)

        # the other way round: the client drops the WebSocket mid-connection
        ws = await http.ws_connect(url, protocols=("AMQPWSB10",))
        amqp = ProtonOverWebSocket(ws)
        await amqp.open()
        await _until(lambda s: s["connections_open"] == before["connections_open"] + 1, port)
        await ws.close()
        after = await _until(lambda s: s["connections_open"] == before["connections_open"], port)
    sent_in = after["messages_in"] - before["messages_in"]
    assert sent_in > 40 and (after["bytes_in"] - before["bytes_in"]) / sent_in < 100  # cut up, one by one
    assert after["connections_total"] - before["connections_total"] == 2


async def test_a_client_that_does_not_read_is_held_back_not_buffered(cs: str, port: int) -> None:
    """60 messages of 200 kB (12 MB) with credit for all of them, and the client stops reading:
    the emulator's bridge stops reading that client once 1 MiB waits to be sent, and everything
    arrives once the client reads again."""
    count, size = 60, 200_000
    async with servicebus_client(connection_string=cs) as client, client.get_topic_sender("bulk") as sender:
        for i in range(count):
            await sender.send_messages(ServiceBusMessage(bytes([i]) * size))
    before = await ws_stats(port)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/$servicebus/websocket", protocols=("AMQPWSB10",),
                                   max_msg_size=8 * 1024 * 1024)
        amqp = ProtonOverWebSocket(ws)
        session = await amqp.open()
        session.incoming_capacity = 64 * 1024 * 1024
        await amqp.put_token(session, port, "bulk/subscriptions/s")
        amqp.receiver(session, "bulk/subscriptions/s", credit=count)
        await amqp.send_pending()
        paused = await _until(lambda s: s["reads_paused"] > before["reads_paused"], port)
        assert paused["overflow_disconnects"] == before["overflow_disconnects"]
        await amqp.until(lambda: len(amqp.received) == count, f"{count} deliveries")
        assert [(len(b), b[0]) for b in map(body_of, amqp.received)] == [(size, i) for i in range(count)]
        await ws.close()
    after = await _until(lambda s: s["connections_open"] == before["connections_open"], port)
    assert after["overflow_disconnects"] == before["overflow_disconnects"]
    # what waited was the client's own credit's worth, never more: at most 60 x 200 kB
    assert HIGH_WATER < after["max_buffered"] <= count * (size + 1024) < MAX_BUFFERED
