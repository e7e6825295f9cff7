"""Each handler called with real azure.functions ServiceBusMessage / HttpRequest objects."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from azure.core.exceptions import HttpResponseError

from shared import handlers
from shared.appcontext import AppContext, AppSettings
from shared.edge.webpubsub import hub_for_namespace
from shared.persistence.history import escape_key, partition_key, unescape_key
from shared.persistence.hooks import HookFailed, HookRegistry, StoredEvent
from shared.routing.plan import Unroutable
from shared.routing.router import ForwardFailed
from socketio_servicebus import history_token
from socketio_servicebus.topology import PROP_HOPS, PROP_ROUTE_DONE, PROP_TARGET_REGION, PROP_VISITED
from socketio_servicebus.wire.envelope import SERVICEBUS_MAX_MESSAGE_BYTES, Batch, Envelope, Kind
from tests.support.webpubsub import FrameClient, WebPubSubThread

from .conftest import WPS_KEY
from .helpers import FakeContext, RecordingSender, emit_envelope, http_request, sb_message

MESH = {"SIO_REGION": "eu", "SIO_REGION_MAP": json.dumps({"eu": {}, "us": {}, "asia": {}, "edge": {"neighbors": ["eu"]}})}
HISTORY_KEY = "history-token-key-for-the-handler-tests"


# ------------------------------------------------------------------ router
async def test_router_forwards_body_ids_and_properties() -> None:
    ctx = FakeContext(MESH)
    envs = [emit_envelope("us", data=i) for i in range(3)]
    batch = Batch(tuple(envs), 0, ("us",))
    plan = await handlers.router(ctx, "us", sb_message(batch, message_id="msg-42"))
    assert plan.targets == ("asia", "eu")
    asia, eu = ctx.senders["asia"].sent[0], ctx.senders["eu"].sent[0]
    for out, target, done in ((asia, "asia", True), (eu, "eu", False)):
        assert out.message_id == "msg-42"
        fwd = Batch.decode(b"".join(out.body))
        assert [e.id for e in fwd.envelopes] == [e.id for e in envs]  # still one batch, same envelopes
        assert fwd.hops == 1 and fwd.visited == ("us", target)
        props = out.application_properties
        assert props[PROP_HOPS] == 1 and props[PROP_VISITED] == f"us,{target}"
        assert props.get(PROP_ROUTE_DONE, None) is (True if done else None)
    # eu still serves its spoke: forward the copy that came from us
    eu_in = sb_message(Batch.decode(b"".join(eu.body)), message_id="msg-42",
                       props={str(k): v for k, v in eu.application_properties.items()})
    plan = await handlers.router(ctx, "eu", eu_in)
    assert plan.targets == ("edge",)
    edge = ctx.senders["edge"].sent[0]
    assert Batch.decode(b"".join(edge.body)).visited == ("us", "eu", "edge")
    assert edge.application_properties[PROP_ROUTE_DONE] is True


async def test_router_skips_route_done_and_targeted() -> None:
    ctx = FakeContext(MESH)
    batch = Batch((emit_envelope("us"),), 0, ("us",))
    assert (await handlers.router(ctx, "us", sb_message(batch, route_done=True))).hops == ()
    assert (await handlers.router(ctx, "us", sb_message(batch, props={"sio_target_node": "n"}))).hops == ()
    reply = Envelope(kind=Kind.RESPONSE, origin_node="us1", origin_region="us", target_node="n", body={"rid": "r"})
    assert (await handlers.router(ctx, "us", sb_message(Batch((reply,), 0, ("us",))))).hops == ()
    assert not ctx.senders


async def test_router_forwards_a_reply_towards_its_target_region_only() -> None:
    ctx = FakeContext(MESH)
    reply = Envelope(kind=Kind.RESPONSE, origin_node="us1", origin_region="us", target_node="edge1",
                     target_region="edge", body={"rid": "r", "data": [1]})
    plan = await handlers.router(ctx, "us", sb_message(Batch((reply,), 0, ("us",)), message_id="reply-1"))
    assert [(h.target, h.route_done) for h in plan.hops] == [("eu", False)]  # edge is reached through its hub
    (out,) = ctx.senders["eu"].sent
    assert out.message_id == "reply-1" and out.application_properties[PROP_TARGET_REGION] == "edge"
    assert out.application_properties[PROP_HOPS] == 1 and PROP_ROUTE_DONE not in out.application_properties
    plan = await handlers.router(ctx, "eu", sb_message(Batch.decode(b"".join(out.body)), message_id="reply-1",
                                                       props={str(k): v for k, v in out.application_properties.items()}))
    assert [(h.target, h.route_done) for h in plan.hops] == [("edge", True)]
    (last,) = ctx.senders["edge"].sent
    fwd = Batch.decode(b"".join(last.body))
    assert fwd.visited == ("us", "eu", "edge") and fwd.hops == 2 and fwd.envelopes == (reply,)
    assert set(ctx.senders) == {"eu", "edge"}  # asia never sees it


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "malformed:not-json"), (b'{"v":2,"envelopes":[]}', "malformed:bad-version"),
     (b'{"v":1,"envelopes":[]}', "malformed:empty-batch")],
)
async def test_router_malformed_is_unroutable(body: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeContext(MESH)
    with pytest.raises(Unroutable) as info:
        await handlers.router(ctx, "us", sb_message(body, message_id="bad-1"))
    assert info.value.reason == reason
    assert "bad-1" in caplog.text and "unroutable" in caplog.text
    assert not ctx.senders


async def test_router_unknown_region_is_unroutable() -> None:
    ctx = FakeContext(MESH)
    batch = Batch((emit_envelope("mars"),), 0, ("mars",))
    with pytest.raises(Unroutable, match="unknown-region"):
        await handlers.router(ctx, "us", sb_message(batch))


async def test_router_target_down_raises_after_trying_all() -> None:
    ctx = FakeContext(MESH)
    ctx.senders["asia"] = RecordingSender("asia", fail=1)
    batch = Batch((emit_envelope("us"),), 0, ("us",))
    msg = sb_message(batch, message_id="msg-7")
    with pytest.raises(ForwardFailed) as info:
        await handlers.router(ctx, "us", msg)
    assert set(info.value.failed) == {"asia"} and info.value.succeeded == ["eu"]
    # redelivery: eu gets a duplicate with the same message id and envelope id (droppable)
    await handlers.router(ctx, "us", sb_message(batch, message_id="msg-7", delivery_count=2))
    eu = ctx.senders["eu"].sent
    assert len(eu) == 2 and {m.message_id for m in eu} == {"msg-7"}
    assert len({Batch.decode(b"".join(m.body)).envelopes[0].id for m in eu}) == 1
    assert len(ctx.senders["asia"].sent) == 1


# ------------------------------------------------------------------ emit API
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty body"),
        (b"[1,2]", "must be a JSON object, got array"),
        ({"data": 1}, "missing field 'event'"),
        ({"event": 5}, "'event' must be a non-empty string, got number"),
        ({"event": "chat", "room": ["a"]}, "'room' must be a non-empty string, got array"),
        ({"event": "chat", "room": "a", "to": "sid1"}, "not both"),
        ({"event": "chat", "persist": "yes"}, "'persist' must be true or false, got string"),
        ({"event": "chat", "namespace": "chat"}, "'namespace' must be a string starting with '/'"),
        ({"event": "disconnect"}, "reserved"),
        ({"event": "relay:reconnect", "data": {"reason": "draining"}}, "come from relay nodes only"),
        ({"event": "relay:history_token"}, "reserved"),
        ({"event": "chat", "colour": 1}, "unknown field(s) ['colour']"),
        (b'{"event":"chat","data":NaN}', "not valid JSON"),
    ],
)
async def test_emit_rejects_with_a_reason(body: object, fragment: str) -> None:
    ctx = FakeContext(MESH)
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body=body))  # type: ignore[arg-type]
    assert resp.status_code == 400
    assert fragment in json.loads(resp.get_body())["error"]
    assert not ctx.senders


@pytest.mark.parametrize("depth", [65, 100_000])
async def test_emit_refuses_json_nested_too_deeply_with_400(depth: int) -> None:
    """~100 KB of ``[[[`` used to raise RecursionError in the parser: a 500 instead of a 400."""
    ctx = FakeContext(MESH)
    body = b'{"event":"chat","data":' + b"[" * depth + b"]" * depth + b"}"
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body=body))
    assert resp.status_code == 400
    assert "nested too deeply" in json.loads(resp.get_body())["error"]
    assert not ctx.senders
    ok = b'{"event":"chat","data":' + b"[" * 40 + b"]" * 40 + b"}"
    assert (await handlers.emit_http(ctx, http_request("POST", "emit", body=ok))).status_code == 202


async def test_emit_rejects_oversized_bodies() -> None:
    ctx = FakeContext(MESH)
    big = json.dumps({"event": "chat", "data": "x" * SERVICEBUS_MAX_MESSAGE_BYTES}).encode()
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body=big))
    assert resp.status_code == 400
    assert f"limit is {SERVICEBUS_MAX_MESSAGE_BYTES} bytes" in json.loads(resp.get_body())["error"]
    # under the HTTP limit but too big for one message once wrapped in an envelope
    near = json.dumps({"event": "chat", "data": "x" * (SERVICEBUS_MAX_MESSAGE_BYTES - 2000)}).encode()
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body=near))
    assert resp.status_code == 400 and "does not fit" in json.loads(resp.get_body())["error"]


async def test_emit_publishes_a_socketio_envelope() -> None:
    ctx = FakeContext(MESH)
    resp = await handlers.emit_http(
        ctx, http_request("POST", "emit", body={"namespace": "/chat", "to": "sid-1", "event": "dm", "data": {"a": 1},
                                                "persist": True}))
    assert resp.status_code == 202
    (msg,) = ctx.senders["home:eu"].sent
    batch = Batch.decode(b"".join(msg.body))
    (env,) = batch.envelopes
    assert env.id == json.loads(resp.get_body())["id"] == msg.message_id
    assert env.ns == "/chat" and env.persist and env.origin_region == "eu" and batch.visited == ("eu",)
    assert env.body == {"method": "emit", "event": "dm", "data": [{"a": 1}], "binary": False, "namespace": "/chat",
                        "room": "sid-1", "skip_sid": None, "callback": None, "host_id": env.origin_node}
    assert msg.application_properties["sio_persist"] is True and msg.application_properties["sio_hops"] == 0


# ------------------------------------------------------------------ persist + history (Azurite)
def test_key_escaping_is_reversible_and_legal() -> None:
    for text in ["/", "/a/b", "r#1?x", "back\\slash", "pipe|tilde~", "ctl\x01\x7f", "ünï"]:
        esc = escape_key(text)
        assert not set(esc) & set("/\\#?|") and all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in esc)
        assert unescape_key(esc) == text
    assert partition_key("/", "a|b") != partition_key("/a", "b")


def table_ctx(azurite, table: str, hooks: HookRegistry | None = None) -> AppContext:  # type: ignore[no-untyped-def]
    return AppContext(AppSettings.from_env({**MESH, "TablesConnection": azurite.connection_string,
                                            "SIO_HISTORY_TABLE": table, "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY}),
                      hooks=hooks or HookRegistry())


def bearer(room: str, ns: str = "/", key: str = HISTORY_KEY, **kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + history_token.mint(key, ns=ns, room=room, **{"since": 0, **kw})}


async def test_persist_then_history_in_order_with_pagination(azurite) -> None:  # type: ignore[no-untyped-def]
    table = "t" + uuid.uuid4().hex[:12]
    seen: list[StoredEvent] = []
    hooks = HookRegistry()

    @hooks.on("chat")
    async def record(ev: StoredEvent) -> None:
        seen.append(ev)

    ctx = table_ctx(azurite, table, hooks)
    t0 = time.time()
    room = "room/with#odd?chars"
    envs = [emit_envelope("us", room=room, data=f"m{i}", persist=True, ts=t0 + i, skip_sid="sid-9") for i in range(5)]
    # two messages; the first is delivered twice (redelivery): stored once, hooks run again
    msgs = [sb_message(Batch(tuple(envs[:3]), 0, ("us",)), message_id="p1"),
            sb_message(Batch(tuple(envs[3:]), 0, ("us",)), message_id="p2")]
    for msg in msgs + msgs[:1]:
        await handlers.persist(ctx, "us", msg)
    assert [e.data for e in seen] == ["m0", "m1", "m2", "m3", "m4", "m0", "m1", "m2"]  # hooks: at least once
    assert [e.cursor for e in seen[5:]] == [e.cursor for e in seen[:3]]  # a redelivery keeps the first cursors

    pages, after = [], None
    while True:
        params = {"ns": "/", "room": room, "limit": "2"}
        if after:
            params["after"] = after
        resp = await handlers.history_http(ctx, http_request("GET", "history", params=params, headers=bearer(room)))
        assert resp.status_code == 200
        doc = json.loads(resp.get_body())
        pages.append([e["data"] for e in doc["events"]])
        after = doc["next"]
        if after is None:
            break
    assert pages == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    first = json.loads((await handlers.history_server_http(ctx, http_request("GET", "history/server", params={
        "ns": "/", "room": room, "limit": "1"}))).get_body())["events"][0]
    assert first["event"] == "chat" and first["sid"] == "sid-9" and first["node"] == "node-a"
    assert first["region"] == "us" and first["room"] == room and first["id"] == envs[0].id
    assert first["args"] == ["m0"] and abs(first["ts"] - t0) < 1e-3
    # other rooms / namespaces are separate partitions
    other = await handlers.history_server_http(ctx, http_request("GET", "history/server",
                                                                  params={"ns": "/", "room": "room"}))
    assert json.loads(other.get_body()) == {"events": [], "next": None}
    await ctx.aclose()


async def test_history_serves_nothing_older_than_the_tokens_since(azurite) -> None:  # type: ignore[no-untyped-def]
    """A socket that joined at ``since`` reads from then on; only ``since`` 0 (granted by the
    node's authorize_room hook) opens the whole history; the cursor cannot reach behind ``since``."""
    ctx = table_ctx(azurite, "t" + uuid.uuid4().hex[:12])
    t0, room = time.time() - 100, "since-room"
    envs = [emit_envelope("us", room=room, data=f"m{i}", persist=True, ts=t0 + i) for i in range(5)]
    await handlers.persist(ctx, "us", sb_message(Batch(tuple(envs), 0, ("us",)), message_id="p"))

    async def read(since: float, after: str | None = None) -> list[str]:
        params = {"ns": "/", "room": room, **({"after": after} if after else {})}
        resp = await handlers.history_http(ctx, http_request("GET", "history", params=params,
                                                             headers=bearer(room, since=since)))
        assert resp.status_code == 200
        return [e["data"] for e in json.loads(resp.get_body())["events"]]

    assert await read(since=t0 + 2.5) == ["m3", "m4"]
    assert await read(since=t0 + 2.5, after=f"{int(t0 * 1000) - 1:013d}-0") == ["m3", "m4"]
    assert await read(since=time.time()) == []  # joined after all of them were persisted
    assert await read(since=0) == ["m0", "m1", "m2", "m3", "m4"]
    await ctx.aclose()


async def test_persist_stores_large_data_in_chunks(azurite) -> None:  # type: ignore[no-untyped-def]
    ctx = table_ctx(azurite, "t" + uuid.uuid4().hex[:12])
    big = "é" * 100_000
    await handlers.persist(ctx, "eu", sb_message(Batch((emit_envelope(persist=True, data=big, room="big"),), 0, ("eu",))))
    doc = json.loads((await handlers.history_http(ctx, http_request("GET", "history", params={"room": "big"},
                                                                    headers=bearer("big")))).get_body())
    assert doc["events"][0]["data"] == big
    await ctx.aclose()


async def test_failing_hook_raises_after_the_row_is_stored(azurite) -> None:  # type: ignore[no-untyped-def]
    hooks = HookRegistry()

    @hooks.on("*")
    def boom(ev: StoredEvent) -> None:
        raise RuntimeError("moderation service down")

    ctx = table_ctx(azurite, "t" + uuid.uuid4().hex[:12], hooks)
    with pytest.raises(HookFailed, match="moderation service down"):
        await handlers.persist(ctx, "eu", sb_message(Batch((emit_envelope(persist=True, room="h"),), 0, ("eu",))))
    doc = json.loads((await handlers.history_server_http(ctx, http_request("GET", "history/server",
                                                                           params={"room": "h"}))).get_body())
    assert len(doc["events"]) == 1
    await ctx.aclose()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"limit": "x"}, "integer"), ({"limit": "0"}, "between"), ({"limit": "5000"}, "between"),
     ({"after": "garbage"}, "cursor"), ({"ns": "chat"}, "start with")],
)
async def test_history_rejects_bad_parameters(params: dict[str, str], fragment: str) -> None:
    ctx = FakeContext({**MESH, "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY})
    for resp in (await handlers.history_server_http(ctx, http_request("GET", "history/server", params=params)),
                 await handlers.history_http(ctx, http_request("GET", "history", params=params,
                                                               headers=bearer("r")))):
        assert resp.status_code == 400 and fragment in json.loads(resp.get_body())["error"]


async def test_history_refuses_without_a_valid_token_for_the_room() -> None:
    """Before any storage access: no, bad, expired or foreign tokens are 401, another room 403."""
    ctx = FakeContext({**MESH, "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY})

    async def call(headers: dict[str, str], room: str = "a", **params: str) -> tuple[int, dict[str, Any], Any]:
        resp = await handlers.history_http(ctx, http_request("GET", "history", params={"ns": "/", "room": room, **params},
                                                             headers=headers))
        return resp.status_code, json.loads(resp.get_body()), resp.headers

    good = bearer("a")["Authorization"]
    status, doc, headers = await call({})
    assert status == 401 and "Bearer" in doc["error"] and headers["WWW-Authenticate"].startswith("Bearer")
    assert (await call({"Authorization": "Basic dXNlcjpwdw=="}))[0] == 401
    assert (await call({"x-functions-key": "k"}))[2] and "history/server" in (await call({"x-functions-key": "k"}))[1]["error"]
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert (await call({"Authorization": tampered}))[:2] == (401, {"error": "bad token signature"})
    expired = bearer("a", now=time.time() - 3600, ttl=300)
    assert (await call(expired))[:2] == (401, {"error": "token expired"})
    foreign = bearer("a", key="another-key-of-at-least-32-characters!")
    assert (await call(foreign))[0] == 401
    status, doc, _ = await call({"Authorization": good}, room="b")
    assert status == 403 and "does not cover" in doc["error"]
    assert (await call(bearer("a", ns="/other")))[0] == 403
    assert (await call({"Authorization": good}, room=""))[0] == 403  # a token never opens the namespace-wide room


async def test_history_without_a_key_is_refused_not_open(caplog: pytest.LogCaptureFixture) -> None:
    for env, why in (({}, "SIO_HISTORY_TOKEN_KEY is not set"), ({"SIO_HISTORY_TOKEN_KEY": "short"}, "at least 32")):
        ctx = FakeContext({**MESH, **env})
        assert why in str(ctx.settings.history_keys_problem)
        resp = await handlers.history_http(ctx, http_request("GET", "history", params={"room": "a"},
                                                             headers=bearer("a", key="x" * 40)))
        assert resp.status_code == 503 and "not configured" in json.loads(resp.get_body())["error"]
        assert why in caplog.text
        assert "short" not in caplog.text.replace("shorter", "")  # the value is never logged


async def test_history_accepts_the_previous_key_during_a_rotation() -> None:
    old, new = HISTORY_KEY, "the-new-history-token-key-after-rotation"
    ctx = FakeContext({**MESH, "SIO_HISTORY_TOKEN_KEY": new, "SIO_HISTORY_TOKEN_KEY_PREVIOUS": old})
    for key in (old, new):
        # past the token checks means a 400 for the bad limit, not a 401
        resp = await handlers.history_http(ctx, http_request("GET", "history", params={"room": "a", "limit": "0"},
                                                             headers=bearer("a", key=key)))
        assert resp.status_code == 400, resp.get_body()


async def test_persist_malformed_raises() -> None:
    with pytest.raises(handlers.MalformedMessage, match="not-json"):
        await handlers.persist(FakeContext(MESH), "eu", sb_message(b"\xff\xfe"))


# ------------------------------------------------------------------ Web PubSub (local service)
def wps_ctx(connection: str) -> AppContext:
    return AppContext(AppSettings.from_env({**MESH, "WebPubSubConnection": connection}))


async def negotiated_client(ctx: AppContext, **params: str) -> tuple[dict[str, Any], FrameClient]:
    """A client connected with the URL /api/negotiate hands out; its ``connected`` frame read."""
    resp = await handlers.negotiate_http(ctx, http_request("GET", "negotiate", params=params))
    assert resp.status_code == 200, resp.get_body()
    doc = json.loads(resp.get_body())
    client = await FrameClient.connect(doc["url"])
    hello = await client.next()
    assert hello["type"] == "system" and hello["event"] == "connected"
    return doc, client


async def test_webpubsub_pushes_what_clients_receive(wps_connection: str) -> None:
    """The REAL WebPubSubServiceClient against the local Web PubSub service: what a client of
    each hub (one per namespace) receives, per group."""
    ctx = wps_ctx(wps_connection)
    _, lobby = await negotiated_client(ctx, rooms="lobby")
    _, other = await negotiated_client(ctx, rooms="other")
    _, chat_room = await negotiated_client(ctx, ns="/chat-room", rooms="r 1")
    try:
        envs = (emit_envelope("eu", room="lobby", data={"text": "hi"}), emit_envelope("eu", room=None, data="all"))
        n = await handlers.webpubsub(ctx, "eu", sb_message(Batch(envs[:1], 0, ("eu",))))
        n += await handlers.webpubsub(ctx, "eu", sb_message(Batch(envs[1:], 0, ("eu",))))
        chat = emit_envelope("eu", ns="/chat-room", room="r 1", data=[1, 2])
        binary = emit_envelope("eu", room="lobby", data="raw")
        binary = dataclasses.replace(binary, body={**binary.body, "binary": True})
        n += await handlers.webpubsub(ctx, "eu", sb_message(Batch((chat,), 0, ("eu",))))
        n += await handlers.webpubsub(ctx, "eu", sb_message(Batch((binary,), 0, ("eu",))))
        # python-socketio's emit(to=sid) is a room named after the sid: a group nobody is in
        to_sid = emit_envelope("eu", room="Xy12sidOfASocketIOClient", data="private")
        n += await handlers.webpubsub(ctx, "eu", sb_message(Batch((to_sid,), 0, ("eu",))))
        assert n == 4  # the binary emit is skipped (Web PubSub JSON messages cannot carry it)
        assert await lobby.frames_within(0.5) == [
            {"type": "message", "from": "group", "group": "lobby", "dataType": "json",
             "data": {"event": "chat", "data": {"text": "hi"}}},
            {"type": "message", "from": "server", "dataType": "json", "data": {"event": "chat", "data": "all"}},
        ]
        assert await other.frames_within(0.1) == [  # not in "lobby": only the send to all
            {"type": "message", "from": "server", "dataType": "json", "data": {"event": "chat", "data": "all"}},
        ]
        assert hub_for_namespace("socketio", "/chat-room").startswith("socketio_chat_room_")
        assert await chat_room.frames_within(0.1) == [
            {"type": "message", "from": "group", "group": "r 1", "dataType": "json",
             "data": {"event": "chat", "data": [1, 2]}},
        ]
    finally:
        for client in (lobby, other, chat_room):
            await client.close()
        await ctx.aclose()


async def test_webpubsub_failure_propagates(webpubsub: WebPubSubThread) -> None:
    # a key the service does not have: it answers 401, which the SDK does not retry
    wrong = f"Endpoint=http://127.0.0.1:{webpubsub.port};AccessKey=d3Jvbmcta2V5LXRoYXQtdGhlLXNlcnZpY2UtZG9lcy1ub3Qta25vdw==;Version=1.0;"
    ctx = wps_ctx(wrong)
    with pytest.raises(HttpResponseError) as info:  # the host retries, then dead-letters
        await handlers.webpubsub(ctx, "eu", sb_message(Batch((emit_envelope("eu"),), 0, ("eu",))))
    assert info.value.status_code == 401
    await ctx.aclose()


async def test_negotiate_returns_a_client_url_with_group_roles(webpubsub: WebPubSubThread, wps_connection: str) -> None:
    ctx = wps_ctx(wps_connection)
    doc, client = await negotiated_client(ctx, userId="u1", rooms="lobby,vip")
    try:
        assert doc["url"].startswith(f"ws://127.0.0.1:{webpubsub.port}/client/hubs/socketio?access_token=")
        token = doc["url"].split("access_token=", 1)[1]
        claims = jwt.decode(token, WPS_KEY, algorithms=["HS256"], options={"verify_aud": False})
        assert claims["sub"] == "u1"
        assert set(claims["role"]) == {"webpubsub.joinLeaveGroup.lobby", "webpubsub.joinLeaveGroup.vip"}
        assert set(claims["webpubsub.group"]) == {"lobby", "vip"}
        # the service honours them: leave and join again "vip"; "other" is refused
        await client.ws.send_json({"type": "leaveGroup", "group": "vip", "ackId": 1})
        await client.ws.send_json({"type": "joinGroup", "group": "vip", "ackId": 2})
        await client.ws.send_json({"type": "joinGroup", "group": "other", "ackId": 3})
        acks = [await client.next() for _ in range(3)]
        assert [(a["ackId"], a["success"]) for a in acks] == [(1, True), (2, True), (3, False)]
        assert acks[2]["error"]["name"] == "Forbidden"
    finally:
        await client.close()
        await ctx.aclose()
