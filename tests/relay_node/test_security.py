"""Secure defaults of the relay node: room authorization, history since the join, per-socket rate
limits, the connection cap, the ops port, and the configuration checks (docs/security.md)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from relay_node.authorize import Grant, RoomAccess
from relay_node.config import ConfigError, from_args
from relay_node.ratelimit import RateLimiter, TokenBucket, Verdict
from socketio_servicebus import history_token as ht
from tests.support.history_api import HISTORY_TOKEN_EVENT

from .room_hooks import authorize_room, broken
from .support import SCALE, RelayProcess, clean_env

WAIT = 10.0 * SCALE
CONN = "Endpoint=sb://localhost:5672;SharedAccessKeyName=Root;SharedAccessKey=k;UseDevelopmentEmulator=true"
SECRET = "relay-security-test-secret-0123456789"
HISTORY_KEY = "history-token-key-of-the-security-test"


# ---------------------------------------------------------------- plain calls
def test_auth_jwt_key_needs_32_characters() -> None:
    with pytest.raises(ConfigError, match="--auth-jwt-key / RELAY_AUTH_JWT_KEY is 31 characters long"):
        from_args(["--auth-jwt-key", "k" * 31], {"SERVICEBUS_CONNECTION_STRING": CONN})
    with pytest.raises(ConfigError, match="31 characters") as info:
        from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN, "RELAY_AUTH_JWT_KEY": "s" * 31})
    assert "s" * 31 not in str(info.value)
    assert from_args(["--auth-jwt-key", "k" * 32], {"SERVICEBUS_CONNECTION_STRING": CONN}).auth_enabled


def test_secrets_stay_out_of_the_config_repr() -> None:
    conn = CONN.replace("SharedAccessKey=k", "SharedAccessKey=sas-key-that-must-not-be-logged")
    cfg = from_args(["--auth-jwt-key", SECRET], {"SERVICEBUS_CONNECTION_STRING": conn,
                                                   "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY})
    shown = repr(cfg)
    for secret in ("sas-key-that-must-not-be-logged", SECRET, HISTORY_KEY):
        assert secret not in shown
    assert "node_id=" in shown  # the rest is still there


def test_new_flags_and_their_checks() -> None:
    cfg = from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert (cfg.rate_limit, cfg.rate_burst, cfg.rate_limit_disconnect_after) == (20.0, 60.0, 100)
    assert cfg.max_connections == 10_000 and cfg.ops_port is None and cfg.authorize_room is None
    cfg = from_args(["--rate-limit", "5", "--max-connections", "2", "--ops-port", "0",
                     "--authorize-room", "tests.relay_node.room_hooks:authorize_room"],
                    {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert (cfg.rate_limit, cfg.max_connections, cfg.ops_port) == (5.0, 2, 0)
    for argv, message in ((["--ops-port", "x"], "--ops-port"), (["--authorize-room", "nope"], "--authorize-room"),
                          (["--rate-burst", "0"], "--rate-burst"),
                          (["--auth-jwt-public-key", "not pem"], "not a PEM public key")):
        with pytest.raises(ConfigError, match=message):
            from_args(argv, {"SERVICEBUS_CONNECTION_STRING": CONN})


def test_token_bucket_refuses_over_the_burst_and_refills_at_the_rate() -> None:
    clock = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, disconnect_after=4, clock=lambda: clock[0])
    environ: dict[str, Any] = {}
    assert [limiter.check(environ) for _ in range(3)] == [Verdict.ALLOW] * 3
    assert limiter.check(environ) is Verdict.REFUSE and limiter.limited == 1
    clock[0] += 0.5  # one token back
    assert limiter.check(environ) is Verdict.ALLOW
    verdicts = [limiter.check(environ) for _ in range(5)]
    assert verdicts == [Verdict.REFUSE] * 3 + [Verdict.DISCONNECT] * 2
    assert limiter.disconnected == 1 and limiter.limited == 6  # counted once per offender
    bucket = environ["relay.bucket"]
    assert isinstance(bucket, TokenBucket) and bucket.retry_after() == pytest.approx(0.5)
    assert not RateLimiter(rate=0, burst=1, disconnect_after=0).enabled


class _Sio:
    """Just what RoomAccess reads: one connection's environ."""

    def __init__(self, claims: dict[str, Any]):
        self.environ: dict[str, Any] = {"relay.claims": claims}

    def get_environ(self, sid: str, namespace: str = "/") -> dict[str, Any]:
        if sid != "s1":
            raise KeyError(sid)
        return self.environ


async def test_room_access_asks_the_hook_and_keeps_the_join_time() -> None:
    clock = [1000.0]
    access = RoomAccess(authorize_room, clock=lambda: clock[0])
    staff, guest = _Sio({"sub": "ann", "role": "staff"}), _Sio({"sub": "bob"})
    assert await access.admit(guest, "/", "s1", "chat:closed-x") is Grant.DENIED
    assert await access.admit(guest, "/", "s1", "chat:staff-x") is Grant.DENIED
    assert await access.admit(staff, "/", "s1", "chat:staff-x") is Grant.READ_HISTORY
    assert access.membership(staff, "/", "s1", "chat:staff-x").token_since == 0  # the whole history
    assert await access.admit(guest, "/", "s1", "chat:lobby") is Grant.JOIN
    clock[0] += 50
    assert await access.admit(guest, "/", "s1", "chat:lobby") is Grant.JOIN  # joining again keeps the time
    assert access.membership(guest, "/", "s1", "chat:lobby").token_since == 1000.0
    assert access.membership(guest, "/", "s1", "chat:other-app-room").since == 1050.0  # first seen now
    assert access.extend(guest, "/", "s1", "chat:lobby", 900.0).since == 900.0
    access.forget(guest, "/", "s1", "chat:lobby")
    assert access.membership(guest, "/", "s1", "chat:lobby").since == 1050.0
    assert await access.admit(guest, "/", "gone", "chat:lobby") is Grant.DENIED  # a closed connection
    assert access.refused == 3
    failing = RoomAccess(broken)
    assert await failing.admit(guest, "/", "s1", "chat:lobby") is Grant.DENIED and failing.refused == 1


# ---------------------------------------------------------------- over a real node
async def sio_client(url: str, **kwargs: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=5, **kwargs)
    return client


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.text()


def metric(text: str, name: str) -> float:
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not in the metrics"
    return values[0]


def login(sub: str, **claims: Any) -> dict[str, str]:
    return {"token": jwt.encode({"sub": sub, "exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")}


async def test_room_hook_decides_joins_and_history_tokens_start_at_the_join(conn_a: str) -> None:
    node = RelayProcess("--connection-string", conn_a, "--node-id", "sec1", "--auth-jwt-key", SECRET,
                        "--authorize-room", "tests.relay_node.room_hooks:authorize_room",
                        env=clean_env(SIO_HISTORY_TOKEN_KEY=HISTORY_KEY)).start()
    try:
        ann = await sio_client(node.url, auth=login("ann", role="staff"))
        bob = await sio_client(node.url, auth=login("bob"))
        # the hook sees the JWT claims: bob may not join staff or closed rooms, ann may
        for room in ("closed-x", "staff-x"):
            ack = await bob.call("join", room, timeout=WAIT)
            assert ack.get("error") == f"not allowed to join {room!r}", ack
        assert (await ann.call("join", "staff-x", timeout=WAIT))["ok"]
        staff = ht.verify((await ann.call(HISTORY_TOKEN_EVENT, {"room": "chat:staff-x"}, timeout=WAIT))["token"],
                          [HISTORY_KEY])
        assert staff.whole_history and staff.sub == "ann"  # only the hook's "read-history" grants it

        before = time.time()
        assert (await bob.call("join", "lobby", timeout=WAIT))["ok"]
        ack = await bob.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby"}, timeout=WAIT)
        first = ht.verify(ack["token"], [HISTORY_KEY])
        assert before - 1 <= first.since <= time.time() + 1 and ack["since"] == first.since
        assert not first.whole_history

        # who: only for rooms the socket is in
        refused = await bob.call("who", "staff-x", timeout=WAIT)
        assert refused["error"] == "join 'staff-x' before asking who is in it"
        assert (await bob.call("who", "lobby", timeout=WAIT))["count"] == 1

        # back on a new connection: a new join starts later, unless it resumes the earlier token
        await bob.disconnect()
        await asyncio.sleep(1.1)
        bob = await sio_client(node.url, auth=login("bob"))
        await bob.call("join", "lobby", timeout=WAIT)
        fresh = ht.verify((await bob.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby"}, timeout=WAIT))["token"],
                          [HISTORY_KEY])
        assert fresh.since > first.since + 1
        resumed = await bob.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby", "resume": ack["token"]}, timeout=WAIT)
        assert ht.verify(resumed["token"], [HISTORY_KEY]).since == first.since
        # someone else's token, another room's, or a forged one does not move the start back
        await ann.call("join", "lobby", timeout=WAIT)
        for bad in (ack["token"], staff_token := ht.mint(HISTORY_KEY, ns="/", room="chat:staff-x", since=0, sub="ann"),
                    ht.mint("another-key-of-at-least-32-characters!", ns="/", room="chat:lobby", since=1, sub="ann")):
            answer = await ann.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby", "resume": bad}, timeout=WAIT)
            assert answer["ok"] is False and "resume" in answer["error"], staff_token
        _, metrics = await get(node.url + "/metrics")
        assert metric(metrics, "relay_room_joins_refused_total") == 2
        assert metric(metrics, "relay_history_tokens_resumed_total") == 1
        await ann.disconnect()
        await bob.disconnect()
    finally:
        assert node.stop() == 0


async def test_a_flood_of_1000_chats_is_limited_while_others_keep_chatting(conn_a: str) -> None:
    node = RelayProcess("--connection-string", conn_a, "--node-id", "flood1").start()  # the default limits
    try:
        flooder, talker, listener = [await sio_client(node.url) for _ in range(3)]
        heard: list[dict[str, Any]] = []
        listener.on("chat", heard.append)
        errors: list[dict[str, Any]] = []
        flooder.on("error", errors.append)
        gone = asyncio.Event()
        flooder.on("disconnect", lambda *a: gone.set())
        for c in (flooder, talker, listener):
            assert (await c.call("join", "lobby", timeout=WAIT))["ok"]

        answers: list[dict[str, Any]] = []
        started = time.monotonic()
        for i in range(1000):
            if not flooder.connected:
                break
            await flooder.emit("chat", {"room": "lobby", "text": f"flood {i}"}, callback=answers.append)
        await asyncio.wait_for(gone.wait(), WAIT)  # a persistent offender is disconnected
        elapsed = time.monotonic() - started

        # meanwhile and afterwards, the others chat as usual
        for i in range(3):
            assert (await talker.call("chat", {"room": "lobby", "text": f"still here {i}"}, timeout=WAIT))["ok"]
        deadline = time.monotonic() + WAIT
        while sum(m["text"].startswith("still here") for m in heard) < 3:
            assert time.monotonic() < deadline, "the talker's messages did not arrive"
            await asyncio.sleep(0.05)

        from_flooder = [m for m in heard if m["text"].startswith("flood")]
        limited = [a for a in answers if str(a.get("error", "")).startswith("rate limited")]
        assert limited and limited[0]["event"] == "chat" and limited[0]["retryAfter"] >= 0
        # burst 60 + 20/s while it flooded: everything else was refused, none of it reached the room
        assert len(from_flooder) <= 60 + 20 * elapsed + 1 < 1000
        assert errors and errors[0]["error"].startswith("rate limited")
        assert errors[-1]["error"] == "rate limited: disconnected"
        _, metrics = await get(node.url + "/metrics")
        assert metric(metrics, "relay_events_rate_limited_total") >= 100
        assert metric(metrics, "relay_clients_disconnected_rate_limit_total") == 1
        await talker.disconnect()
        await listener.disconnect()
    finally:
        assert node.stop() == 0


async def test_max_connections_answers_503_and_the_ops_port_serves_metrics(conn_a: str) -> None:
    node = RelayProcess("--connection-string", conn_a, "--node-id", "cap1", "--max-connections", "2",
                        "--ops-port", "0").start()
    try:
        assert node.out is not None
        m = node.out.wait_for(r"ops port on http://[^:]+:(\d+)", WAIT)
        assert m, node.stderr()
        ops = f"http://127.0.0.1:{m.group(1)}"
        clients = [await sio_client(node.url) for _ in range(2)]
        status, body = await get(node.url + "/socket.io/?EIO=4&transport=polling")
        assert status == 503 and "maximum of 2 connections" in body
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(node.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
        assert info.value.status == 503
        await clients[0].disconnect()
        await asyncio.sleep(0.3)
        clients[0] = await sio_client(node.url)  # room again
        # ops routes: only on the ops port
        assert (await get(node.url + "/metrics"))[0] == 404 and (await get(node.url + "/readyz"))[0] == 404
        assert (await get(node.url + "/healthz"))[0] == 200 and (await get(ops + "/healthz"))[0] == 200
        assert (await get(ops + "/readyz"))[0] == 200
        assert (await get(ops + "/"))[0] == 404  # nothing else there
        status, metrics = await get(ops + "/metrics")
        assert status == 200 and metric(metrics, "relay_connections_refused_max_total") == 2
        for c in clients:
            await c.disconnect()
    finally:
        assert node.stop() == 0
    assert re.search(r"client auth: off .* may connect, join rooms and chat", node.stderr())
