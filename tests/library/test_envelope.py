"""Tests for the wire format: socketio_servicebus/wire/ and socketio_servicebus/topology.py."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from socketio.async_manager import AsyncManager
from socketio.async_pubsub_manager import AsyncPubSubManager

import socketio_servicebus
from servicebus_emulator.filters import sql_filter
from socketio_servicebus import topology
from socketio_servicebus.wire import codec as wire
from socketio_servicebus.wire.envelope import (
    BATCH_OVERHEAD,
    DEFAULT_BATCH_BYTES,
    MAX_DEPTH,
    MAX_ENVELOPES,
    SOCKETIO_KINDS,
    Batch,
    Envelope,
    EnvelopeError,
    EnvelopeTooLarge,
    Kind,
    application_properties,
    assemble_batch,
    batch_key,
    batch_overhead,
    batch_size,
    check_size,
    decode_batch,
    encode_batch,
    encode_envelope,
    envelope_size,
    pack_batches,
)

CHAT = {
    "method": "emit",
    "event": "chat",
    "data": ["hello"],
    "binary": False,
    "namespace": "/",
    "room": None,
    "skip_sid": None,
    "callback": None,
    "host_id": "h1",
}


def env(**kw) -> Envelope:
    kw.setdefault("kind", "emit")
    kw.setdefault("origin_node", "node-a")
    kw.setdefault("origin_region", "eu")
    kw.setdefault("body", dict(CHAT))
    return Envelope(**kw)


def wire_batch(**over) -> dict:
    e = {"v": 1, "id": "abc", "k": "emit", "on": "n", "or": "eu", "ts": 1.5, "b": {"x": 1}}
    b = {"v": 1, "hops": 0, "visited": ["eu"], "envelopes": [e]}
    b.update(over)
    return b


def dec(obj) -> Batch:
    return Batch.decode(json.dumps(obj).encode())


def reason_of(data, **kw) -> str:
    with pytest.raises(EnvelopeError) as ei:
        Batch.decode(data, **kw)
    return ei.value.reason


# ---------------------------------------------------------------- basics


def test_envelope_defaults():
    before = time.time()
    e = env()
    assert e.v == 1 and re.fullmatch(r"[0-9a-f]{32}", e.id)
    assert before <= e.ts <= time.time()
    assert e.kind is Kind.EMIT and e.kind == "emit"
    assert e.ns == "/" and e.persist is False and e.target_node is None
    assert env().id != e.id
    assert isinstance(hash(e), int)  # body excluded from hash
    with pytest.raises(AttributeError):
        e.kind = "callback"  # frozen


def test_int_ts_coerced_to_float():
    assert type(env(ts=5).ts) is float


def test_roundtrip_and_compact_wire_shape():
    e = env(id="e1", ts=1732634400.5)
    b = Batch((e,), 0, ("eu",))
    data = b.encode()
    assert data == (
        b'{"v":1,"hops":0,"visited":["eu"],"envelopes":[{"v":1,"id":"e1","k":"emit","on":"node-a",'
        b'"or":"eu","ts":1732634400.5,"b":' + json.dumps(CHAT, separators=(",", ":")).encode() + b"}]}"
    )
    assert Batch.decode(data) == b
    assert decode_batch(data) == [e]
    assert encode_batch([e], visited=["eu"]) == data


def test_non_default_fields_on_wire():
    e = env(ns="/chat", persist=True, target_node="node-b", target_region="us", kind="request")
    d = json.loads(encode_envelope(e))
    assert d["ns"] == "/chat" and d["p"] is True and d["tn"] == "node-b" and d["k"] == "request"
    assert d["tr"] == "us"
    assert decode_batch(encode_batch([e])) == [e]


def test_non_ascii_is_utf8_not_escaped():
    e = env(body={"t": "héllo 世界 🎉"})
    raw = encode_envelope(e)
    assert "世界".encode() in raw and b"\\u" not in raw
    assert decode_batch(encode_batch([e]))[0].body == e.body


def test_lone_surrogate_roundtrips():
    e = env(body={"t": "a\ud800b"})
    data = encode_batch([e])
    data.decode("utf-8")  # still valid UTF-8 (escaped)
    assert decode_batch(data)[0].body == e.body


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"v": 2}, "bad-version"),
        ({"v": True}, "bad-field:v"),
        ({"id": ""}, "bad-field:id"),
        ({"id": "x" * 129}, "bad-field:id"),
        ({"id": 5}, "bad-field:id"),
        ({"kind": "nope"}, "bad-field:kind"),
        ({"kind": 1}, "bad-field:kind"),
        ({"origin_node": ""}, "bad-field:origin_node"),
        ({"origin_node": None}, "bad-field:origin_node"),
        ({"origin_region": "eu,us"}, "bad-field:origin_region"),
        ({"origin_region": ""}, "bad-field:origin_region"),
        ({"ns": "chat"}, "bad-field:ns"),
        ({"ns": None}, "bad-field:ns"),
        ({"ts": "1"}, "bad-field:ts"),
        ({"ts": True}, "bad-field:ts"),
        ({"ts": -1.0}, "bad-field:ts"),
        ({"ts": math.inf}, "bad-field:ts"),
        ({"ts": math.nan}, "bad-field:ts"),
        ({"persist": 1}, "bad-field:persist"),
        ({"target_node": ""}, "bad-field:target_node"),
        ({"target_node": 3}, "bad-field:target_node"),
        ({"target_node": "t", "target_region": ""}, "bad-field:target_region"),
        ({"target_node": "t", "target_region": "eu,us"}, "bad-field:target_region"),
        ({"target_region": "us"}, "bad-field:target_region"),  # a region without a node
        ({"body": []}, "bad-field:body"),
    ],
)
def test_envelope_validation(kw, reason):
    with pytest.raises(EnvelopeError) as ei:
        env(**kw)
    assert ei.value.reason == reason
    assert isinstance(ei.value, ValueError)
    assert str(ei.value).startswith(reason + ": ")


def test_all_kinds():
    assert {k.value for k in Kind} == {
        "emit",
        "callback",
        "disconnect",
        "enter_room",
        "leave_room",
        "close_room",
        "heartbeat",
        "request",
        "response",
    }
    assert {k.value for k in SOCKETIO_KINDS} == {
        "emit",
        "callback",
        "disconnect",
        "enter_room",
        "leave_room",
        "close_room",
    }
    for k in Kind:
        e = env(kind=k.value)
        assert decode_batch(encode_batch([e])) == [e]


# ---------------------------------------------------------------- batch


def test_batch_validation():
    with pytest.raises(EnvelopeError, match="empty-batch"):
        Batch(())
    with pytest.raises(EnvelopeError) as ei:
        Batch((env(), env(persist=True)))
    assert ei.value.reason == "mixed-batch"
    for field_ in ("origin_node", "origin_region", "kind", "ns", "target_node"):
        other = {
            "origin_node": "x",
            "origin_region": "us",
            "kind": "disconnect",
            "ns": "/x",
            "target_node": "t",
        }
        with pytest.raises(EnvelopeError, match="mixed-batch"):
            Batch((env(), env(**{field_: other[field_]})))
    with pytest.raises(EnvelopeError, match="mixed-batch"):
        Batch((env(target_node="t"), env(target_node="t", target_region="us")))
    with pytest.raises(EnvelopeError, match="bad-field:hops"):
        Batch((env(),), hops=True)
    with pytest.raises(EnvelopeError, match="bad-field:hops"):
        Batch((env(),), hops=-1)
    with pytest.raises(EnvelopeError, match="bad-field:visited"):
        Batch((env(),), visited=("eu,us",))
    with pytest.raises(EnvelopeError, match="bad-shape"):
        Batch(({"not": "an envelope"},))
    b = Batch([env(), env()], 1, ["eu"])  # lists coerced
    assert type(b.envelopes) is tuple and b.visited == ("eu",)
    with pytest.raises(EnvelopeError, match="too-many"):
        Batch((env(),) * (MAX_ENVELOPES + 1))


def test_batch_key_and_forwarded():
    e = env(ns="/a", persist=True, target_node="t")
    assert batch_key(e) == ("node-a", "eu", Kind.EMIT, "/a", True, "t", None)
    assert batch_key(env(target_node="t", target_region="us"))[5:] == ("t", "us")
    b = Batch((e,), 0, ("eu",)).forwarded("us")
    assert b.hops == 1 and b.visited == ("eu", "us") and b.key == batch_key(e)
    assert Batch.decode(b.encode()) == b


# ---------------------------------------------------------------- app properties


def test_property_names_come_from_topology():
    props = topology.load_topology()["properties"]
    assert topology.PROP_ORIGIN_NODE == props["originNode"]
    assert topology.PROP_ROUTE_DONE == props["routeDone"]
    b = Batch((env(target_node="t", target_region="asia"),), 2, ("eu", "us"))
    ap = b.application_properties(route_done=True)
    assert set(ap) == set(props.values())
    assert ap == {
        props["originNode"]: "node-a",
        props["originRegion"]: "eu",
        props["kind"]: "emit",
        props["namespace"]: "/",
        props["persist"]: False,
        props["hops"]: 2,
        props["targetNode"]: "t",
        props["targetRegion"]: "asia",
        props["visited"]: "eu,us",
        props["routeDone"]: True,
    }
    assert all(type(v) in (str, int, bool) for v in ap.values())
    assert type(ap[props["kind"]]) is str  # plain str, not the enum


def test_application_properties_omits_nulls():
    ap = application_properties([env(), env()])
    assert topology.PROP_TARGET_NODE not in ap
    assert topology.PROP_TARGET_REGION not in ap
    assert topology.PROP_VISITED not in ap
    assert topology.PROP_ROUTE_DONE not in ap
    assert ap[topology.PROP_HOPS] == 0
    with pytest.raises(EnvelopeError, match="mixed-batch"):
        application_properties([env(), env(kind="disconnect")])
    with pytest.raises(EnvelopeError, match="empty-batch"):
        application_properties([])


def test_load_topology_returns_copy():
    t = topology.load_topology()
    t["properties"]["originNode"] = "mutated"
    assert topology.load_topology()["properties"]["originNode"] == topology.PROP_ORIGIN_NODE
    assert topology.property_names()["hops"] == topology.PROP_HOPS


def sql_match(sql: str, props: dict) -> bool:
    """The rule evaluated as the broker does (the emulator's SQL filter: NULL comparisons are unknown)."""
    return sql_filter(sql).matches({}, props)


def test_subscription_rules_against_properties():
    topo = topology.load_topology()
    subs = topo["functionSubscriptions"]
    node_sql = topo["nodeSubscription"]["sqlTemplate"]

    emit0 = Batch((env(persist=True),), 0, ("eu",)).application_properties()
    emit1 = Batch((env(persist=True),), 1, ("eu", "us")).application_properties(route_done=True)
    req = Batch((env(kind="request", target_node="node-b"),), 0, ("eu",)).application_properties()
    reply_here = Batch((env(kind="response", target_node="node-b", target_region="eu"),), 0, ("eu",))
    reply_away = Batch((env(kind="response", target_node="node-b", target_region="us"),), 0, ("eu",))
    join = Batch((env(kind="enter_room"),), 0, ("eu",)).application_properties()

    assert sql_match(subs["router"]["sql"], emit0)
    assert not sql_match(subs["router"]["sql"], emit1)
    assert not sql_match(subs["router"]["sql"], req)
    assert not sql_match(subs["router"]["sql"], reply_here.application_properties())
    assert sql_match(subs["router"]["sql"], reply_away.application_properties())
    assert not sql_match(subs["router"]["sql"], reply_away.forwarded("us").application_properties(route_done=True))
    assert sql_match(subs["persist"]["sql"], emit0)
    assert not sql_match(subs["persist"]["sql"], emit1)
    assert not sql_match(subs["persist"]["sql"], join)
    assert sql_match(subs["webpubsub"]["sql"], emit0)
    assert not sql_match(subs["webpubsub"]["sql"], join)
    assert not sql_match(subs["webpubsub"]["sql"], emit1)

    assert not sql_match(node_sql.format(node="node-a"), emit0)  # own message
    assert sql_match(node_sql.format(node="node-b"), emit0)
    assert sql_match(node_sql.format(node="node-b"), req)
    assert not sql_match(node_sql.format(node="node-c"), req)  # addressed to b


# ---------------------------------------------------------------- decode errors


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not-json"),
        (b"\xff\xfe", "not-json"),
        (b"{", "not-json"),
        (b'{"v":1} x', "not-json"),
        (b"\xef\xbb\xbf{}", "not-json"),  # BOM
        (b'{"v":NaN}', "not-json"),
        (b'{"v":1,"x":Infinity}', "not-json"),
        (b'{"v":1,"x":1e999}', "not-json"),
        (b'{"v":1,"x":' + b"9" * 5000 + b"}", "not-json"),
        (b"[]", "bad-shape"),
        (b"1", "bad-shape"),
        (b"{}", "bad-field:v"),
        (b'{"v":"1","envelopes":[]}', "bad-field:v"),
        (b'{"v":true,"envelopes":[]}', "bad-field:v"),
        (b'{"v":2,"envelopes":[]}', "bad-version"),
        (b'{"v":0,"envelopes":[]}', "bad-version"),
        (b'{"v":1}', "bad-shape"),
        (b'{"v":1,"envelopes":{}}', "bad-shape"),
        (b'{"v":1,"envelopes":[]}', "empty-batch"),
        (b'{"v":1,"envelopes":[1]}', "bad-shape"),
        (b"[" * 100_000 + b"]" * 100_000, "too-deep"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too-deep"),
    ],
)
def test_decode_errors(data, reason):
    assert reason_of(data) == reason


def test_decode_not_bytes():
    for bad in ("{}", None, 5, [b"{}"]):
        assert reason_of(bad) == "not-bytes"


def test_decode_accepts_bytes_like():
    data = encode_batch([env()])
    assert Batch.decode(bytearray(data)) == Batch.decode(memoryview(data)) == Batch.decode(data)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("id"), "bad-field:id"),
        (lambda e: e.pop("k"), "bad-field:kind"),
        (lambda e: e.pop("on"), "bad-field:origin_node"),
        (lambda e: e.pop("or"), "bad-field:origin_region"),
        (lambda e: e.pop("ts"), "bad-field:ts"),
        (lambda e: e.pop("b"), "bad-field:body"),
        (lambda e: e.pop("v"), "bad-field:v"),
        (lambda e: e.update(v=2), "bad-version"),
        (lambda e: e.update(k=["emit"]), "bad-field:kind"),
        (lambda e: e.update(k="unknown"), "bad-field:kind"),
        (lambda e: e.update(ts="now"), "bad-field:ts"),
        (lambda e: e.update(p="yes"), "bad-field:persist"),
        (lambda e: e.update(tn=""), "bad-field:target_node"),
        (lambda e: e.update(tr="us"), "bad-field:target_region"),
        (lambda e: e.update(ns=""), "bad-field:ns"),
        (lambda e: e.update(b=[]), "bad-field:body"),
        (lambda e: e.update(b={"x": {"_b64": 5}}), "bad-tag"),
        (lambda e: e.update(b={"x": {"_b64": "!!"}}), "bad-tag"),
        (lambda e: e.update(b={"x": {"_b64": "é"}}), "bad-tag"),
        (lambda e: e.update(b={"x": {"_esc": 1}}), "bad-tag"),
    ],
)
def test_decode_envelope_field_errors(mutate, reason):
    w = wire_batch()
    mutate(w["envelopes"][0])
    with pytest.raises(EnvelopeError) as ei:
        dec(w)
    assert ei.value.reason == reason
    assert "envelopes[0]" in ei.value.description


def test_decode_batch_level_errors():
    with pytest.raises(EnvelopeError, match="bad-field:hops"):
        dec(wire_batch(hops=-1))
    with pytest.raises(EnvelopeError, match="bad-field:hops"):
        dec(wire_batch(hops=1.0))
    with pytest.raises(EnvelopeError, match="bad-field:visited"):
        dec(wire_batch(visited="eu"))
    with pytest.raises(EnvelopeError, match="bad-field:visited"):
        dec(wire_batch(visited=[1]))
    w = wire_batch()
    w["envelopes"].append(dict(w["envelopes"][0], on="other"))
    with pytest.raises(EnvelopeError, match="mixed-batch"):
        dec(w)


def test_decode_optional_and_unknown_keys():
    w = wire_batch(future="ignored")
    del w["hops"], w["visited"]
    w["envelopes"][0]["zz"] = {"deep": [1, 2]}
    b = dec(w)
    assert b.hops == 0 and b.visited == ()
    assert b.envelopes[0].body == {"x": 1}


def test_limits():
    data = encode_batch([env(), env(), env()])
    assert reason_of(data, max_envelopes=2) == "too-many"
    assert len(Batch.decode(data, max_envelopes=3).envelopes) == 3
    assert reason_of(data, max_bytes=len(data) - 1) == "too-large"
    assert Batch.decode(data, max_bytes=len(data))
    assert reason_of(data, max_depth=4) == "too-deep"  # body has "data": [...] at depth 5
    assert Batch.decode(data, max_depth=5)
    big = json.dumps(wire_batch(envelopes=[wire_batch()["envelopes"][0]] * (MAX_ENVELOPES + 1))).encode()
    assert reason_of(big, max_bytes=len(big)) == "too-many"
    assert reason_of(b" " * (1024 * 1024 + 1)) == "too-large"


def nested(n: int):
    v: object = 1
    for i in range(n):
        v = [v] if i % 2 else {"a": v}
    return v


def test_depth_boundary_consistent_between_encode_and_decode():
    # document depth = 3 (batch, envelopes, envelope) + body depth
    ok_body = {"x": nested(MAX_DEPTH - 4)}
    assert wire.depth(ok_body) == MAX_DEPTH - 3
    data = encode_batch([env(body=ok_body)])
    assert wire.depth(json.loads(data)) == MAX_DEPTH
    assert decode_batch(data)[0].body == ok_body
    bad_body = {"x": nested(MAX_DEPTH - 3)}
    with pytest.raises(EnvelopeError, match="too-deep"):
        encode_envelope(env(body=bad_body))
    raw = json.dumps(wire_batch(envelopes=[dict(wire_batch()["envelopes"][0], b=bad_body)])).encode()
    assert reason_of(raw) == "too-deep"
    with pytest.raises(EnvelopeError, match="too-deep"):
        encode_envelope(env(body={"x": nested(50_000)}))


def test_encode_errors():
    for body in ({"s": {1, 2}}, {"f": math.nan}, {"f": math.inf}, {"o": object()}, {(1, 2): 1}):
        with pytest.raises(EnvelopeError) as ei:
            encode_envelope(env(body=body))
        assert ei.value.reason == "not-serializable"
    circ: dict = {}
    circ["self"] = circ
    with pytest.raises(EnvelopeError):
        encode_envelope(env(body=circ))
    circ_b: dict = {"b": b"x"}
    circ_b["self"] = circ_b
    with pytest.raises(EnvelopeError):
        encode_envelope(env(body=circ_b))


def test_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(EnvelopeError("bad-shape", "x")))
    assert e.reason == "bad-shape" and e.description == "x"
    t = pickle.loads(pickle.dumps(EnvelopeTooLarge("big", 10, 5)))
    assert t.reason == "too-large" and t.size == 10 and t.limit == 5


# ---------------------------------------------------------------- bytes


def test_raw_bytes_tagging():
    body = {
        "raw": b"\x00\xffdata",
        "ba": bytearray(b"ab"),
        "mv": memoryview(b"cd"),
        "nested": [b"", (b"t", 1)],
        "looks_like_tag": {"_b64": "AAE="},
        "looks_like_esc": {"_esc": {"_b64": "x"}},
        "two_keys": {"_b64": "x", "y": 1},
        "str_token": "_b64",
    }
    out = decode_batch(encode_batch([env(body=body)]))[0].body
    assert out == {
        "raw": b"\x00\xffdata",
        "ba": b"ab",
        "mv": b"cd",
        "nested": [b"", [b"t", 1]],
        "looks_like_tag": {"_b64": "AAE="},
        "looks_like_esc": {"_esc": {"_b64": "x"}},
        "two_keys": {"_b64": "x", "y": 1},
        "str_token": "_b64",
    }
    assert type(out["raw"]) is bytes and type(out["ba"]) is bytes
    d = json.loads(encode_envelope(env(body={"raw": b"\x01"})))
    assert d["b"] == {"raw": {"_b64": base64.b64encode(b"\x01").decode()}}


def _capture_manager():
    published: list[dict] = []

    class Capture(AsyncPubSubManager):
        async def _publish(self, data):
            published.append(data)

        async def _handle_emit(self, message):  # no local server in this test
            pass

    return Capture(), published


def test_python_socketio_binary_emit_roundtrip(monkeypatch):
    """The dicts AsyncPubSubManager publishes survive the envelope unchanged."""
    sender, published = _capture_manager()
    payload = {"img": b"\x89PNG\x00\x01", "parts": [b"a", "txt"], "n": 3}
    asyncio.run(sender.emit("file", (payload, b"second"), namespace="/up", room="r1"))
    asyncio.run(sender.emit("nested_tuple", {"t": (b"raw",)}, namespace="/up"))  # raw bytes path
    binary_msg, raw_msg = published
    assert binary_msg["binary"] is True and binary_msg["data"][0][0]["img"] == {
        "_placeholder": True,
        "num": 0,
    }
    assert isinstance(raw_msg["data"][0]["t"][0], bytes)  # python-socketio didn't deconstruct it

    envs = [
        env(body=m, ns=m["namespace"], origin_node=sender.host_id, id=f"e{i}")
        for i, m in enumerate(published)
    ]
    got = [e.body for e in Batch.decode(Batch(tuple(envs[:1])).encode()).envelopes]
    got += [e.body for e in Batch.decode(Batch(tuple(envs[1:])).encode()).envelopes]
    assert got[0] == binary_msg  # plain JSON structure: identical
    assert got[1] == {**raw_msg, "data": [{"t": [b"raw"]}]}  # tuple -> list, bytes kept

    # feed to a receiving python-socketio manager: original bytes are rebuilt
    received = []

    async def fake_emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, **kw):
        received.append((event, data, namespace, room))

    monkeypatch.setattr(AsyncManager, "emit", fake_emit)
    receiver = AsyncPubSubManager()
    for body in got:
        asyncio.run(receiver._handle_emit(body))
    assert received[0] == ("file", (payload, b"second"), "/up", "r1")
    assert received[1] == ("nested_tuple", {"t": [b"raw"]}, "/up", None)


def test_python_socketio_callback_with_bytes(monkeypatch):
    sender, published = _capture_manager()
    asyncio.run(sender._return_callback("origin-host", "sid1", "/", 7, b"\x00ack", {"ok": True}))
    (msg,) = published
    assert msg["method"] == "callback" and msg["args"] == (b"\x00ack", {"ok": True})
    e = env(kind="callback", body=msg, target_node="origin-host")
    body = decode_batch(encode_batch([e]))[0].body
    assert body == {**msg, "args": [b"\x00ack", {"ok": True}]}

    triggered = []

    async def fake_trigger(self, sid, id, data):
        triggered.append((sid, id, data))

    monkeypatch.setattr(AsyncManager, "trigger_callback", fake_trigger)
    receiver = AsyncPubSubManager()
    receiver.host_id = "origin-host"
    asyncio.run(receiver._handle_callback(body))
    assert triggered == [("sid1", 7, [b"\x00ack", {"ok": True}])]


@pytest.mark.parametrize(
    "msg",
    [
        {"method": "disconnect", "sid": "s", "namespace": "/", "host_id": "h"},
        {"method": "enter_room", "sid": "s", "room": "r", "namespace": "/", "host_id": "h"},
        {"method": "leave_room", "sid": "s", "room": "r", "namespace": "/", "host_id": "h"},
        {"method": "close_room", "room": "r", "namespace": "/", "host_id": "h"},
        {
            "method": "emit",
            "event": "e",
            "data": [1],
            "binary": False,
            "namespace": "/",
            "room": ["a", "b"],
            "skip_sid": ["x"],
            "callback": ["r", "/", 3],
            "host_id": "h",
        },
    ],
)
def test_socketio_messages_roundtrip(msg):
    e = env(kind=msg["method"], body=msg)
    assert decode_batch(encode_batch([e])) == [e]


# ---------------------------------------------------------------- sizes & packing


def test_sizes_exact():
    envs = [env(body={"i": i, "t": "x" * i}) for i in range(5)]
    sizes = [envelope_size(e) for e in envs]
    assert sizes == [len(encode_envelope(e)) for e in envs]
    for hops, visited in ((0, ()), (3, ("eu", "us-east", "ásia"))):
        data = encode_batch(envs, hops=hops, visited=visited)
        assert batch_size(sizes, hops, visited) == len(data)
        assert batch_overhead(hops, visited) + sum(sizes) + len(sizes) - 1 == len(data)
        assert assemble_batch([encode_envelope(e) for e in envs], hops=hops, visited=visited) == data
    assert BATCH_OVERHEAD == batch_overhead() == len(b'{"v":1,"hops":0,"visited":[],"envelopes":[]}')
    assert batch_size([]) == BATCH_OVERHEAD


def test_check_size():
    e = env(body={"t": "x" * 1000})
    size = envelope_size(e)
    assert check_size(e, size + BATCH_OVERHEAD) == size
    with pytest.raises(EnvelopeTooLarge) as ei:
        check_size(e, size + BATCH_OVERHEAD - 1)
    assert ei.value.reason == "too-large" and isinstance(ei.value, EnvelopeError)
    assert ei.value.size == size + BATCH_OVERHEAD
    with pytest.raises(EnvelopeTooLarge):
        check_size(env(body={"t": "x" * DEFAULT_BATCH_BYTES}))


def test_pack_batches_order_and_limits():
    a = [env(body={"i": i, "pad": "x" * 200}) for i in range(30)]
    j = env(kind="enter_room", body={"method": "enter_room"})
    seq = a[:10] + [j] + a[10:]
    limit = 2000
    out = pack_batches(seq, max_bytes=limit)
    flat = [e for b, _ in out for e in b.envelopes]
    assert flat == seq  # total order preserved
    assert [b.key[2] for b, _ in out].count(Kind.ENTER_ROOM) == 1
    for b, data in out:
        assert len(data) <= limit
        assert data == b.encode()
        assert Batch.decode(data) == b
        assert b.visited == ("eu",) and b.hops == 0
    # tight packing: the next envelope would not have fitted
    for (b1, d1), (b2, _) in zip(out, out[1:], strict=False):
        if b1.key == b2.key:
            assert len(d1) + 1 + envelope_size(b2.envelopes[0]) > limit

    grouped = pack_batches(seq, max_bytes=10**6, preserve_order=False, visited=(), hops=2)
    assert [len(b.envelopes) for b, _ in grouped] == [30, 1]
    assert grouped[0][0].hops == 2 and grouped[0][0].visited == ()
    assert [len(b.envelopes) for b, _ in pack_batches(a, max_envelopes=7)] == [7, 7, 7, 7, 2]
    with pytest.raises(EnvelopeTooLarge):
        pack_batches([env(body={"t": "x" * 5000})], max_bytes=1000)
    with pytest.raises(EnvelopeError, match="bad-shape"):
        pack_batches([{"x": 1}])
    assert pack_batches([]) == []


def test_public_api_exported():
    for name in socketio_servicebus.__all__:
        assert getattr(socketio_servicebus, name) is not None
    assert socketio_servicebus.Envelope is Envelope


# ---------------------------------------------------------------- hypothesis

_keys = st.one_of(st.text(max_size=8), st.sampled_from(["_b64", "_esc", "_placeholder", "num", "b", "k"]))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),  # includes lone surrogates
    st.binary(max_size=20),
)
bodies = st.dictionaries(
    _keys,
    st.recursive(
        _scalars,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=4),
        max_leaves=20,
    ),
    max_size=6,
)
_names = st.text(min_size=1, max_size=12).filter(lambda s: "," not in s)


@st.composite
def envelopes_of_key(draw):
    common = {
        "kind": draw(st.sampled_from(list(Kind))),
        "origin_node": draw(_names),
        "origin_region": draw(_names),
        "ns": "/" + draw(st.text(max_size=8)),
        "persist": draw(st.booleans()),
        "target_node": draw(st.none() | _names),
    }
    if common["target_node"] is not None:
        common["target_region"] = draw(st.none() | _names)
    return [
        Envelope(
            **common,
            body=draw(bodies),
            ts=draw(st.floats(min_value=0, max_value=4e9)),
            id=draw(st.text(min_size=1, max_size=40)),
        )
        for _ in range(draw(st.integers(1, 5)))
    ]


@settings(max_examples=300, deadline=None)
@given(envelopes_of_key(), st.integers(0, 2**40), st.lists(_names, max_size=4))
def test_prop_roundtrip_and_exact_sizes(envs, hops, visited):
    b = Batch(tuple(envs), hops, tuple(visited))
    data = b.encode()
    assert Batch.decode(data) == b
    assert len(data) == batch_size([envelope_size(e) for e in envs], hops, visited)
    assert json.loads(data)["v"] == 1  # standard JSON, readable by anything
    data.decode("utf-8")
    props = b.application_properties()
    assert props[topology.PROP_HOPS] == hops


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_prop_arbitrary_bytes_only_envelope_error(data):
    try:
        Batch.decode(data)
    except EnvelopeError as exc:
        assert exc.reason


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=30,
)


@st.composite
def json_documents(draw):
    """Arbitrary JSON, or a valid batch document with 0-2 fields corrupted."""
    if draw(st.integers(0, 3)) == 0:
        return draw(_json)
    envs = draw(envelopes_of_key())
    doc = {
        "v": 1,
        "hops": draw(st.integers(0, 3)),
        "visited": draw(st.lists(_names, max_size=3)),
        "envelopes": [dict(e.to_wire(), b=wire._prepare(e.body)) for e in envs],
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        envs_w = doc.get("envelopes")
        target = doc
        if isinstance(envs_w, list) and envs_w and draw(st.booleans()):
            target = draw(st.sampled_from(envs_w))
            if not isinstance(target, dict):
                continue
        key = draw(st.sampled_from(sorted(target) + ["ns", "p", "tn", "tr"]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(_json)
    return doc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents())
def test_prop_arbitrary_json_only_envelope_error(doc):
    data = json.dumps(doc).encode()  # may contain NaN/Infinity: must be rejected, not crash
    try:
        b = Batch.decode(data)
    except EnvelopeError as exc:
        assert exc.reason
        return
    # anything accepted re-encodes to something that decodes to the same batch
    assert Batch.decode(b.encode()) == b


@settings(max_examples=200, deadline=None)
@given(bodies)
def test_prop_depth_measures(body):
    data = encode_batch([env(body=body)])
    assume(len(data) < 10**6)
    assert wire.depth(json.loads(data)) <= MAX_DEPTH


def test_fuzz_mutated_valid_batches():
    """Byte-level mutations of valid batches: decode never raises anything but
    EnvelopeError, and whatever it accepts re-encodes stably."""
    rng = random.Random(1234)
    seeds = [
        encode_batch(
            [env(body={"t": "héllo", "raw": b"\x00\x01", "esc": {"_b64": "x"}}), env()], visited=["eu"]
        ),
        encode_batch(
            [env(kind="request", target_node="n2", ns="/a", persist=True, body={"q": [1, 2.5, None]})]
        ),
        Batch((env(body=dict(CHAT)),), 3, ("eu", "us")).encode(),
    ]
    alphabet = b'{}[]",:0123456789.eE+-truefalsn\\u_b64esc \x00\xff\xc3\xa9'
    accepted = 0
    for _ in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                del data[min(pos, len(data) - 1)]
            elif op == 1:
                data.insert(pos, rng.choice(alphabet))
            elif op == 2 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            else:
                data[pos:pos] = rng.choice(seeds)[rng.randrange(50) :][: rng.randrange(20)]
        try:
            b = Batch.decode(bytes(data))
        except EnvelopeError as exc:
            assert exc.reason and isinstance(exc.description, str)
            continue
        accepted += 1
        assert Batch.decode(b.encode()) == b
    assert accepted > 0  # some mutations (e.g. inside strings) stay valid
