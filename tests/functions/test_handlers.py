"""Each handler called with real azure.functions ServiceBusMessage / HttpRequest objects."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest

from shared import handlers
from shared.appcontext import AppContext, AppSettings
from shared.edge.webpubsub import hub_for_namespace
from shared.persistence.history import escape_key, partition_key, unescape_key
from shared.persistence.hooks import HookFailed, HookRegistry, StoredEvent
from shared.routing.plan import Unroutable
from shared.routing.router import ForwardFailed
from socketio_servicebus import history_token
from socketio_servicebus.topology import PROP_HOPS, PROP_ROUTE_DONE, PROP_VISITED
from socketio_servicebus.wire.envelope import SERVICEBUS_MAX_MESSAGE_BYTES, Batch

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
    assert not ctx.senders


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
    return {"Authorization": "Bearer " + history_token.mint(key, ns=ns, room=room, **kw)}


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


# ------------------------------------------------------------------ Web PubSub (recorder)
def wps_ctx(connection: str) -> AppContext:
    return AppContext(AppSettings.from_env({**MESH, "WebPubSubConnection": connection}))


async def test_webpubsub_sends_what_the_service_expects(recorder, wps_connection: str) -> None:  # type: ignore[no-untyped-def]
    """The recorder stands in for Web PubSub (no emulator exists): it records what the REAL
    WebPubSubServiceClient sends - path, hub, group, body, Authorization."""
    recorder.clear()
    ctx = wps_ctx(wps_connection)
    envs = (emit_envelope("eu", room="lobby", data={"text": "hi"}), emit_envelope("eu", room=None, data="all"))
    n = await handlers.webpubsub(ctx, "eu", sb_message(Batch(envs[:1], 0, ("eu",))))
    n += await handlers.webpubsub(ctx, "eu", sb_message(Batch(envs[1:], 0, ("eu",))))
    chat = emit_envelope("eu", ns="/chat-room", room="r 1", data=[1, 2])
    n += await handlers.webpubsub(ctx, "eu", sb_message(Batch((chat,), 0, ("eu",))))
    assert n == 3
    group, everyone, chat_req = recorder.requests
    assert group.method == "POST" and group.path == "/api/hubs/socketio/groups/lobby/:send"
    assert json.loads(group.body) == {"event": "chat", "data": {"text": "hi"}}
    assert group.headers["Content-Type"].startswith("application/json")
    assert "api-version" in group.query
    assert everyone.path == "/api/hubs/socketio/:send" and json.loads(everyone.body) == {"event": "chat", "data": "all"}
    hub = hub_for_namespace("socketio", "/chat-room")
    assert hub.startswith("socketio_chat_room_") and chat_req.path == f"/api/hubs/{hub}/groups/r%201/:send"
    scheme, token = group.headers["Authorization"].split(" ", 1)
    assert scheme == "Bearer"
    claims = jwt.decode(token, WPS_KEY, algorithms=["HS256"],
                        audience=f"http://127.0.0.1:{recorder.port}{group.path}?api-version={group.query['api-version']}")
    assert claims["exp"] > time.time()
    await ctx.aclose()


async def test_webpubsub_failure_propagates(recorder, wps_connection: str) -> None:  # type: ignore[no-untyped-def]
    recorder.clear()
    recorder.fail_next, recorder.fail_status = 1, 400  # 400: no SDK-side retry
    ctx = wps_ctx(wps_connection)
    with pytest.raises(Exception):  # noqa: B017 - HttpResponseError from the SDK: the host retries
        await handlers.webpubsub(ctx, "eu", sb_message(Batch((emit_envelope("eu"),), 0, ("eu",))))
    recorder.fail_next, recorder.fail_status = 0, 503
    await ctx.aclose()


async def test_negotiate_returns_a_client_url_with_group_roles(recorder, wps_connection: str) -> None:  # type: ignore[no-untyped-def]
    ctx = wps_ctx(wps_connection)
    resp = await handlers.negotiate_http(ctx, http_request("GET", "negotiate", params={"userId": "u1", "rooms": "lobby,vip"}))
    assert resp.status_code == 200
    doc = json.loads(resp.get_body())
    assert doc["url"].startswith(f"ws://127.0.0.1:{recorder.port}/client/hubs/socketio?access_token=")
    token = doc["url"].split("access_token=", 1)[1]
    claims = jwt.decode(token, WPS_KEY, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == "u1"
    assert set(claims["role"]) == {"webpubsub.joinLeaveGroup.lobby", "webpubsub.joinLeaveGroup.vip"}
    assert set(claims["webpubsub.group"]) == {"lobby", "vip"}
    await ctx.aclose()
