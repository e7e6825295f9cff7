"""Trust zones in the Functions: router, persist, Web PubSub push and the emit API verify the proof
of origin and the zone policy (real azure.functions messages through the host encoding, Azurite,
the local Web PubSub service)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from shared import handlers
from shared.appcontext import AppContext, AppSettings
from shared.persistence.hooks import HookRegistry
from socketio_servicebus import history_token
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind
from socketio_servicebus.zones import BusGuard, ZoneKey
from socketio_servicebus.zones.signing import PROP_SIG, PROP_ZONE
from tests.support.zones import make_zones

from .helpers import FakeContext, emit_envelope, http_request, sb_message

Z = make_zones()
MESH = {"SIO_REGION": "eu", "SIO_REGION_MAP": json.dumps({"eu": {}, "us": {}})}
HISTORY_KEY = "history-token-key-for-the-zone-tests-0123"
SITE_HISTORY_KEY = "factory1-history-token-key-0123456789"


def zoned(**extra: str) -> dict[str, str]:
    return {**MESH, **Z.env("cloud"), **extra}


def signed_msg(envs: list[Envelope], key: ZoneKey | None, region: str = "eu", **props: Any) -> Any:
    batch = Batch(tuple(envs), 0, (region,))
    body = batch.encode()
    p: dict[str, Any] = {str(k): v for k, v in batch.application_properties().items()}
    if key is not None:
        p.update(key.sign(body, batch.hops, batch.visited))
    p.update(props)
    return sb_message(body, props=p, message_id=uuid.uuid4().hex)


def site_emit(room: str | None, **kw: Any) -> Envelope:
    return emit_envelope("eu", room=room, node="factory1", **kw)


def forged_kinds() -> list[tuple[str, Envelope, ZoneKey | None, str]]:
    """(name, envelope, signing key, reason): every forged kind the issue lists, as the Functions see it."""
    def sock(kind: Kind, **body: Any) -> Envelope:
        return Envelope(kind=kind, origin_node="factory1", origin_region="eu",
                        body={"method": kind.value, "namespace": "/", **body})
    return [
        ("unsigned emit claiming a cloud node", emit_envelope("eu", room="chat:lobby", node="a1"), None, "unsigned"),
        ("site key claiming a cloud node", emit_envelope("eu", room="chat:lobby", node="a1"), Z.site,
         "node-not-in-zone"),
        ("emit outside the site's rooms", site_emit("chat:lobby"), Z.site, "room-outside-zone"),
        ("broadcast to everyone", site_emit(None), Z.site, "room-outside-zone"),
        ("disconnect", sock(Kind.DISCONNECT, sid="cloudsid"), Z.site, "not-own-sockets"),
        ("enter_room", sock(Kind.ENTER_ROOM, sid="evil", room="chat:lobby"), Z.site, "not-own-sockets"),
        ("leave_room", sock(Kind.LEAVE_ROOM, sid="cloudsid", room="chat:lobby"), Z.site, "not-own-sockets"),
        ("close_room", sock(Kind.CLOSE_ROOM, room="chat:lobby"), Z.site, "not-own-sockets"),
    ]


@pytest.mark.parametrize("name, env, key, reason", forged_kinds(), ids=[k[0] for k in forged_kinds()])
async def test_the_router_never_forwards_forged_or_out_of_policy(name: str, env: Envelope, key: ZoneKey | None,
                                                                 reason: str, caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeContext(zoned())
    with caplog.at_level(logging.INFO, "socketio_servicebus.zones"):
        plan = await handlers.router(ctx, "eu", signed_msg([env], key))
    assert plan.hops == () and not ctx.senders  # nothing reached another region
    assert ctx.guard is not None and ctx.guard.dropped[reason] == 1
    assert f"forged_dropped reason={reason}" in caplog.text
    assert f"node {env.origin_node!r}" in caplog.text  # logged with the claimed origin


async def test_the_router_forwards_a_site_message_with_its_signature_intact() -> None:
    ctx = FakeContext(zoned())
    plan = await handlers.router(ctx, "eu", signed_msg([site_emit("chat:factory1:line")], Z.site))
    assert plan.targets == ("us",)
    out = ctx.senders["us"].sent[0]
    body = b"".join(out.body)
    props = {str(k): v for k, v in out.application_properties.items()}
    assert props[PROP_ZONE] == "factory1"
    # the receiving region verifies the site's own signature: still attributable to factory1
    us = BusGuard(Z.zone_set("cloud"))
    zone, verdict = us.check_message(body, props, Batch.decode(body))
    assert verdict.ok and zone is not None and zone.name == "factory1"
    # ... and a tampered forward is caught there
    bad = body.replace(b"chat:factory1:line", b"chat:lobby:line!!!")
    assert not us.check_message(bad, props, Batch.decode(bad))[1].ok


def table_ctx(azurite: Any, table: str, **extra: str) -> AppContext:
    return AppContext(AppSettings.from_env(zoned(**{"TablesConnection": azurite.connection_string,
                                                    "SIO_HISTORY_TABLE": table, "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY,
                                                    **extra})), hooks=HookRegistry())


async def rows(ctx: AppContext, room: str) -> list[Any]:
    resp = await handlers.history_server_http(ctx, http_request("GET", "history/server", params={"room": room}))
    return [e["data"] for e in json.loads(resp.get_body())["events"]]


async def test_persist_stores_only_what_the_site_may_persist(azurite: Any, caplog: pytest.LogCaptureFixture) -> None:
    ctx = table_ctx(azurite, "t" + uuid.uuid4().hex[:12])
    with caplog.at_level(logging.WARNING, "socketio_servicebus.zones"):
        assert await handlers.persist(ctx, "eu", signed_msg(
            [site_emit("chat:lobby", data="forged", persist=True)], Z.site)) == 0
        assert await handlers.persist(ctx, "eu", signed_msg(
            [emit_envelope("eu", room="chat:lobby", node="a1", data="unsigned", persist=True)], None)) == 0
        assert await handlers.persist(ctx, "eu", signed_msg(
            [site_emit("chat:factory1", data="own", persist=True)], Z.site)) == 1
        assert await handlers.persist(ctx, "eu", signed_msg(
            [emit_envelope("eu", room="chat:lobby", node="a1", data="cloud", persist=True)], Z.cloud)) == 1
    assert await rows(ctx, "chat:lobby") == ["cloud"]  # nothing forged in the history table
    assert await rows(ctx, "chat:factory1") == ["own"]
    assert ctx.guard is not None and dict(ctx.guard.dropped) == {"room-outside-zone": 1, "unsigned": 1}
    assert caplog.text.count("forged_dropped") == 2
    await ctx.aclose()


async def test_webpubsub_pushes_only_admitted_emits_and_caps_rooms(wps_connection: str) -> None:
    """Against the local Web PubSub service: the number of REST calls the push made."""
    ctx = AppContext(AppSettings.from_env(zoned(WebPubSubConnection=wps_connection, SIO_WEBPUBSUB_MAX_ROOMS="5")))
    forged = await handlers.webpubsub(ctx, "eu", signed_msg([site_emit("chat:lobby")], Z.site))
    own = await handlers.webpubsub(ctx, "eu", signed_msg([site_emit("chat:factory1")], Z.site))
    many = await handlers.webpubsub(ctx, "eu", signed_msg(
        [emit_envelope("eu", room=[f"r{i}" for i in range(6)], node="a1")], Z.cloud))  # type: ignore[arg-type]
    few = await handlers.webpubsub(ctx, "eu", signed_msg(
        [emit_envelope("eu", room=[f"r{i}" for i in range(5)], node="a1")], Z.cloud))  # type: ignore[arg-type]
    assert (forged, own, many, few) == (0, 1, 0, 5)
    await ctx.aclose()


async def test_the_emit_api_signs_as_the_cloud_zone() -> None:
    ctx = FakeContext(zoned())
    resp = await handlers.emit_http(ctx, http_request("POST", "emit", body={"room": "chat:lobby", "event": "chat",
                                                                             "data": "hi"}))
    assert resp.status_code == 202
    out = ctx.senders["home:eu"].sent[0]
    body = b"".join(out.body)
    props = {str(k): v for k, v in out.application_properties.items()}
    assert props[PROP_ZONE] == "cloud" and props[PROP_SIG]
    zone, verdict = BusGuard(Z.zone_set("factory1")).check_message(body, props, Batch.decode(body))
    assert verdict.ok and zone is not None and zone.name == "cloud"


async def test_a_site_history_key_reads_only_its_rooms() -> None:
    scoped = json.dumps([{"key": SITE_HISTORY_KEY, "rooms": ["chat:factory1"]}])
    ctx = AppContext(AppSettings.from_env(zoned(SIO_HISTORY_TOKEN_KEY=HISTORY_KEY,
                                                SIO_HISTORY_TOKEN_SCOPED_KEYS=scoped)))
    token = history_token.mint(SITE_HISTORY_KEY, ns="/", room="chat:lobby", since=0)
    resp = await handlers.history_http(ctx, http_request("GET", "history", params={"room": "chat:lobby"},
                                                         headers={"Authorization": f"Bearer {token}"}))
    assert resp.status_code == 403


async def test_the_router_re_signs_a_cloud_message_after_checking_it() -> None:
    ctx = FakeContext(zoned())
    plan = await handlers.router(ctx, "eu", signed_msg([emit_envelope("eu", room="chat:lobby", node="a1")], Z.cloud))
    assert plan.targets == ("us",)
    out = ctx.senders["us"].sent[0]
    body = b"".join(out.body)
    props = {str(k): v for k, v in out.application_properties.items()}
    zone, verdict = BusGuard(Z.zone_set("factory1")).check_message(body, props, Batch.decode(body))
    assert verdict.ok and zone is not None and zone.name == "cloud" and props["sio_hops"] == 1
