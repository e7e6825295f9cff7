"""The emulator under abuse: garbage on the socket, unknown entities, clients that vanish or
never settle, and many connections at once. After each, a real SDK client must still work."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.exceptions import MessagingEntityNotFoundError
from proton import Collector, Connection, Endpoint, Transport

from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "robust",
                "Topics": [
                    {"Name": "alive", "Subscriptions": [{"Name": "s"}]},
                    {"Name": "vanish", "Subscriptions": [{"Name": "s", "Properties": {"LockDuration": "PT3S"}}]},
                    {"Name": "stuck", "Subscriptions": [{"Name": "s", "Properties": {"LockDuration": "PT1S"}}]},
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def robust_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("robust"), CONFIG) as proc:
        yield proc


@pytest.fixture
def cs(robust_emulator: EmulatorProcess) -> str:
    return robust_emulator.connection_string("robust")


@pytest.fixture
def port(robust_emulator: EmulatorProcess) -> int:
    return robust_emulator.port_of("robust")


async def assert_still_serving(cs: str, emulator: EmulatorProcess) -> None:
    assert emulator.proc is not None and emulator.proc.poll() is None, "the emulator died"
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("alive") as sender:
            await sender.send_messages(ServiceBusMessage("ping"))
        async with client.get_subscription_receiver(
            "alive", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=1, max_wait_time=3)
            assert [str(m) for m in msgs] == ["ping"]


def _send_and_wait_for_close(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the emulator closes the connection; returns what it answered."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer
            if not chunk:
                return answer
            answer += chunk
    raise AssertionError(f"the emulator kept a garbage connection open; it answered {answer[:200]!r}")


GARBAGE = [
    pytest.param(b"AMQP\x00\x01\x00\x00" + os.urandom(512), id="amqp-header-then-junk"),
    pytest.param(b"AMQP\x03\x01\x00\x00" + b"\xff" * 300, id="sasl-header-then-junk"),
    pytest.param(b"AMQP\x09\x09\x09\x09" + b"hello", id="amqp-bad-version"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200), id="tls-client-hello"),
    pytest.param(os.urandom(1024), id="pure-junk"),
    pytest.param(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", id="http-junk"),
    pytest.param(b"POST / HTTP/1.1\r\n" + b"X" * 70000 + b"\r\n\r\n", id="http-huge-header"),
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_closes_the_connection(port: int, payload: bytes) -> None:
    _send_and_wait_for_close(port, payload)


async def test_still_serving_after_garbage(port: int, cs: str, robust_emulator: EmulatorProcess) -> None:
    # garbage on several connections at once, some left half-open, then a normal client
    socks = []
    for i in range(20):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"AMQP\x00\x01\x00\x00" + os.urandom(64) if i % 2 else b"AMQ")
        socks.append(sock)
    try:
        await assert_still_serving(cs, robust_emulator)
    finally:
        for sock in socks:
            sock.close()


async def test_unknown_entities_are_not_found(cs: str) -> None:
    async with servicebus_client(connection_string=cs, retry_total=0) as client:
        with pytest.raises(MessagingEntityNotFoundError):
            async with client.get_topic_sender("no-such-topic") as sender:
                await sender.send_messages(ServiceBusMessage("x"))
        with pytest.raises(MessagingEntityNotFoundError):
            async with client.get_subscription_receiver("alive", "no-such-sub") as receiver:
                await receiver.receive_messages(max_message_count=1, max_wait_time=1)
        with pytest.raises(MessagingEntityNotFoundError):
            async with client.get_queue_receiver("no-such-queue") as receiver:
                await receiver.receive_messages(max_message_count=1, max_wait_time=1)


async def test_abrupt_disconnect_keeps_locks_until_they_expire(cs: str) -> None:
    """As on Azure: a vanished receiver's locks are not released; they expire at locked_until,
    which counts as a delivery attempt, and the messages come back."""
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("vanish") as sender:
            await sender.send_messages([ServiceBusMessage(f"v{i}") for i in range(3)])
        receiver = client.get_subscription_receiver("vanish", "s")
        await receiver.__aenter__()
        held = []
        while len(held) < 3:
            batch = await receiver.receive_messages(max_message_count=3 - len(held), max_wait_time=3)
            assert batch
            held += batch
        locked_until = max(m.locked_until_utc for m in held)
        # pull the plug: no detach, no close, the TCP connection just goes away
        receiver._handler._connection._transport.writer.transport.abort()  # noqa: SLF001
        try:
            await receiver.close()
        except Exception:  # noqa: BLE001 - the connection is already gone
            pass
        async with client.get_subscription_receiver("vanish", "s") as again:
            # still locked (3 s lock): nothing to receive before locked_until
            early = await again.receive_messages(max_message_count=3, max_wait_time=1)
            assert early == [], "locks were released at once; Azure keeps them until locked_until"
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                got += await again.receive_messages(max_message_count=3 - len(got), max_wait_time=1)
            assert sorted(str(m) for m in got) == ["v0", "v1", "v2"]
            # they came back only once the original locks had run out
            assert dt.datetime.now(dt.UTC) >= locked_until
            assert [m.delivery_count for m in got] == [1, 1, 1]
            for m in got:
                await again.complete_message(m)


async def test_receiver_that_never_settles(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("stuck") as sender:
            await sender.send_messages(ServiceBusMessage("hot potato"))
        async with client.get_subscription_receiver("stuck", "s") as lazy:
            (msg,) = await lazy.receive_messages(max_message_count=1, max_wait_time=3)
            assert msg.delivery_count == 0
            await asyncio.sleep(1.3)  # never settled: the 1 s lock runs out
            (again,) = await lazy.receive_messages(max_message_count=1, max_wait_time=3)
            assert str(again) == "hot potato"
            assert again.delivery_count == 1
            assert again.lock_token != msg.lock_token
            await lazy.complete_message(again)


class RawAmqpClient:
    """A bare AMQP client (proton engine over a blocking socket): protocol header, SASL, open."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = Connection()
        self.conn.hostname = "localhost"
        self.conn.container = f"raw-{id(self)}"
        self.transport = Transport()
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.transport.bind(self.conn)
        self.conn.collect(Collector())
        self.conn.open()

    def pump(self, until, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.02)
        while time.monotonic() < deadline:
            while (pending := self.transport.pending()) > 0:
                self.sock.sendall(self.transport.peek(pending))
                self.transport.pop(pending)
            if until():
                return True
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return until()
            self.transport.push(data)
        return until()

    def opened(self) -> bool:
        return bool(self.conn.state & Endpoint.REMOTE_ACTIVE)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
async def test_200_concurrent_connections(port: int, cs: str, robust_emulator: EmulatorProcess) -> None:
    clients: list[RawAmqpClient] = []
    try:
        for _ in range(200):
            client = RawAmqpClient(port)
            assert client.pump(client.opened), "the emulator did not answer an AMQP open"
            clients.append(client)
        # all 200 held open; the SDK still gets through
        await assert_still_serving(cs, robust_emulator)
        # and every one of the 200 is still alive (an empty frame keeps it so)
        for client in clients:
            assert client.opened() and not (client.conn.state & Endpoint.REMOTE_CLOSED)
    finally:
        for client in clients:
            client.close()
    await assert_still_serving(cs, robust_emulator)
