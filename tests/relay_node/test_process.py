"""``python -m relay_node`` processes on the emulator, driven by real socket.io clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from socketio_servicebus import history_token as ht
from socketio_servicebus.servicebus.clients import admin_client
from tests.support.history_api import HISTORY_TOKEN_EVENT

from .conftest import ONPREM_KEY, ONPREM_KEY_NAME, ONPREM_NODE
from .support import SCALE, JsClient, RelayProcess, clean_env

WAIT = 10.0 * SCALE


async def sio_client(url: str, **kwargs: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=5, **kwargs)
    return client


def collector(client: socketio.AsyncClient, event: str = "chat") -> asyncio.Queue[Any]:
    got: asyncio.Queue[Any] = asyncio.Queue()
    client.on(event, got.put_nowait)
    return got


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.text()


async def test_chat_between_two_nodes_of_a_region(region_a_nodes: tuple[RelayProcess, RelayProcess]) -> None:
    a1, a2 = region_a_nodes
    c1, c2 = await sio_client(a1.url), await sio_client(a2.url)
    try:
        got1, got2 = collector(c1), collector(c2)
        assert (await c1.call("join", "lobby"))["node"] == "a1"
        assert (await c2.call("join", "lobby"))["node"] == "a2"
        ack = await c1.call("chat", {"room": "lobby", "text": "hello from a1"})
        assert ack["ok"] is True
        msg = await asyncio.wait_for(got2.get(), WAIT)
        assert msg["text"] == "hello from a1" and msg["room"] == "lobby"
        assert (msg["node"], msg["region"], msg["sid"], msg["id"]) == ("a1", "A", c1.get_sid(), ack["id"])
        assert (await asyncio.wait_for(got1.get(), WAIT))["id"] == ack["id"]  # the sender's room gets it too

        await c2.call("chat", {"room": "lobby", "text": "back from a2"})
        assert (await asyncio.wait_for(got1.get(), WAIT))["node"] == "a2"

        who = await c1.call("who", "lobby", timeout=10)
        assert who["count"] == 2 and who["missing"] == []
        assert {(m["sid"], m["node"], m["region"]) for m in who["members"]} == {
            (c1.get_sid(), "a1", "A"), (c2.get_sid(), "a2", "A")}
    finally:
        await c1.disconnect()
        await c2.disconnect()


async def test_invalid_input_answers_error_and_keeps_the_connection(
    region_a_nodes: tuple[RelayProcess, RelayProcess],
) -> None:
    a1, _ = region_a_nodes
    c = await sio_client(a1.url)
    try:
        errors = collector(c, "error")
        assert "room must be" in (await c.call("join", "no spaces allowed"))["error"]
        assert "room must be" in (await c.call("join", {"room": 5}))["error"]
        assert "join 'elsewhere'" in (await c.call("chat", {"room": "elsewhere", "text": "x"}))["error"]
        await c.call("join", "lobby")
        assert "longer than" in (await c.call("chat", {"room": "lobby", "text": "x" * 5000}))["error"]
        assert "chat takes" in (await c.call("chat", "just a string"))["error"]
        assert (await asyncio.wait_for(errors.get(), WAIT))["event"] == "join"
        assert (await c.call("chat", {"room": "lobby", "text": "still fine"}))["ok"] is True
    finally:
        await c.disconnect()


async def test_official_js_client_chats_across_nodes(region_a_nodes: tuple[RelayProcess, RelayProcess]) -> None:
    a1, a2 = region_a_nodes
    js = JsClient(a1.url)  # polling first, then upgrade: both transports in play
    py = await sio_client(a2.url)
    try:
        await js.aexpect("connect")
        js.send(op="join", room="js-room")
        assert (await js.aexpect("ack", op="join"))["ack"]["ok"] is True
        got = collector(py)
        await py.call("join", "js-room")
        await py.call("chat", {"room": "js-room", "text": "to the browser client"})
        msg = await js.aexpect("chat", text="to the browser client")
        assert (msg["node"], msg["region"]) == ("a2", "A")
        js.send(op="chat", room="js-room", text="from the browser client")
        assert (await js.aexpect("ack", op="chat"))["ack"]["ok"] is True
        while (msg := await asyncio.wait_for(got.get(), WAIT))["text"] != "from the browser client":
            pass
        assert msg["node"] == "a1"
    finally:
        js.close()
        await py.disconnect()


async def test_long_polling_only_client(region_a_nodes: tuple[RelayProcess, RelayProcess]) -> None:
    a1, a2 = region_a_nodes
    js = JsClient(a2.url, "--transport", "polling")
    py = await sio_client(a1.url)
    try:
        assert (await js.aexpect("connect"))["transport"] == "polling"
        js.send(op="join", room="poll")
        await js.aexpect("ack", op="join")
        await py.call("join", "poll")
        await py.call("chat", {"room": "poll", "text": "over long-polling"})
        assert (await js.aexpect("chat", text="over long-polling"))["node"] == "a1"
    finally:
        js.close()
        await py.disconnect()


async def test_ops_endpoints_and_metrics(region_a_nodes: tuple[RelayProcess, RelayProcess]) -> None:
    a1, _ = region_a_nodes
    status, body = await get(a1.url + "/healthz")
    assert status == 200 and '"node": "a1"' in body
    status, body = await get(a1.url + "/readyz")
    assert status == 200 and '"ready": true' in body
    status, body = await get(a1.url + "/config.json")
    assert status == 200 and '"region": "A"' in body
    assert json.loads(body)["dashboardUrl"] is None  # a node on its own links to no dashboard
    status, page = await get(a1.url + "/")
    assert status == 200
    assert '<p id="dashboard" hidden>' in page  # shown by app.js only when dashboardUrl is set
    for element in ('id="room"', 'id="join"', 'id="text"', 'id="send"', 'id="messages"', 'id="status"',
                    'src="/socket.io.min.js"'):
        assert element in page
    status, js = await get(a1.url + "/socket.io.min.js")
    assert status == 200 and "io" in js and len(js) > 10_000
    assert (await get(a1.url + "/nope"))[0] == 404

    c = await sio_client(a1.url)
    try:
        await c.call("join", "metrics")
        await c.call("chat", {"room": "metrics", "text": "count me"})
        status, text = await get(a1.url + "/metrics")
    finally:
        await c.disconnect()
    assert status == 200
    assert 'relay_node_info{node="a1",region="A",topic="socketio"} 1.0' in text
    assert 'relay_connected_clients{namespace="/"}' in text
    assert "relay_servicebus_ready 1.0" in text
    assert "# TYPE socketio_servicebus_envelopes_published_total counter" in text
    published = [line for line in text.splitlines() if line.startswith("socketio_servicebus_envelopes_published_total ")]
    assert published and float(published[0].split()[1]) >= 1
    assert "# TYPE socketio_servicebus_batch_size histogram" in text
    assert "socketio_servicebus_nodes " in text


async def test_auth_refuses_missing_invalid_and_expired_tokens(conn_a: str) -> None:
    secret = "test-secret-of-at-least-32-bytes-long"
    node = RelayProcess("--connection-string", conn_a, "--node-id", "auth1", "--auth-jwt-key", secret).start()
    try:
        now = int(time.time())
        good = jwt.encode({"sub": "alice", "exp": now + 60}, secret, algorithm="HS256")
        cases = {
            "none": None,
            "garbage": "not-a-jwt",
            "wrong-key": jwt.encode({"sub": "mallory", "exp": now + 60}, "another-secret-of-at-least-32-bytes", algorithm="HS256"),
            "expired": jwt.encode({"sub": "bob", "exp": now - 30}, secret, algorithm="HS256"),
            "no-exp": jwt.encode({"sub": "carol"}, secret, algorithm="HS256"),
        }
        for name, token in cases.items():
            client = socketio.AsyncClient(reconnection=False)
            reasons = collector(client, "connect_error")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(node.url, transports=["websocket"], wait_timeout=5,
                                     auth={"token": token} if token else None)
            reason = str(await asyncio.wait_for(reasons.get(), WAIT))
            assert "unauthorized" in reason, (name, reason)
            if name == "expired":
                assert "expired" in reason
            if name == "no-exp":
                assert "'exp'" in reason
        ok = await sio_client(node.url, auth={"token": good})
        got = collector(ok)
        await ok.call("join", "private")
        await ok.call("chat", {"room": "private", "text": "signed in"})
        assert (await asyncio.wait_for(got.get(), WAIT))["user"] == "alice"
        await ok.disconnect()

        js = JsClient(node.url, "--no-reconnect")
        try:
            assert (await js.aexpect("connect_error"))["message"].startswith("unauthorized:")
        finally:
            js.close()
        js = JsClient(node.url, "--token", good)
        try:
            await js.aexpect("connect")
        finally:
            js.close()
        _, metrics = await get(node.url + "/metrics")
        refused = [line for line in metrics.splitlines() if line.startswith("relay_connections_refused_unauthorized_total")]
        assert float(refused[0].split()[1]) >= 6
    finally:
        assert node.stop() == 0


async def test_history_tokens_only_for_joined_rooms_and_only_with_a_key(conn_a: str) -> None:
    """The node mints room-scoped tokens for its own sockets (with the user of their JWT); without
    SIO_HISTORY_TOKEN_KEY it starts, says so in its log and refuses to mint."""
    secret = "test-secret-of-at-least-32-bytes-long"
    key = "history-token-key-of-the-relay-process-test"
    node = RelayProcess("--connection-string", conn_a, "--node-id", "tok1", "--auth-jwt-key", secret,
                        "--history-token-ttl", "60", "--history-url", "/api/history",
                        env=clean_env(SIO_HISTORY_TOKEN_KEY=key)).start()
    bare = RelayProcess("--connection-string", conn_a, "--node-id", "tok2").start()
    try:
        good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
        client = await sio_client(node.url, auth={"token": good})
        await client.call("join", "lobby")
        ack = await client.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby"}, timeout=WAIT)
        assert ack["ok"] and ack["room"] == "chat:lobby" and ack["ns"] == "/" and ack["historyUrl"] == "/api/history"
        claims = ht.verify(ack["token"], [key])
        assert (claims.sub, claims.sid, claims.iss, claims.room) == ("alice", client.get_sid(), "tok1", "chat:lobby")
        assert claims.exp - claims.iat == 60 and abs(ack["expires"] - claims.exp) <= 1
        for data in ({"room": "chat:elsewhere"}, {"room": client.get_sid()}, {"room": 3}, None):
            refused = await client.call(HISTORY_TOKEN_EVENT, data, timeout=WAIT)
            assert refused["ok"] is False and refused["error"], data
        await client.call("leave", "lobby")
        assert (await client.call(HISTORY_TOKEN_EVENT, "chat:lobby", timeout=WAIT))["ok"] is False
        await client.disconnect()
        _, config = await get(node.url + "/config.json")
        assert '"historyTokens":true' in config.replace(" ", "")
        _, metrics = await get(node.url + "/metrics")
        assert "relay_history_tokens_issued_total 1.0" in metrics and "relay_history_tokens_refused_total 5.0" in metrics

        other = await sio_client(bare.url)
        await other.call("join", "lobby")
        ack = await other.call(HISTORY_TOKEN_EVENT, {"room": "chat:lobby"}, timeout=WAIT)
        assert ack["ok"] is False and "SIO_HISTORY_TOKEN_KEY" in ack["error"]
        await other.disconnect()
        _, config = await get(bare.url + "/config.json")
        assert '"historyTokens":false' in config.replace(" ", "")
    finally:
        assert node.stop() == 0
        assert bare.stop() == 0
    assert f"history tokens: on (relay:history_token, lifetime 60 s, key id {ht.key_id(key)})" in node.stderr()
    assert "history tokens: off (SIO_HISTORY_TOKEN_KEY not set)" in bare.stderr()
    assert key not in node.stderr() + (node.out.text() if node.out else "")


async def test_sigterm_drains_disconnects_and_deletes_the_subscription(conn_a: str) -> None:
    node = RelayProcess("--connection-string", conn_a, "--node-id", "drain1", "--drain-seconds", "8").start()
    async with admin_client(connection_string=conn_a) as admin:
        names = [s.name async for s in admin.list_subscriptions("socketio")]
        assert "node-drain1" in names
    py = await sio_client(node.url)
    disconnected = asyncio.Event()
    py.on("disconnect", lambda *a: disconnected.set())
    told = collector(py, "relay:reconnect")
    js = JsClient(node.url)
    try:
        await js.aexpect("connect")
        started = time.monotonic()
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert (await asyncio.wait_for(told.get(), WAIT))["reason"] == "draining"
        await asyncio.wait_for(disconnected.wait(), WAIT)
        assert (await js.aexpect("disconnect"))["reason"] == "transport close"  # the JS client will reconnect
        rc = await asyncio.to_thread(node.wait, 15)
        assert rc == 0, node.stderr()
        assert time.monotonic() - started < 10 * SCALE
    finally:
        js.close()
        await py.disconnect()
        node.stop(signal.SIGKILL)
    log = node.stderr()
    for step in ("connecting to Service Bus", "subscription node-drain1 ready", "listening on http://",
                 "draining", "subscription node-drain1 deleted", "stopped"):
        assert step in log, (step, log)
    async with admin_client(connection_string=conn_a) as admin:
        names = [s.name async for s in admin.list_subscriptions("socketio")]
    assert "node-drain1" not in names


async def test_on_premise_node_with_listen_send_key_and_preprovisioned_subscription(
    regions: Any, conn_b: str,
) -> None:
    port = regions.port_of("regionb")
    onprem_conn = (f"Endpoint=sb://localhost:{port};SharedAccessKeyName={ONPREM_KEY_NAME};"
                   f"SharedAccessKey={ONPREM_KEY};UseDevelopmentEmulator=true")
    onprem = RelayProcess("--connection-string", onprem_conn, "--node-id", ONPREM_NODE, "--region", "B",
                          "--subscription", f"node-{ONPREM_NODE}")
    cloud = RelayProcess("--connection-string", conn_b, "--node-id", "b1", "--region", "B")
    onprem.spawn()
    cloud.spawn()
    try:
        onprem.wait_started()
        cloud.wait_started()
        c_on, c_cloud = await sio_client(onprem.url), await sio_client(cloud.url)
        try:
            got_on, got_cloud = collector(c_on), collector(c_cloud)
            await c_on.call("join", "site")
            await c_cloud.call("join", "site")
            await c_on.call("chat", {"room": "site", "text": "from the factory floor"})
            msg = await asyncio.wait_for(got_cloud.get(), WAIT)
            assert (msg["node"], msg["region"], msg["text"]) == (ONPREM_NODE, "B", "from the factory floor")
            await c_cloud.call("chat", {"room": "site", "text": "from the cloud"})
            while (msg := await asyncio.wait_for(got_on.get(), WAIT))["node"] != "b1":
                pass
            assert msg["text"] == "from the cloud"
        finally:
            await c_on.disconnect()
            await c_cloud.disconnect()
        assert onprem.stop() == 0
        assert "subscription node-onprem1 kept (pre-provisioned)" in onprem.stderr()
        async with admin_client(connection_string=conn_b) as admin:
            names = [s.name async for s in admin.list_subscriptions("socketio")]
        assert f"node-{ONPREM_NODE}" in names  # never deleted: the node has no Manage right anyway
    finally:
        onprem.stop(signal.SIGKILL)
        cloud.stop()


@pytest.mark.parametrize(
    ("case", "make_args", "expect"),
    [
        ("unparseable", lambda c: ["--connection-string", "Endpoint=http://x;nonsense"], "Endpoint=sb://"),
        ("wrong key", lambda c: ["--connection-string", re.sub(r"SharedAccessKey=[^;]+", "SharedAccessKey=wrong", c)],
         "refused the credentials"),
        ("unknown topic", lambda c: ["--connection-string", c, "--topic", "no-such-topic"],
         "create topic 'no-such-topic' or fix --topic"),
        ("unknown subscription", lambda c: ["--connection-string", c, "--subscription", "nope"],
         "create subscription 'nope'"),
        ("no service bus", lambda c: [], "--connection-string"),
        ("bad app", lambda c: ["--connection-string", c, "--app", "no_such_module:setup"], "cannot import"),
        ("short history key", lambda c: ["--connection-string", c, "--history-token-key", "tooshort"],
         "SIO_HISTORY_TOKEN_KEY is 8 characters long"),
    ],
)
def test_misconfiguration_exits_2_with_a_one_line_reason(
    conn_a: str, case: str, make_args: Any, expect: str,
) -> None:
    node = RelayProcess(*make_args(conn_a), "--startup-timeout", "10")
    node.spawn()
    started = time.monotonic()
    rc = node.wait(30)
    err = node.stderr()
    assert rc == 2, (case, err)
    assert time.monotonic() - started < 15 * SCALE
    lines = [line for line in err.splitlines() if line.startswith("relay-node: error: ")]
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]


def test_listen_send_key_without_subscription_says_to_pass_one(regions: Any) -> None:
    port = regions.port_of("regionb")
    conn = (f"Endpoint=sb://localhost:{port};SharedAccessKeyName={ONPREM_KEY_NAME};"
            f"SharedAccessKey={ONPREM_KEY};UseDevelopmentEmulator=true")
    node = RelayProcess("--connection-string", conn)
    node.spawn()
    assert node.wait(30) == 2
    assert "no Manage right" in node.stderr() and "--subscription" in node.stderr()
