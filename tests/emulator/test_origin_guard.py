"""The emulator keeps web pages out (Host / Origin, on HTTP and WebSocket) and makes up its own key.

A page in the developer's browser can reach 127.0.0.1 by DNS rebinding (``Host: evil.example``)
or by opening a WebSocket / fetch from the page (``Origin: http://evil.example``); both are
refused with 403 before any handler. Without ``SharedAccessPolicies`` the root key is random and
printed, never the public ``SAS_KEY_VALUE``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusAuthenticationError

from servicebus_emulator.origin_guard import allowed_hosts, refusal
from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess

WS_PATH = "/$servicebus/websocket"
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "AMQPWSB10"}


@pytest.fixture(scope="module")
def bare_emulator() -> Iterator[EmulatorProcess]:
    """No --config at all: the built-in namespace, whose key nobody named."""
    proc = EmulatorProcess()
    proc.start()
    yield proc
    proc.stop()


def test_refusal_rules() -> None:
    allowed = allowed_hosts("127.0.0.1", "localhost")
    for host in ("localhost:5672", "127.0.0.1:5672", "[::1]:5672", "LOCALHOST", "127.0.0.2:1", None):
        assert refusal(host, None, allowed=allowed, port=5672) is None, host
    for host in ("evil.example", "evil.example:5672", "10.0.0.8:5672", "localhost.evil.example"):
        assert "is not this emulator" in str(refusal(host, None, allowed=allowed, port=5672)), host
    # the sync SDK's transport (websocket-client) sends the emulator's own address as Origin
    assert refusal("localhost:5672", "http://localhost:5672", allowed=allowed, port=5672) is None
    for origin in ("http://evil.example", "null", "http://localhost:3000", "https://127.0.0.1", "file://"):
        assert "browser pages are refused" in str(refusal("localhost:5672", origin, allowed=allowed, port=5672)), origin
    # bound to every interface: only names given with --allow-host join localhost
    assert refusal("sb-emulator:5672", None, allowed=allowed_hosts("0.0.0.0", "localhost"), port=5672)
    assert refusal("sb-emulator:5672", None, allowed=allowed_hosts("0.0.0.0", "sb-emulator"), port=5672) is None


async def _status(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession(skip_auto_headers=["Host"] if "Host" in headers else ()) as http, \
            http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_foreign_host_and_browser_origin_are_refused_on_http_and_websocket(
        bare_emulator: EmulatorProcess) -> None:
    port = next(iter(bare_emulator.connection_strings.values())).split(":")[2].split(";")[0]
    base = f"http://127.0.0.1:{port}"
    assert (await _status(base + "/health", {}))[0] == 200
    for path, extra in (("/health", {}), (WS_PATH, UPGRADE)):
        for bad in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
            status, text = await _status(base + path, {**extra, **bad})
            assert status == 403, (path, bad, status, text)
            assert ("browser pages" if "Origin" in bad else "not this emulator") in text
    # the same WebSocket handshake from a local client (no Origin, Host localhost) is accepted
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://localhost:{port}{WS_PATH}", protocols=("AMQPWSB10",))
        assert ws.protocol == "AMQPWSB10"
        await ws.close()


async def test_without_a_configured_key_the_root_key_is_random_and_printed(bare_emulator: EmulatorProcess) -> None:
    conn = next(iter(bare_emulator.connection_strings.values()))
    key = re.search(r"SharedAccessKey=([^;]+)", conn).group(1)  # type: ignore[union-attr]
    assert key != "SAS_KEY_VALUE" and len(key) >= 40
    assert any("random key made up" in line for line in bare_emulator.output)
    async with servicebus_client(connection_string=conn) as client, client.get_topic_sender("socketio") as sender:
        await sender.send_messages(ServiceBusMessage("with the printed key"))
    public = conn.replace(key, "SAS_KEY_VALUE")
    async with servicebus_client(connection_string=public, retry_total=0) as client:
        with pytest.raises(ServiceBusAuthenticationError):
            async with client.get_topic_sender("socketio") as sender:
                await sender.send_messages(ServiceBusMessage("with the public key"))


def test_the_made_up_key_survives_a_restart_with_a_data_dir(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        proc = EmulatorProcess(extra_args=["--data-dir", str(tmp_path / "data")])
        proc.start()
        try:
            keys.append(re.search(r"SharedAccessKey=([^;]+)", proc.connection_string()).group(1))  # type: ignore[union-attr]
        finally:
            proc.stop()
    assert keys[0] == keys[1] and keys[0] != "SAS_KEY_VALUE"
    assert (tmp_path / "data" / "generated-key").stat().st_mode & 0o777 == 0o600
    other = EmulatorProcess()  # another emulator without a data dir makes up another key
    other.start()
    try:
        assert keys[0] not in other.connection_string()
    finally:
        other.stop()
