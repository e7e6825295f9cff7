"""Shared access signatures: the emulator checks every token the SDK puts on ``$cbs``.

Namespace-level policies (Manage, Listen-only, Send-only), a topic-level policy, wrong and
expired keys, and a client that never puts a token at all.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import (
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusError,
)
from proton import Collector, Connection, Endpoint, Transport

from servicebus_emulator.config import PolicyConfig
from servicebus_emulator.errors import Unauthorized
from servicebus_emulator.sas import verify_token
from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator
from tests.support.sas import sas_token

ROOT_KEY = "root-key-value"
LISTEN_KEY = "listen-key-value"
SEND_KEY = "send-key-value"
TOPIC_KEY = "topic-key-value"

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "authns",
                "SharedAccessPolicies": [
                    {"Name": "RootManageSharedAccessKey", "Key": ROOT_KEY, "Rights": ["Manage"]},
                    {"Name": "listener", "Key": LISTEN_KEY, "Rights": ["Listen"]},
                    {"Name": "sender", "Key": SEND_KEY, "Rights": ["Send"]},
                ],
                "Topics": [
                    {
                        "Name": "mine",
                        "SharedAccessPolicies": [
                            {"Name": "mine-key", "Key": TOPIC_KEY, "Rights": ["Send", "Listen"]}
                        ],
                        "Subscriptions": [{"Name": "s"}],
                    },
                    {"Name": "other", "Subscriptions": [{"Name": "s"}]},
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def auth_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("auth"), CONFIG) as proc:
        yield proc


@pytest.fixture
def port(auth_emulator: EmulatorProcess) -> int:
    return auth_emulator.port_of("authns")


def conn_str(port: int, name: str, key: str) -> str:
    return (
        f"Endpoint=sb://localhost:{port};SharedAccessKeyName={name};SharedAccessKey={key};"
        "UseDevelopmentEmulator=true"
    )


# -- unit level: the token check itself ----------------------------------------------------------

POLICIES = [PolicyConfig("root", "k", frozenset({"Listen", "Send", "Manage"}))]


def test_verify_token_accepts_and_rejects() -> None:
    uri = "sb://localhost:5672/topic"
    grant = verify_token(sas_token(uri, "root", "k", int(time.time()) + 60), POLICIES, {})
    assert grant.scope == ("topic",) and "Send" in grant.rights
    with pytest.raises(Unauthorized, match="ExpiredToken"):
        verify_token(sas_token(uri, "root", "k", int(time.time()) - 1), POLICIES, {})
    with pytest.raises(Unauthorized, match="does not match"):
        verify_token(sas_token(uri, "root", "wrong", int(time.time()) + 60), POLICIES, {})
    with pytest.raises(Unauthorized, match="not known"):
        verify_token(sas_token(uri, "nobody", "k", int(time.time()) + 60), POLICIES, {})
    with pytest.raises(Unauthorized, match="not a SharedAccessSignature"):
        verify_token("Bearer abc", POLICIES, {})


# -- over the wire with the SDK --------------------------------------------------------------------


async def test_root_key_works(port: int) -> None:
    async with servicebus_client(connection_string=conn_str(port, "RootManageSharedAccessKey", ROOT_KEY)) as client:
        async with client.get_topic_sender("other") as sender:
            await sender.send_messages(ServiceBusMessage("ok"))
        async with client.get_subscription_receiver(
            "other", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=1, max_wait_time=3)
            assert [str(m) for m in msgs] == ["ok"]


async def test_wrong_key_is_an_authentication_error(port: int) -> None:
    async with servicebus_client(
        connection_string=conn_str(port, "RootManageSharedAccessKey", "not-the-key"), retry_total=0
    ) as client:
        with pytest.raises(ServiceBusAuthenticationError) as info:
            async with client.get_topic_sender("other") as sender:
                await sender.send_messages(ServiceBusMessage("x"))
    # the SDK keeps the broker's put-token answer on the inner exception
    detail = str(info.value.inner_exception)
    assert "Status code: 401" in detail
    assert "InvalidSignature" in detail and "does not match" in detail


async def test_expired_sas_is_refused(port: int) -> None:
    uri = f"sb://localhost:{port}/other"
    token = sas_token(uri, "RootManageSharedAccessKey", ROOT_KEY, int(time.time()) - 30)
    client = ServiceBusClient(f"localhost:{port}", AzureSasCredential(token), use_tls=False, retry_total=0)
    async with client:
        with pytest.raises(ServiceBusAuthenticationError):
            async with client.get_topic_sender("other") as sender:
                await sender.send_messages(ServiceBusMessage("x"))


async def test_valid_sas_credential_and_named_key_credential(port: int) -> None:
    uri = f"sb://localhost:{port}/other"
    token = sas_token(uri, "sender", SEND_KEY, int(time.time()) + 300)
    async with ServiceBusClient(f"localhost:{port}", AzureSasCredential(token), use_tls=False) as client:
        async with client.get_topic_sender("other") as sender:
            await sender.send_messages(ServiceBusMessage("via sas"))
    named = AzureNamedKeyCredential("listener", LISTEN_KEY)
    async with ServiceBusClient(f"localhost:{port}", named, use_tls=False) as client:
        async with client.get_subscription_receiver(
            "other", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=1, max_wait_time=3)
            assert [str(m) for m in msgs] == ["via sas"]


async def test_listen_only_cannot_send_and_send_only_cannot_receive(port: int) -> None:
    async with servicebus_client(connection_string=conn_str(port, "listener", LISTEN_KEY), retry_total=0) as client:
        with pytest.raises(ServiceBusAuthorizationError, match="'Send' claim"):
            async with client.get_topic_sender("other") as sender:
                await sender.send_messages(ServiceBusMessage("x"))
    async with servicebus_client(connection_string=conn_str(port, "sender", SEND_KEY), retry_total=0) as client:
        with pytest.raises(ServiceBusAuthorizationError, match="'Listen' claim"):
            async with client.get_subscription_receiver("other", "s") as receiver:
                await receiver.receive_messages(max_message_count=1, max_wait_time=1)


async def test_topic_scoped_key_works_on_its_topic_only(port: int) -> None:
    async with servicebus_client(connection_string=conn_str(port, "mine-key", TOPIC_KEY), retry_total=0) as client:
        async with client.get_topic_sender("mine") as sender:
            await sender.send_messages(ServiceBusMessage("scoped"))
        async with client.get_subscription_receiver(
            "mine", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=1, max_wait_time=3)
            assert [str(m) for m in msgs] == ["scoped"]
        with pytest.raises(ServiceBusError):  # the key is unknown for another topic: 401 on put-token
            async with client.get_topic_sender("other") as sender:
                await sender.send_messages(ServiceBusMessage("x"))


def _pump(sock: socket.socket, transport: Transport, until, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        while (pending := transport.pending()) > 0:
            sock.sendall(transport.peek(pending))
            transport.pop(pending)
        if until():
            return True
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            transport.close_tail()
            return until()
        transport.push(data)
    return until()


def _open_session() -> tuple[Transport, Any]:
    """A proton connection (SASL ANONYMOUS, as the SDK opens it) with one open session, not yet
    on a socket: the tests pump bytes between it and the emulator themselves."""
    conn = Connection()
    conn.hostname = "localhost"
    transport = Transport()
    transport.sasl().allowed_mechs("ANONYMOUS")
    transport.bind(conn)
    conn.collect(Collector())
    conn.open()
    session = conn.session()
    session.open()
    return transport, session


def test_no_token_no_attach(port: int) -> None:
    """A client that skips put-token on $cbs gets its attaches refused (nothing anonymous)."""
    transport, session = _open_session()
    sender = session.sender("anon-sender")
    sender.target.address = f"amqps://localhost:{port}/other"
    sender.open()
    receiver = session.receiver("anon-receiver")
    receiver.source.address = f"amqps://localhost:{port}/other/Subscriptions/s"
    receiver.open()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        closed = _pump(
            sock, transport,
            lambda: bool(sender.state & Endpoint.REMOTE_CLOSED and receiver.state & Endpoint.REMOTE_CLOSED),
        )
    assert closed, "the emulator kept an unauthenticated link open"
    for link in (sender, receiver):
        assert link.remote_condition is not None
        assert link.remote_condition.name == "amqp:unauthorized-access"
        assert "put-token" in link.remote_condition.description


def _put_token(session, transport: Transport, sock: socket.socket, port: int, key_name: str, key: str,  # type: ignore[no-untyped-def]
               expiry: int, n: int) -> None:
    """``put-token`` on ``$cbs`` as the SDK sends it; waits for the 200 answer."""
    from proton import Message

    cbs_out = session.sender(f"cbs-out-{n}")
    cbs_out.target.address = "$cbs"
    cbs_in = session.receiver(f"cbs-in-{n}")
    cbs_in.source.address = "$cbs"
    cbs_in.target.address = f"cbs-reply-{n}"
    cbs_out.open()
    cbs_in.open()
    cbs_in.flow(1)
    uri = f"sb://localhost:{port}/other"
    request = Message(id=f"token-{n}", reply_to=f"cbs-reply-{n}", body=sas_token(uri, key_name, key, expiry),
                      properties={"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": uri})
    assert _pump(sock, transport, lambda: cbs_out.credit > 0)
    delivery = cbs_out.delivery(f"t{n}".encode())
    cbs_out.send(request.encode())
    cbs_out.advance()
    assert _pump(sock, transport, lambda: cbs_in.current is not None and not cbs_in.current.partial)
    reply = Message()
    reply.decode(cbs_in.recv(cbs_in.current.pending))
    cbs_in.advance()
    assert reply.properties["status-code"] == 200, reply.properties
    delivery.settle()


def test_a_link_is_detached_when_its_token_expires_unless_a_new_one_came(port: int) -> None:
    """Service Bus closes a link whose token expired without a new put-token; the emulator used to
    keep it working forever after the attach."""
    transport, session = _open_session()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        soon = int(time.time()) + 2
        _put_token(session, transport, sock, port, "listener", LISTEN_KEY, soon, 1)
        kept = session.receiver("kept")  # renewed below: stays
        kept.source.address = f"amqps://localhost:{port}/other/Subscriptions/s"
        kept.open()
        assert _pump(sock, transport, lambda: bool(kept.state & Endpoint.REMOTE_ACTIVE))
        # a second connection's link under the short token only, below: first this one's renewal
        _put_token(session, transport, sock, port, "listener", LISTEN_KEY, int(time.time()) + 120, 2)
        assert not _pump(sock, transport, lambda: bool(kept.state & Endpoint.REMOTE_CLOSED),
                         timeout=max(0.5, soon - time.time() + 1.0))
        assert kept.state & Endpoint.REMOTE_ACTIVE, "a renewed token keeps the link"

    transport2, session2 = _open_session()
    with socket.create_connection(("127.0.0.1", port)) as sock2:
        soon = int(time.time()) + 2
        _put_token(session2, transport2, sock2, port, "listener", LISTEN_KEY, soon, 1)
        expiring = session2.receiver("expiring")
        expiring.source.address = f"amqps://localhost:{port}/other/Subscriptions/s"
        expiring.open()
        assert _pump(sock2, transport2, lambda: bool(expiring.state & Endpoint.REMOTE_ACTIVE))
        closed = _pump(sock2, transport2, lambda: bool(expiring.state & Endpoint.REMOTE_CLOSED),
                       timeout=soon - time.time() + 3.0)
    assert closed, "the emulator kept a link open after its token expired"
    assert expiring.remote_condition is not None
    assert expiring.remote_condition.name == "amqp:unauthorized-access"
    assert "ExpiredToken" in expiring.remote_condition.description
