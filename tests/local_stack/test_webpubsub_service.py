"""The local Web PubSub service (local_stack/webpubsub/) driven by the official server SDK
(``azure-messaging-webpubsubservice``), the official Python client
(``azure-messaging-webpubsubclient``) and raw WebSockets that check the exact frames."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubclient.aio import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from local_stack.webpubsub import STATS_PATH, WebPubSubServer

HUB = "chat"
JSON_PROTOCOL = "json.webpubsub.azure.v1"
WAIT = 5.0


@pytest.fixture
async def server() -> AsyncIterator[WebPubSubServer]:
    srv = WebPubSubServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def sdk(server: WebPubSubServer) -> AsyncIterator[WebPubSubServiceClient]:
    client = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=HUB)
    async with client:
        yield client


class RawClient:
    """A WebSocket client that keeps every frame it receives."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws

    async def next(self, timeout: float = WAIT) -> Any:  # noqa: ASYNC109
        msg = await self.ws.receive(timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data) if self.ws.protocol else msg.data
        if msg.type is aiohttp.WSMsgType.BINARY:
            return msg.data
        return msg.type

    async def nothing_within(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            got = await self.ws.receive(seconds)
            pytest.fail(f"unexpected frame {got}")

    async def send(self, doc: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(doc))

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def raw_connect(url: str, protocol: str | None = JSON_PROTOCOL) -> RawClient:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(url, protocols=(protocol,) if protocol else ())
    except BaseException:
        await session.close()
        raise
    return RawClient(session, ws)


async def client_url(sdk: WebPubSubServiceClient, **kwargs: Any) -> str:
    return str((await sdk.get_client_access_token(**kwargs))["url"])


async def test_rest_sends_reach_clients_as_exact_frames(sdk: WebPubSubServiceClient) -> None:
    a = await raw_connect(await client_url(sdk, user_id="ann", groups=["lobby"]))
    plain = await raw_connect(await client_url(sdk, groups=["lobby"]), protocol=None)
    try:
        hello = await a.next()
        assert hello == {"type": "system", "event": "connected", "userId": "ann", "connectionId": hello["connectionId"]}
        await sdk.send_to_all({"event": "chat", "data": {"text": "hi"}}, content_type="application/json")
        assert await a.next() == {"type": "message", "from": "server", "dataType": "json",
                                  "data": {"event": "chat", "data": {"text": "hi"}}}
        assert json.loads(await plain.next()) == {"event": "chat", "data": {"text": "hi"}}
        await sdk.send_to_group("lobby", "plain words", content_type="text/plain")
        assert await a.next() == {"type": "message", "from": "group", "group": "lobby", "dataType": "text",
                                  "data": "plain words"}
        assert await plain.next() == "plain words"
        await sdk.send_to_user("ann", b"\x00\x01\xff", content_type="application/octet-stream")
        assert await a.next() == {"type": "message", "from": "server", "dataType": "binary", "data": "AAH/"}
        await sdk.send_to_connection(hello["connectionId"], [1, 2], content_type="application/json")
        assert await a.next() == {"type": "message", "from": "server", "dataType": "json", "data": [1, 2]}
        await sdk.send_to_group("lobby", b"\x07", content_type="application/octet-stream")
        await a.next()
        assert await plain.next() == b"\x07"  # plain clients get binary frames for binary messages
        await sdk.send_to_group("elsewhere", {"x": 1}, content_type="application/json")
        await a.nothing_within(0.3)
        await plain.nothing_within(0.1)
    finally:
        await a.close()
        await plain.close()


async def test_groups_connections_and_users_through_the_sdk(sdk: WebPubSubServiceClient,
                                                              server: WebPubSubServer) -> None:
    a = await raw_connect(await client_url(sdk, user_id="bob"))
    try:
        conn_id = (await a.next())["connectionId"]
        assert await sdk.connection_exists(conn_id) and not await sdk.connection_exists("nope")
        assert await sdk.user_exists("bob") and not await sdk.user_exists("carol")
        assert not await sdk.group_exists("g1")
        await sdk.add_connection_to_group("g1", conn_id)
        assert await sdk.group_exists("g1")
        assert [c.connection_id async for c in sdk.list_connections(group="g1")] == [conn_id]
        await sdk.send_to_group("g1", {"n": 1}, content_type="application/json", excluded=[conn_id])
        await a.nothing_within(0.3)
        await sdk.send_to_group("g1", {"n": 2}, content_type="application/json")
        assert (await a.next())["data"] == {"n": 2}
        await sdk.remove_connection_from_group("g1", conn_id)
        assert not await sdk.group_exists("g1")
        await sdk.add_user_to_group("g2", "bob")
        assert await sdk.group_exists("g2")
        await sdk.remove_user_from_all_groups("bob")
        assert not await sdk.group_exists("g2")
        await sdk.grant_permission("joinLeaveGroup", conn_id, target_name="vip")
        assert await sdk.has_permission("joinLeaveGroup", conn_id, target_name="vip")
        stats = await (await a.session.get(server.endpoint + STATS_PATH)).json()
        (hub,) = stats["hubs"]
        assert hub["hub"] == HUB and [c["connectionId"] for c in hub["connections"]] == [conn_id]
        await sdk.close_connection(conn_id, reason="bye")
        assert await a.next() == {"type": "system", "event": "disconnected", "message": "bye"}
        assert await a.next() is aiohttp.WSMsgType.CLOSE
        assert a.ws.close_code == 1008  # closed by the server: the official clients do not try recovery
        await a.ws.close()
        assert await a.ws.receive(WAIT)  # the server has finished the close handshake
        for _ in range(100):  # the handler unregisters right after the close handshake
            if not await sdk.connection_exists(conn_id):
                break
            await asyncio.sleep(0.02)
        assert not await sdk.connection_exists(conn_id)
    finally:
        await a.close()


async def test_rest_calls_need_a_token_signed_with_the_access_key(server: WebPubSubServer) -> None:
    wrong = server.connection_string.replace(server.access_key, "d3Jvbmcta2V5LW9mLWF0LWxlYXN0LXRoaXJ0eS10d28tYnl0ZXM=")
    async with WebPubSubServiceClient.from_connection_string(wrong, hub=HUB) as client:
        with pytest.raises(HttpResponseError) as info:
            await client.send_to_all({"x": 1}, content_type="application/json")
        assert info.value.status_code == 401
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{server.endpoint}/api/hubs/{HUB}/:send?api-version=2024-12-01", json={})
        assert resp.status == 401 and "bearer" in (await resp.json())["message"]
        # a token for another URL is refused too
        token = jwt.encode({"aud": f"{server.endpoint}/api/hubs/other/:send?api-version=2024-12-01",
                            "exp": int(time.time()) + 60}, server.access_key, algorithm="HS256")
        resp = await session.post(f"{server.endpoint}/api/hubs/{HUB}/:send?api-version=2024-12-01", json={},
                                  headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401 and "audience" in (await resp.json())["message"]


async def test_client_tokens_are_checked_at_the_handshake(sdk: WebPubSubServiceClient,
                                                          server: WebPubSubServer) -> None:
    url = await client_url(sdk)
    base = url.split("?", 1)[0]
    cases = {
        "no token": base,
        "wrong key": base + "?access_token=" + jwt.encode(
            {"aud": f"{server.endpoint}/client/hubs/{HUB}", "exp": int(time.time()) + 60}, "another-key-of-at-least-thirty-two-bytes", algorithm="HS256"),
        "other hub": base + "?access_token=" + jwt.encode(
            {"aud": f"{server.endpoint}/client/hubs/other", "exp": int(time.time()) + 60}, server.access_key,
            algorithm="HS256"),
        "expired": base + "?access_token=" + jwt.encode(
            {"aud": f"{server.endpoint}/client/hubs/{HUB}", "exp": int(time.time()) - 60}, server.access_key,
            algorithm="HS256"),
    }
    for what, bad in cases.items():
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await raw_connect(bad)
        assert info.value.status == 401, what
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await raw_connect(url, protocol="protobuf.webpubsub.azure.v1")
    assert info.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await raw_connect(url.replace(f"/hubs/{HUB}?", "/hubs/1bad-hub?"))
    assert info.value.status == 400


async def test_roles_are_enforced_and_every_ackid_is_answered(sdk: WebPubSubServiceClient) -> None:
    none = await raw_connect(await client_url(sdk, user_id="u0"))
    some = await raw_connect(await client_url(sdk, user_id="u1", roles=[
        "webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup.room1"]))
    try:
        await none.next()
        await some.next()
        await none.send({"type": "joinGroup", "group": "room1", "ackId": 1})
        ack = await none.next()
        assert ack["type"] == "ack" and ack["ackId"] == 1 and ack["success"] is False
        assert ack["error"]["name"] == "Forbidden"
        await none.send({"type": "sendToGroup", "group": "room1", "ackId": 2, "dataType": "text", "data": "x"})
        assert (await none.next())["error"]["name"] == "Forbidden"
        await some.send({"type": "joinGroup", "group": "room1", "ackId": 1})
        assert await some.next() == {"type": "ack", "ackId": 1, "success": True}
        await some.send({"type": "joinGroup", "group": "room2", "ackId": 2})
        assert (await some.next())["error"]["name"] == "Forbidden"
        await some.send({"type": "joinGroup", "group": "room1", "ackId": 1})
        assert (await some.next())["error"]["name"] == "Duplicate"
        await some.send({"type": "sendToGroup", "group": "room1", "ackId": 3, "dataType": "json",
                         "data": {"a": 1}})
        got = [await some.next(), await some.next()]
        assert {"type": "ack", "ackId": 3, "success": True} in got
        assert {"type": "message", "from": "group", "group": "room1", "fromUserId": "u1", "dataType": "json",
                "data": {"a": 1}} in got
        await some.send({"type": "sendToGroup", "group": "room1", "dataType": "text", "data": "quiet",
                         "noEcho": True})
        await some.nothing_within(0.3)
        await some.send({"type": "event", "event": "hello", "ackId": 4, "dataType": "text", "data": "x"})
        assert (await some.next())["success"] is False  # no upstream: refused, not dropped silently
        await some.send({"type": "leaveGroup", "group": "room1", "ackId": 5})
        assert await some.next() == {"type": "ack", "ackId": 5, "success": True}
        await some.send({"type": "nonsense", "ackId": 6})
        assert (await some.next())["error"]["name"] == "BadRequest"
    finally:
        await none.close()
        await some.close()


async def test_the_official_python_client(sdk: WebPubSubServiceClient, server: WebPubSubServer) -> None:
    url = await client_url(sdk, user_id="py", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
    received: list[Any] = []
    got = asyncio.Event()
    connections: list[str] = []
    connected = asyncio.Event()

    async def on_group(e: Any) -> None:
        received.append(("group", e.group, e.data_type, e.data))
        got.set()

    async def on_server(e: Any) -> None:
        received.append(("server", e.data_type, e.data))
        got.set()

    async def on_connected(e: Any) -> None:
        connections.append(e.connection_id)
        connected.set()

    async def next_message() -> None:
        await asyncio.wait_for(got.wait(), WAIT)
        got.clear()

    client = WebPubSubClient(url)
    await client.subscribe(CallbackType.CONNECTED, on_connected)
    async with client:
        await client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        await client.subscribe(CallbackType.SERVER_MESSAGE, on_server)
        await client.join_group("lobby")
        await sdk.send_to_group("lobby", {"event": "chat", "data": "hi"}, content_type="application/json")
        await next_message()
        await sdk.send_to_all("all", content_type="text/plain")
        await next_message()
        await client.send_to_group("lobby", "from py", WebPubSubDataType.TEXT)
        await next_message()
        # closed by the server: the client reconnects with a new connection (no recovery attempt)
        # and rejoins its group
        await asyncio.wait_for(connected.wait(), WAIT)
        connected.clear()
        await sdk.close_connection(connections[0], reason="bye")
        await asyncio.wait_for(connected.wait(), 20)
        for _ in range(100):
            if await sdk.group_exists("lobby"):
                break
            await asyncio.sleep(0.05)
        await sdk.send_to_group("lobby", "again", content_type="text/plain")
        await next_message()
    assert received == [("group", "lobby", "json", {"event": "chat", "data": "hi"}), ("server", "text", "all"),
                        ("group", "lobby", "text", "from py"), ("group", "lobby", "text", "again")]
    assert len(connections) == 2 and connections[0] != connections[1]
    assert server.service.counters["connections.recovery-refused"] == 0


async def test_the_dashboard_collector_shows_connections_and_groups_per_hub(sdk: WebPubSubServiceClient,
                                                                           server: WebPubSubServer) -> None:
    from local_stack.dashboard import Collector

    collector = Collector(lambda: [], lambda: [], webpubsub=lambda: server.endpoint + STATS_PATH)
    a = await raw_connect(await client_url(sdk, user_id="dash", groups=["lobby", "vip"]))
    try:
        await a.next()
        async with aiohttp.ClientSession() as session:
            await collector.tick(session)
            assert collector.state["webpubsub"] == {
                "url": server.endpoint + STATS_PATH, "up": True, "error": None,
                "hubs": [{"hub": HUB, "connections": 1, "groups": {"lobby": 1, "vip": 1}, "users": 1}]}
            await a.close()
            await server.stop()
            await collector.tick(session)
            state = collector.state["webpubsub"]
            assert state["up"] is False and state["hubs"] == [] and state["error"]
    finally:
        await a.close()
        await collector.close()


@pytest.mark.parametrize("group", ["chat:room", "hist/a#1", "r 1", "ümlaut?&=", "a%2Fb"])
async def test_group_names_survive_the_sdks_url_encoding(sdk: WebPubSubServiceClient, group: str) -> None:
    a = await raw_connect(await client_url(sdk, groups=[group]))
    try:
        await a.next()
        assert await sdk.group_exists(group)
        await sdk.send_to_group(group, {"g": group}, content_type="application/json")
        assert await a.next() == {"type": "message", "from": "group", "group": group, "dataType": "json",
                                  "data": {"g": group}}
    finally:
        await a.close()


async def test_closing_by_group_user_and_hub(sdk: WebPubSubServiceClient) -> None:
    clients = [await raw_connect(await client_url(sdk, user_id=f"u{i}", groups=[f"g{i}"])) for i in range(3)]
    try:
        ids = [(await c.next())["connectionId"] for c in clients]
        await sdk.close_group_connections("g0", reason="group closed")
        await sdk.close_user_connections("u1", reason="user closed")
        await sdk.close_all_connections(excluded=[ids[0], ids[1]], reason="all closed")
        for client, reason in zip(clients, ("group closed", "user closed", "all closed"), strict=True):
            assert await client.next() == {"type": "system", "event": "disconnected", "message": reason}
            assert await client.next() is aiohttp.WSMsgType.CLOSE
    finally:
        for client in clients:
            await client.close()


async def test_revoked_roles_and_removed_groups(sdk: WebPubSubServiceClient) -> None:
    a = await raw_connect(await client_url(sdk, roles=["webpubsub.sendToGroup.g"], groups=["g", "h"]))
    try:
        conn_id = (await a.next())["connectionId"]
        await sdk.revoke_permission("sendToGroup", conn_id, target_name="g")
        assert not await sdk.has_permission("sendToGroup", conn_id, target_name="g")
        await a.send({"type": "sendToGroup", "group": "g", "ackId": 1, "dataType": "text", "data": "x"})
        assert (await a.next())["error"]["name"] == "Forbidden"
        await sdk.remove_connection_from_all_groups(conn_id)
        assert not await sdk.group_exists("g") and not await sdk.group_exists("h")
        with pytest.raises(HttpResponseError) as info:  # a filter the local service cannot evaluate
            await sdk.send_to_all({"x": 1}, content_type="application/json", filter="userId eq 'a'")
        assert info.value.status_code == 400
    finally:
        await a.close()


async def test_plain_client_messages_have_no_upstream_and_are_counted(sdk: WebPubSubServiceClient,
                                                                      server: WebPubSubServer) -> None:
    plain = await raw_connect(await client_url(sdk), protocol=None)
    try:
        await plain.ws.send_str("hello upstream")
        await plain.nothing_within(0.2)  # plain clients get no acks or system events
        assert server.service.counters["dropped.upstream-not-configured"] == 1
    finally:
        await plain.close()


def test_a_full_outbox_drops_and_counts_but_still_closes() -> None:
    from collections import Counter

    from local_stack.webpubsub.hubs import OUTBOX_LIMIT, Close, Connection
    from local_stack.webpubsub.protocol import Protocol, payload_from_rest

    counters: Counter[str] = Counter()
    conn = Connection(hub=HUB, protocol=Protocol.JSON, user_id=None, roles=set(), counters=counters)
    payload = payload_from_rest("text/plain", b"x")
    assert sum(conn.deliver(payload) for _ in range(OUTBOX_LIMIT + 5)) == OUTBOX_LIMIT
    assert counters["dropped.slow-client"] == 5 and counters["messages.delivered"] == OUTBOX_LIMIT
    conn.close("bye")
    items = [conn.outbox.get_nowait() for _ in range(conn.outbox.qsize())]
    assert items[-1] == Close(1008, "bye")
    assert not conn.deliver(payload) and counters["dropped.connection-closing"] == 1
