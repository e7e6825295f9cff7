"""Trust zones (``socketio_servicebus.zones``): signing, the zone document, policy, bounds. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from socketio_servicebus.wire.envelope import Batch, Envelope, Kind, pack_batches
from socketio_servicebus.zones import BusGuard, Reason, ZoneConfigError, ZoneKey, load_zones
from socketio_servicebus.zones.bounds import HelloLimiter, NodeAdmission
from socketio_servicebus.zones.config import Zone, ZoneKind
from socketio_servicebus.zones.signing import PROP_SIG, forward_body
from tests.support.zones import make_zones

Z = make_zones()


def env(kind: Kind = Kind.EMIT, node: str = "factory1", target: str | None = None, **body: Any) -> Envelope:
    b: dict[str, Any] = {"method": kind.value, **body} if kind.value in {
        "emit", "callback", "disconnect", "enter_room", "leave_room", "close_room"} else dict(body)
    return Envelope(kind=kind, origin_node=node, origin_region="eu", target_node=target, body=b)


def signed(e: Envelope, zone: str = "factory1") -> tuple[bytes, dict[str, Any], Batch]:
    ((batch, body),) = pack_batches([e])
    props: dict[str, Any] = {str(k): v for k, v in batch.application_properties().items()}
    props.update(BusGuard(Z.zone_set(zone)).sign(batch, body))
    return body, props, batch


def check(body: bytes, props: dict[str, Any], batch: Batch, receiver: str = "cloud") -> tuple[Any, Any]:
    return BusGuard(Z.zone_set(receiver)).check_message(body, props, batch)


def test_a_signed_message_verifies_and_names_its_zone() -> None:
    zone, verdict = check(*signed(env(room="chat:factory1:line")))
    assert verdict.ok and zone is not None and zone.name == "factory1"


@pytest.mark.parametrize("tamper, reason", [
    (lambda b, p: (b, {k: v for k, v in p.items() if not k.startswith("sio_sig")}), Reason.UNSIGNED),
    (lambda b, p: (b.replace(b"chat:factory1:line", b"chat:factory1:lin3"), p), Reason.BAD_SIGNATURE),
    (lambda b, p: (b, {**p, "sio_zone": "cloud"}), Reason.ZONE_MISMATCH),
    (lambda b, p: (b, {**p, "sio_kid": "000000000000"}), Reason.UNKNOWN_KID),
    (lambda b, p: (b, {**p, PROP_SIG: p[PROP_SIG][:-4] + "AAAA"}), Reason.BAD_SIGNATURE),
    (lambda b, p: (b, {**p, PROP_SIG: "!!"}), Reason.BAD_SIGNATURE),
    (lambda b, p: (b, {**p, "sio_persist": True}), Reason.PROPS_MISMATCH),
    (lambda b, p: (b, {**p, "sio_origin_node": "a1"}), Reason.PROPS_MISMATCH),
    (lambda b, p: (b, {**p, "sio_target_node": "a1"}), Reason.PROPS_MISMATCH),
])
def test_tampered_messages_are_refused_with_a_reason(tamper: Any, reason: Reason) -> None:
    body, props, batch = signed(env(room="chat:factory1:line"))
    body, props = tamper(body, props)
    zone, verdict = check(body, props, Batch.decode(body))
    assert zone is None and not verdict.ok and verdict.reason is reason


def test_a_body_with_a_noncanonical_prefix_is_refused() -> None:
    body, props, batch = signed(env(room="chat:factory1:line"))
    spaced = body.replace(b'{"v":1,', b'{"v": 1,', 1)
    zone, verdict = check(spaced, props, Batch.decode(spaced))
    assert verdict.reason is Reason.NONCANONICAL


def test_the_router_forward_keeps_the_site_signature() -> None:
    body, props, batch = signed(env(room="chat:factory1:line"))
    fwd_batch = batch.forwarded("us")
    fwd = forward_body(body, batch.hops, batch.visited, fwd_batch.hops, fwd_batch.visited)
    assert fwd is not None and fwd != body
    fwd_props = {**props, **{str(k): v for k, v in fwd_batch.application_properties().items()}}
    zone, verdict = check(fwd, fwd_props, Batch.decode(fwd))
    assert verdict.ok and zone is not None and zone.name == "factory1"


def test_a_site_key_cannot_sign_as_the_cloud() -> None:
    ((batch, body),) = pack_batches([env(node="a1", room="chat:lobby")])
    props: dict[str, Any] = {str(k): v for k, v in batch.application_properties().items()}
    props.update(Z.site.sign(body, batch.hops, batch.visited))
    props["sio_zone"] = "cloud"
    assert check(body, props, batch)[1].reason is Reason.ZONE_MISMATCH


def _police(e: Envelope, sender: str = "factory1", receiver: str = "cloud") -> Any:
    zs = Z.zone_set(receiver)
    return BusGuard(zs).police(zs.zones[sender], e)


@pytest.mark.parametrize("e, reason", [
    (env(Kind.DISCONNECT, sid="cloudsid", namespace="/"), Reason.NOT_OWN_SOCKETS),
    (env(Kind.ENTER_ROOM, sid="attacker", namespace="/", room="chat:lobby"), Reason.NOT_OWN_SOCKETS),
    (env(Kind.LEAVE_ROOM, sid="cloudsid", namespace="/", room="chat:lobby"), Reason.NOT_OWN_SOCKETS),
    (env(Kind.CLOSE_ROOM, namespace="/", room="chat:lobby"), Reason.NOT_OWN_SOCKETS),
    (env(room="chat:lobby"), Reason.ROOM_OUTSIDE_ZONE),
    (env(room=None), Reason.ROOM_OUTSIDE_ZONE),
    (env(room=["chat:factory1", "chat:lobby"]), Reason.ROOM_OUTSIDE_ZONE),
    (env(node="a1", room="chat:factory1"), Reason.NODE_NOT_IN_ZONE),
    (env(Kind.HEARTBEAT, node="made-up-17", clients=0), Reason.NODE_NOT_IN_ZONE),
    (env(Kind.REQUEST, op="server_side_emit", rid="r", event="x", args=[]), Reason.REQUEST_OUTSIDE_ZONE),
    (env(Kind.REQUEST, op="fetch_sockets", rid="r", room="chat:lobby"), Reason.REQUEST_OUTSIDE_ZONE),
    (env(Kind.RESPONSE, rid="r", ok=True), Reason.NOT_ADDRESSED),
])
def test_an_onprem_zone_is_refused_outside_its_policy(e: Envelope, reason: Reason) -> None:
    v = _police(e)
    assert not v.ok and v.reason is reason


@pytest.mark.parametrize("e", [
    env(room="chat:factory1"),
    env(room=["chat:factory1", "chat:factory1:2"]),
    env(node="factory1-b", room="chat:factory1"),
    env(Kind.HEARTBEAT, clients=3),
    env(Kind.REQUEST, op="fetch_sockets", rid="r", room="chat:factory1"),
    env(Kind.RESPONSE, target="a1", rid="r", ok=True),
    env(Kind.CALLBACK, target="a1", sid="s", namespace="/", id=1, args=[]),
])
def test_an_onprem_zone_keeps_what_it_is_allowed(e: Envelope) -> None:
    assert _police(e).ok


def test_inside_its_own_zone_and_for_the_cloud_everything_is_allowed() -> None:
    assert _police(env(Kind.DISCONNECT, sid="x", namespace="/"), receiver="factory1").ok
    assert _police(env(Kind.CLOSE_ROOM, node="a1", namespace="/", room="chat:factory1"), sender="cloud",
                   receiver="factory1").ok
    assert _police(env(node="a1", room=None), sender="cloud").ok


def test_zone_document_errors_name_the_setting() -> None:
    base = Z.env()
    bad_docs: list[tuple[str, str]] = [
        ("not json", "not valid JSON"),
        (json.dumps({"zones": [{"name": "s", "kind": "onprem"}]}), "must list its own 'nodes'"),
        (json.dumps({"zones": [{"name": "s", "nodes": ["s"], "rooms": [""]}]}), "non-empty strings"),
        (json.dumps({"zones": [{"name": "s", "kind": "x"}]}), "'kind'"),
        (json.dumps({"zones": [{"name": "s", "nodes": ["s"], "public_keys": ["AAAA"]}]}), "bad public key"),
    ]
    for doc, words in bad_docs:
        with pytest.raises(ZoneConfigError, match=words):
            load_zones({**base, "SIO_ZONES": doc})
    with pytest.raises(ZoneConfigError, match="SIO_ZONE_KEY"):
        load_zones({**base, "SIO_ZONE_KEY": "short"})
    assert load_zones({}) is None


def test_a_cloud_only_deployment_needs_only_its_key(tmp_path: Any) -> None:
    key = ZoneKey.generate("cloud")
    path = tmp_path / "k"
    path.write_text(key.text() + "\n")
    zs = load_zones({"SIO_ZONE": "cloud", "SIO_ZONE_KEY_FILE": str(path)})
    assert zs is not None and zs.local.kind is ZoneKind.CLOUD and key.kid in zs.by_kid


def test_rotation_old_and_new_keys_both_verify() -> None:
    old, new = ZoneKey.generate("cloud"), ZoneKey.generate("cloud")
    doc = json.dumps({"zones": [{"name": "cloud", "kind": "cloud",
                                 "public_keys": [old.public.text(), new.public.text()]}]})
    verifier = BusGuard(load_zones({"SIO_ZONE": "cloud", "SIO_ZONES": doc}))  # type: ignore[arg-type]
    for signer in (old, new):
        ((batch, body),) = pack_batches([env(node="a1", room="r")])
        props: dict[str, Any] = {str(k): v for k, v in batch.application_properties().items()}
        props.update(signer.sign(body, batch.hops, batch.visited))
        assert verifier.check_message(body, props, batch)[1].ok


def test_hello_replies_are_limited_per_node_and_per_zone() -> None:
    lim = HelloLimiter(interval=5.0, per_zone=3)
    assert lim.allow("n1", "factory1", 0.0)
    assert not lim.allow("n1", "factory1", 1.0)
    assert [lim.allow(f"m{i}", "factory1", 1.0) for i in range(4)] == [True, True, False, False]
    assert lim.allow("a1", "cloud", 1.0)
    assert lim.allow("n1", "factory1", 6.0) and lim.limited == 3


def test_node_admission_caps_a_zone_and_the_registry() -> None:
    site = Zone("factory1", ZoneKind.ONPREM, (), ("factory1-*",), ("chat:factory1",), 2)
    cloud = Zone("cloud", ZoneKind.CLOUD)
    adm = NodeAdmission(max_nodes=4)
    reg: set[str] = set()
    results = []
    for i in range(1000):
        v = adm.admit(f"factory1-{i}", site, reg)
        if v.ok:
            reg.add(f"factory1-{i}")
        results.append(v.reason)
    assert len(reg) == 2 and results.count(Reason.ZONE_NODE_CAP) == 998
    assert adm.admit("made-up", site, reg).reason is Reason.NODE_NOT_IN_ZONE
    for n in ("a1", "a2"):
        assert adm.admit(n, cloud, reg).ok
        reg.add(n)
    assert adm.admit("b1", cloud, reg).reason is Reason.REGISTRY_FULL
    reg.discard("factory1-0")
    assert adm.admit("factory1-5", site, reg).ok  # a slot frees when a node leaves
