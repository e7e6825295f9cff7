"""Plain-call tests: configuration, auth, metrics translation, chat validation, app loading."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.servicebus import TransportType
from socketio.exceptions import ConnectionRefusedError

from relay_node.auth import Authorizer, token_from
from relay_node.chat import ChatError, chat_text, room_name
from relay_node.config import DEFAULT_APP, ConfigError, from_args, parse_cors, parse_proxy
from relay_node.loading import LoadError, load_ref, setup_apps
from relay_node.metrics import translate_snapshot
from relay_node.sdk_options import admin_kwargs, client_kwargs, needs_tunnel
from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.servicebus.clients import emulator_address, servicebus_client, websocket_options

CONN = "Endpoint=sb://localhost:5672;SharedAccessKeyName=Root;SharedAccessKey=k;UseDevelopmentEmulator=true"
AZURE = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=k"
SECRET = "unit-test-secret-at-least-32-bytes!!"


# ---------------------------------------------------------------- config
def test_defaults_and_env() -> None:
    cfg = from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert (cfg.host, cfg.port, cfg.region, cfg.topic, cfg.receive_mode) == ("127.0.0.1", 8000, "local", "socketio",
                                                                             "receive_and_delete")
    assert cfg.apps == [DEFAULT_APP] and cfg.cors_origins is None and not cfg.auth_enabled
    assert cfg.node_id and cfg.subscription is None and cfg.transport == "amqp"


def test_flags_win_over_env() -> None:
    env = {"SERVICEBUS_CONNECTION_STRING": CONN, "RELAY_PORT": "9000", "RELAY_REGION": "eu",
           "RELAY_APPS": "a.b:setup, c.d:init", "RELAY_NODE_ID": "env-node"}
    cfg = from_args(["--port", "0", "--node-id", "n1"], env)
    assert (cfg.port, cfg.node_id, cfg.region) == (0, "n1", "eu")
    assert cfg.apps == ["a.b:setup", "c.d:init"]
    assert from_args(["--app", "x.y:z", "--app", "q:r"], env).apps == ["x.y:z", "q:r"]


def test_history_token_settings() -> None:
    cfg = from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert cfg.history_token_key is None and cfg.history_token_ttl == 300
    cfg = from_args(["--history-token-ttl", "60"], {"SERVICEBUS_CONNECTION_STRING": CONN, "SIO_HISTORY_TOKEN_KEY": SECRET})
    assert cfg.history_token_key == SECRET and cfg.history_token_ttl == 60
    assert SECRET not in repr(cfg)


def test_fully_qualified_namespace() -> None:
    cfg = from_args(["--fully-qualified-namespace", "sb://ns.servicebus.windows.net/"], {})
    assert cfg.fully_qualified_namespace == "ns.servicebus.windows.net" and cfg.connection_string is None


def test_dashboard_url_is_optional_and_checked() -> None:
    assert from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN}).dashboard_url is None  # no link by default
    env = {"SERVICEBUS_CONNECTION_STRING": CONN, "RELAY_DASHBOARD_URL": "http://127.0.0.1:7073/"}
    assert from_args([], env).dashboard_url == "http://127.0.0.1:7073/"
    with pytest.raises(ConfigError, match="--dashboard-url"):
        from_args(["--dashboard-url", "javascript:alert(1)"], env)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no Service Bus given"),
        (["--connection-string", "nonsense"], "--connection-string"),
        (["--connection-string", CONN, "--port", "x"], "--port must be an integer"),
        (["--connection-string", CONN, "--port", "70000"], "--port must be 0..65535"),
        (["--connection-string", CONN, "--receive-mode", "peek"], "--receive-mode"),
        (["--connection-string", CONN, "--transport", "carrier-pigeon"], "--transport"),
        (["--connection-string", CONN, "--app", "not a spec"], "--app"),
        (["--connection-string", CONN, "--cors-origins", "example.com"], "--cors-origins"),
        (["--connection-string", CONN, "--node-id", "has space"], "--node-id"),
        (["--connection-string", CONN, "--auth-jwt-public-key-file", "/no/such/file"], "--auth-jwt-public-key-file"),
        (["--connection-string", CONN, "--http-proxy", "nope"], "--http-proxy"),
        (["--connection-string", CONN, "--log-level", "LOUD"], "--log-level"),
        (["--connection-string", CONN, "--drain-seconds", "-1"], "--drain-seconds"),
        (["--connection-string", CONN, "--history-token-key", "short"], "SIO_HISTORY_TOKEN_KEY is 5 characters"),
        (["--connection-string", CONN, "--history-token-ttl", "5"], "--history-token-ttl must be >= 10"),
        (["--connection-string", CONN, "--history-token-ttl", "7200"], "--history-token-ttl must be <= 3600"),
    ],
)
def test_config_errors_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_args(argv, {})


def test_cors_and_proxy_and_transport() -> None:
    assert parse_cors(None) is None
    assert parse_cors("https://a.example, http://localhost:3000/") == ["https://a.example", "http://localhost:3000"]
    assert parse_cors("https://a.example,*") == ["*"]
    proxy = parse_proxy("http://user:pw@proxy.corp:3128")
    # the async SDK hands proxy_hostname to aiohttp, which needs a URL ("proxy.corp" -> InvalidURL)
    assert proxy.to_sdk() == {"proxy_hostname": "http://proxy.corp", "proxy_port": 3128, "username": "user",
                              "password": "pw"}
    assert "pw" not in repr(proxy) and proxy.display == "http://user:***@proxy.corp:3128"
    cfg = from_args(["--connection-string", AZURE, "--http-proxy", "http://proxy.corp:8080"], {})
    assert cfg.transport == "websockets"  # the SDK tunnels only AMQP over WebSockets through a proxy
    kwargs = client_kwargs(cfg)
    assert kwargs["transport_type"] == TransportType.AmqpOverWebsocket
    assert kwargs["http_proxy"] == {"proxy_hostname": "http://proxy.corp", "proxy_port": 8080}
    assert not needs_tunnel(cfg)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("proxy.corp:3128", "add the scheme, e.g. http://proxy.corp:3128"),
        ("user:s3cret@proxy.corp:3128", "add the scheme"),
        ("https://proxy.corp:3128", "use http://, not https://"),
        ("socks5://proxy.corp:1080", "use http://"),
        ("http://proxy.corp", "add the proxy's port, e.g. http://proxy.corp:3128"),
        ("http://proxy.corp:99999", "the port must be 1-65535"),
        ("http://proxy.corp:31x8", "the port must be 1-65535"),
        ("http://:3128", "no host"),
        ("http://user:s3cret@proxy.corp:3128/path", "no path or query"),
    ],
)
def test_http_proxy_is_validated_and_never_echoes_the_password(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_args(["--connection-string", CONN, "--http-proxy", value], {})
    assert message in str(err.value) and str(err.value).startswith("--http-proxy")
    assert "s3cret" not in str(err.value)


def test_bad_http_proxy_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from relay_node.cli import main

    assert main(["--connection-string", CONN, "--http-proxy", "https://u:s3cret@proxy.corp:3128"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("relay-node: error: --http-proxy") and "s3cret" not in err


def test_proxy_credentials_are_percent_decoded_and_reencoded() -> None:
    proxy = parse_proxy("http://dom%5Cuser:p%40ss:w@[::1]:3128")
    assert (proxy.hostname, proxy.port, proxy.username, proxy.password) == ("::1", 3128, "dom\\user", "p@ss:w")
    assert proxy.to_sdk()["proxy_hostname"] == "http://[::1]"
    cfg = from_args(["--connection-string", AZURE, "--http-proxy", "http://dom%5Cuser:p%40ss:w@[::1]:3128"], {})
    url = "http://dom%5Cuser:p%40ss%3Aw@[::1]:3128"
    assert admin_kwargs(cfg) == {"proxies": {"https": url, "http": url}}


async def test_websocket_settings_reach_the_sdk_for_azure_and_the_emulator() -> None:
    """What the SDK is actually configured with (no connection is opened)."""
    # emulator, no proxy: custom_endpoint_address names the emulator's port (else the SDK dials 443)
    cfg = from_args(["--connection-string", CONN.replace("5672", "40123"), "--transport", "websockets"], {})
    async with servicebus_client(connection_string=cfg.connection_string, **client_kwargs(cfg)) as client:
        conf = client._config
        assert conf.transport_type == TransportType.AmqpOverWebsocket
        assert conf.custom_endpoint_address == "sb://localhost:40123/$servicebus/websocket"
        assert conf.connection_port == 40123
    # Azure through a proxy: port 443, the proxy as a URL, no custom endpoint
    cfg = from_args(["--connection-string", AZURE, "--http-proxy", "http://u:pw@proxy.corp:3128"], {})
    async with servicebus_client(connection_string=cfg.connection_string, **client_kwargs(cfg)) as client:
        conf = client._config
        assert conf.transport_type == TransportType.AmqpOverWebsocket and conf.connection_port == 443
        assert conf.custom_endpoint_address is None
        assert conf.http_proxy == {"proxy_hostname": "http://proxy.corp", "proxy_port": 3128, "username": "u",
                                   "password": "pw"}
    # a caller of the library helper who passes a bare host still gets a URL
    assert websocket_options(AZURE, {"http_proxy": {"proxy_hostname": "10.0.0.1", "proxy_port": 8080}}) == {
        "http_proxy": {"proxy_hostname": "http://10.0.0.1", "proxy_port": 8080}}
    # an explicit custom endpoint is kept
    kept = {"transport_type": TransportType.AmqpOverWebsocket, "custom_endpoint_address": "sb://gw:9443"}
    assert websocket_options(CONN, kept) == kept


def test_emulator_behind_a_proxy_goes_through_the_connect_tunnel() -> None:
    cfg = from_args(["--connection-string", CONN, "--http-proxy", "http://127.0.0.1:3128"], {})
    assert needs_tunnel(cfg) and emulator_address(CONN) == ("localhost", 5672)
    cfg.custom_endpoint_address = "sb://127.0.0.1:40999"  # what RelayNode.start sets once the tunnel listens
    assert client_kwargs(cfg) == {"transport_type": TransportType.AmqpOverWebsocket,
                                  "custom_endpoint_address": "sb://127.0.0.1:40999"}
    assert emulator_address(CONN.replace("localhost:5672", "127.0.0.1")) == ("127.0.0.1", 5672)


# ---------------------------------------------------------------- auth
async def test_hs256_and_expiry() -> None:
    auth = Authorizer(jwt_key=SECRET)
    good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert (await auth({}, {"token": good}))["sub"] == "alice"
    assert (await auth({"HTTP_AUTHORIZATION": f"Bearer {good}"}, None))["sub"] == "alice"
    expired = jwt.encode({"sub": "a", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    for bad, why in ((None, "token is required"), ({"token": "x.y.z"}, "invalid token"),
                     ({"token": expired}, "token expired"), ({"token": 42}, "token is required")):
        with pytest.raises(ConnectionRefusedError, match=why):
            await auth({}, bad)
    assert (auth.accepted, auth.refused) == (2, 4)


async def test_rs256_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    cfg = from_args(["--connection-string", CONN, "--auth-jwt-public-key-file", str(tmp_path / "pub.pem"),
                     "--auth-jwt-audience", "chat"], {})
    auth = Authorizer.from_config(cfg)
    token = jwt.encode({"sub": "bob", "aud": "chat", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    assert (await auth({}, {"token": token}))["sub"] == "bob"
    wrong_aud = jwt.encode({"sub": "bob", "aud": "other", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    with pytest.raises(ConnectionRefusedError, match="unauthorized"):
        await auth({}, {"token": wrong_aud})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "bob", "aud": "chat", "exp": int(time.time()) + 60}, other, algorithm="RS256")
    with pytest.raises(ConnectionRefusedError, match="invalid token"):
        await auth({}, {"token": forged})


async def callback_allow_alice(environ: dict[str, Any], auth: Any) -> bool | dict[str, Any]:
    await asyncio.sleep(0)
    if isinstance(auth, dict) and auth.get("user") == "alice":
        return {"name": "Alice"}
    if isinstance(auth, dict) and auth.get("user") == "boom":
        raise RuntimeError("db down")
    return False


async def test_callback() -> None:
    auth = Authorizer(callback=load_ref(f"{__name__}:callback_allow_alice", "--auth-callback"))
    assert await auth({}, {"user": "alice"}) == {"name": "Alice"}
    with pytest.raises(ConnectionRefusedError, match="rejected by the authorization callback"):
        await auth({}, {"user": "eve"})
    with pytest.raises(ConnectionRefusedError, match="callback failed"):
        await auth({}, {"user": "boom"})
    assert await Authorizer()({}, None) == {}  # auth off: everyone in
    assert token_from({}, {"token": None}) is None


# ---------------------------------------------------------------- apps
class _Sio:
    def __init__(self) -> None:
        self.calls: list[str] = []


def sync_setup(sio: _Sio) -> None:
    sio.calls.append("sync")


async def async_setup(sio: _Sio) -> None:
    sio.calls.append("async")


async def test_setup_apps_sync_and_async() -> None:
    sio = _Sio()
    await setup_apps(sio, [f"{__name__}:sync_setup", f"{__name__}:async_setup"])
    assert sio.calls == ["sync", "async"]
    with pytest.raises(LoadError, match="has no 'missing'"):
        load_ref(f"{__name__}:missing", "--app")
    with pytest.raises(LoadError, match="cannot import"):
        load_ref("no_such_pkg.mod:setup", "--app")


# ---------------------------------------------------------------- chat validation
def test_room_and_text_rules() -> None:
    assert room_name("lobby") == "lobby" and room_name({"room": "a.b-c_1"}) == "a.b-c_1"
    for bad in ("", " lobby", "-x", "a" * 49, "a/b", "chat:x", None, 3, ["x"]):
        with pytest.raises(ChatError):
            room_name(bad)
    assert chat_text("  hi ") == "hi"
    for bad in ("", "   ", "x" * 2001, None, {"t": 1}):
        with pytest.raises(ChatError):
            chat_text(bad)


# ---------------------------------------------------------------- metrics
def test_snapshot_translation() -> None:
    m = ManagerMetrics()
    m.observe_batch(3)
    m.observe_lag(0.25)
    m.buffer_depth = 7
    families = {f.name: f for f in translate_snapshot({**m.snapshot(), "weird key!": 1, "text": "skip", "flag": True})}
    assert families["socketio_servicebus_envelopes_published"].type == "counter"
    assert families["socketio_servicebus_buffer_depth"].type == "gauge"
    assert families["socketio_servicebus_buffer_depth"].samples[0].value == 7
    assert families["socketio_servicebus_batch_size"].type == "histogram"
    assert families["socketio_servicebus_lag_seconds"].type == "summary"
    assert "socketio_servicebus_weird_key" in families
    assert "socketio_servicebus_text" not in families
    assert families["socketio_servicebus_flag"].samples[0].value == 1
    assert not any(n.startswith("socketio_servicebus_batch_size_le") for n in families)


def test_failure_counters_are_exported() -> None:
    m = ManagerMetrics()
    m.misaddressed_dropped = 2
    m.send_dropped = 3
    m.task_failures = 1
    families = {f.name: f for f in translate_snapshot(m.snapshot())}
    for name, value in (("misaddressed_dropped", 2), ("send_dropped", 3), ("task_failures", 1),
                        ("requests_refused", 0), ("close_dropped", 0), ("sdk_probe_failures", 0),
                        ("receiver_stalls", 0), ("subscription_check_errors", 0)):
        family = families[f"socketio_servicebus_{name}"]
        assert family.type == "counter" and family.samples[0].value == value, name


# ---------------------------------------------------------------- connect guard
async def test_connect_guard_runs_before_every_apps_connect_handler() -> None:
    import socketio

    from relay_node.guard import install_connect_guard

    sio = socketio.AsyncServer(async_mode="asgi")
    calls: list[tuple[str, ...]] = []

    @sio.on("connect", namespace="/new")
    async def new_style(sid: str, environ: dict[str, Any], auth: Any) -> None:
        calls.append(("new", sid, str(auth)))

    @sio.on("connect", namespace="/legacy")
    def legacy(sid: str, environ: dict[str, Any]) -> bool:
        calls.append(("legacy", sid))
        return False

    class Chat(socketio.AsyncNamespace):  # type: ignore[misc]
        async def on_connect(self, sid: str, environ: dict[str, Any]) -> None:
            calls.append(("class", sid))

    sio.register_namespace(Chat("/cls"))

    async def guard(sid: str, environ: dict[str, Any], auth: Any) -> None:
        calls.append(("guard", sid))
        if environ.get("refuse"):
            raise socketio.exceptions.ConnectionRefusedError("no")

    assert install_connect_guard(sio, guard) == ["/", "/cls", "/legacy", "/new"]
    assert await sio.handlers["/new"]["connect"]("s1", {}, {"token": 1}) is None
    assert await sio.handlers["/legacy"]["connect"]("s2", {}, None) is False
    assert await sio.handlers["/cls"]["connect"]("s3", {}, None) is None
    assert await sio.handlers["/"]["connect"]("s4", {}, None) is None
    with pytest.raises(socketio.exceptions.ConnectionRefusedError):
        await sio.handlers["/new"]["connect"]("s5", {"refuse": True}, None)
    assert calls == [("guard", "s1"), ("new", "s1", "{'token': 1}"), ("guard", "s2"), ("legacy", "s2"),
                     ("guard", "s3"), ("class", "s3"), ("guard", "s4"), ("guard", "s5")]
