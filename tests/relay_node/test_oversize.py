"""A chat over the message size limit is refused with an error to the sender, like the
2,000-character one, and the connection stays open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import socketio

from relay_node.oversize import refusal_frames

from .support import RelayProcess

LIMIT = 1_000_000  # the default --max-http-buffer-size


def test_refusal_answers_the_ack_and_sends_an_error_event() -> None:
    text = '421["chat",{"room":"r","text":"' + "x" * 50 + '"}]'
    ack, event = refusal_frames(text, 10)
    assert ack.startswith("431[") and event.startswith('42["error",')
    assert json.loads(ack[3:])[0] == json.loads(event[2:])[1]
    assert json.loads(ack[3:])[0]["event"] == "chat" and "limit is 10" in json.loads(ack[3:])[0]["error"]
    # a namespace and no ack id: only the error event, in that namespace
    assert refusal_frames('42/admin,["big","' + "y" * 20 + '"]', 10) == [
        '42/admin,["error",{"error":"message is 39 characters; the limit is 10","event":"big"}]']


async def test_a_1mb_chat_gets_an_error_and_the_connection_stays(
    region_a_nodes: tuple[RelayProcess, RelayProcess],
) -> None:
    a1, _ = region_a_nodes
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    chats: list[Any] = []
    client.on("error", errors.append)
    client.on("chat", chats.append)
    disconnected = asyncio.Event()
    client.on("disconnect", lambda *a: disconnected.set())
    await client.connect(a1.url, transports=["websocket"], wait_timeout=10)
    try:
        assert (await client.call("join", "big", timeout=10))["ok"]
        ack = await client.call("chat", {"room": "big", "text": "x" * LIMIT}, timeout=10)
        assert ack["event"] == "chat" and f"the limit is {LIMIT}" in ack["error"]
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.1)
        assert errors and errors[0] == ack
        assert client.connected and not disconnected.is_set()
        ok = await client.call("chat", {"room": "big", "text": "still here"}, timeout=10)
        assert ok["ok"] is True
        for _ in range(50):
            if chats:
                break
            await asyncio.sleep(0.1)
        assert [m["text"] for m in chats] == ["still here"]
    finally:
        await client.disconnect()
