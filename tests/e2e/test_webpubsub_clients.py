"""Web PubSub's own clients against the local stack: the Function App's ``/api/negotiate`` hands
out the URL, the local Web PubSub service (``local_stack/webpubsub``) serves it, and chats sent
through relay node ``a1`` (westeurope) and the on-premise node ``factory1`` (northeurope) arrive
through Service Bus, the ``webpubsub`` function and the service.

* the browser: ``@azure/web-pubsub-client`` from node_modules (bundled by esbuild), in headless
  Chromium; every WebSocket frame the page receives is recorded; screenshots in test-output/e2e/;
* Python: ``azure-messaging-webpubsubclient``.

Both check: the exact frames/messages; a chat in a room the client did not join never arrives; a
binary emit (``blob``, tests/e2e/blob_app.py) is skipped by the Web PubSub edge and logged, as
shared/edge/webpubsub.py documents; a client whose token has no join role for the group is refused.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio
import socketio
from aiohttp import web
from azure.messaging.webpubsubclient.aio import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType, SendMessageError

from local_stack.processes import ROOT
from local_stack.stack import LocalStack

from .conftest import output_dir

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

JS = ROOT / "tests" / "e2e" / "js"
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"
HUB = "socketio"
QUIET = 3.0  # seconds without further frames after the expected ones
BINARY_SKIPPED = "is a binary emit, not pushed"


def negotiate_url(stack: LocalStack, **params: str) -> str:
    return f"{stack.functions_url}/negotiate?" + urlencode({**params, "code": stack.function_key})


async def sio_client(url: str, *rooms: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    for room in rooms:
        ack = await client.call("join", room, timeout=10)
        assert ack and ack.get("ok"), ack
    return client


async def emit_the_scenario(stack: LocalStack, room: str, other_room: str) -> list[str]:
    """Through a1: a binary emit to ``room``, a chat to ``other_room``, a chat to ``room``; then a
    chat to ``room`` through factory1. Returns the texts sent to ``room``."""
    a1 = await sio_client(stack.node_url("a1"), room, other_room)
    factory = await sio_client(stack.node_url("factory1"), room)
    try:
        assert (await a1.call("blob", {"room": room, "payload": b"\x00\x01binary"}, timeout=10))["ok"]
        assert (await a1.call("chat", {"room": other_room, "text": "not for you"}, timeout=10))["ok"]
        texts = [f"from a1 {uuid.uuid4().hex[:6]}", f"from factory1 {uuid.uuid4().hex[:6]}"]
        assert (await a1.call("chat", {"room": room, "text": texts[0]}, timeout=10))["ok"]
        assert (await factory.call("chat", {"room": room, "text": texts[1]}, timeout=10))["ok"]
        return texts
    finally:
        await a1.disconnect()
        await factory.disconnect()


def check_chats(messages: list[dict[str, Any]], group: str, room: str, texts: list[str]) -> None:
    """``messages``: ``{"group", "dataType", "data"}`` per group message, in arrival order."""
    assert all(m["group"] == group and m["dataType"] == "json" for m in messages), messages
    by_text = {m["data"]["data"]["text"]: m["data"] for m in messages}
    assert sorted(by_text) == sorted(texts), messages  # once each; nothing from other rooms, no blob
    for text, node, region in ((texts[0], "a1", "westeurope"), (texts[1], "factory1", "northeurope")):
        frame = by_text[text]
        assert frame["event"] == "chat"
        chat = frame["data"]
        assert set(chat) >= {"room", "text", "sid", "node", "region", "id", "ts"}, chat
        assert (chat["room"], chat["node"], chat["region"]) == (room, node, region)


def binary_skips_logged(stack: LocalStack) -> int:
    return sum(BINARY_SKIPPED in line for line in stack.processes["functions"].tail)


@pytest.fixture(scope="module")
def page_dir() -> Path:
    """webpubsub_page.html and the official client bundled by esbuild (in test-output/, not committed)."""
    assert ESBUILD.exists(), "node_modules/.bin/esbuild is missing: run `npm ci` (make test does it)"
    out = output_dir() / "webpubsub-page"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ESBUILD), str(JS / "webpubsub_client_entry.mjs"), "--bundle", "--format=iife",
                    "--global-name=AzureWebPubSub", "--platform=browser", "--log-level=warning",
                    f"--outfile={out / 'webpubsub-client.js'}"], cwd=ROOT, check=True, timeout=60)
    shutil.copy(JS / "webpubsub_page.html", out / "index.html")
    return out


@pytest_asyncio.fixture(loop_scope="module")  # the test's loop serves the page
async def page_server(page_dir: Path) -> AsyncIterator[str]:
    app = web.Application()

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(page_dir / "index.html")

    async def script(_: web.Request) -> web.FileResponse:
        return web.FileResponse(page_dir / "webpubsub-client.js")

    app.router.add_get("/", index)
    app.router.add_get("/webpubsub-client.js", script)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def test_browser_client_receives_chats_from_a1_and_factory1(stack: LocalStack, page_server: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (apt-get install chromium)"
    assert stack.dashboard is not None
    name = f"factory1-wps-{uuid.uuid4().hex[:6]}"  # factory1 chats here too: a room of its zone
    room, group = name, f"chat:{name}"
    page_url = page_server + "?" + urlencode({
        "negotiate": negotiate_url(stack, rooms=group, userId="browser"),
        "negotiateNoRole": negotiate_url(stack, userId="nobody"),
        "group": group,
    })
    spec = {"pageUrl": page_url, "dashboardUrl": stack.dashboard.url, "hub": HUB, "group": group, "expect": 2,
            "quietMs": int(QUIET * 1000), "outDir": str(output_dir()), "chromium": chromium}
    skipped_before = binary_skips_logged(stack)
    proc = await asyncio.create_subprocess_exec("node", str(JS / "webpubsub_browser.mjs"), json.dumps(spec), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert first.get("ready"), f"failed at {first.get('step')}: {first.get('error')}"
        texts = await emit_the_scenario(stack, room, f"other-{name}")
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    (output_dir() / "webpubsub-browser-result.json").write_text(json.dumps(result, indent=2))  # noqa: ASYNC240
    assert result["ok"], f"failed at {result.get('step')}: {result.get('error')}"
    # the exact frames on the wire (json.reliable.webpubsub.azure.v1, the client's default)
    frames = [json.loads(f["payload"]) for f in result["frames"]]
    messages = [f for f in frames if f["type"] == "message"]
    assert [set(f) for f in messages] == [{"type", "from", "group", "dataType", "data", "sequenceId"}] * 2, messages
    assert [f["sequenceId"] for f in messages] == [1, 2]
    assert all(f["from"] == "group" for f in messages)
    check_chats(messages, group, room, texts)
    assert result["received"] == [{k: m[k] for k in ("from", "group", "dataType", "data")} for m in messages]
    connected = [f for f in frames if f["type"] == "system" and f["event"] == "connected"]
    assert connected and connected[0]["userId"] == "browser" and connected[0]["reconnectionToken"]
    # the client without the join role is refused with the service's error
    refused = result["refused"]
    assert refused["refused"] and refused["errorDetail"]["name"] == "Forbidden", refused
    assert binary_skips_logged(stack) > skipped_before
    row = result["dashboardRow"]
    assert row["connections"] >= 1 and f"{group} (1)" in row["groups"], row
    sizes = [Path(shot).stat().st_size for shot in result["screenshots"]]  # noqa: ASYNC240
    assert len(sizes) == 2 and min(sizes) > 1000


async def test_python_client_receives_chats_from_a1_and_factory1(stack: LocalStack) -> None:
    name = f"factory1-wpspy-{uuid.uuid4().hex[:6]}"  # a room of factory1's zone
    room, group = name, f"chat:{name}"

    def provider(url: str) -> WebPubSubClientCredential:
        async def get() -> str:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                return str((await resp.json())["url"])

        return WebPubSubClientCredential(get)

    received: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_group(e: Any) -> None:
        received.append({"group": e.group, "dataType": e.data_type, "data": e.data})
        if len(received) >= 2:
            arrived.set()

    async def on_server(e: Any) -> None:
        received.append({"server": e.data})

    skipped_before = binary_skips_logged(stack)
    client = WebPubSubClient(provider(negotiate_url(stack, rooms=group, userId="py")))
    no_role = WebPubSubClient(provider(negotiate_url(stack, userId="py-nobody")), message_retry_total=0)
    async with client, no_role:
        await client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        await client.subscribe(CallbackType.SERVER_MESSAGE, on_server)
        await client.join_group(group)
        with pytest.raises(SendMessageError) as info:
            await no_role.join_group(group)
        assert info.value.error_detail is not None and info.value.error_detail.name == "Forbidden"
        texts = await emit_the_scenario(stack, room, f"other-{name}")
        await asyncio.wait_for(arrived.wait(), 40)
        await asyncio.sleep(QUIET)
    check_chats(received, group, room, texts)
    assert len(received) == 2
    assert binary_skips_logged(stack) > skipped_before
