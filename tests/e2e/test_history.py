"""A client that reconnects to another node, in another region, gets what it missed.

Chat messages are persisted (persist flag → ``persist`` subscription → Table Storage in Azurite)
and served by the history API; the cursor is the time of the last message the client saw.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import socketio

from local_stack.stack import LocalStack
from tests.support.history_api import fetch_history


async def connect(url: str, room: str, inbox: list[dict[str, Any]]) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    client.on("chat", lambda m: inbox.append(m))
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    ack = await client.call("join", room, timeout=10)
    assert ack and ack.get("ok"), ack
    return client


async def wait_for(predicate: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)




async def test_reconnect_to_other_region_recovers_missed_messages(stack: LocalStack) -> None:
    room = f"hist-{uuid.uuid4().hex[:8]}"
    sender_inbox: list[dict[str, Any]] = []
    reader_inbox: list[dict[str, Any]] = []
    sender = await connect(stack.node_url("a1"), room, sender_inbox)
    reader = await connect(stack.node_url("a2"), room, reader_inbox)
    try:
        await sender.call("chat", {"room": room, "text": "before"}, timeout=10)
        await wait_for(lambda: [m["text"] for m in reader_inbox] == ["before"])
        last_seen = reader_inbox[-1]
        await reader.disconnect()  # the reader's node goes away, as far as it knows

        missed = [f"missed {i}" for i in range(5)]
        for text in missed:
            await sender.call("chat", {"room": room, "text": text}, timeout=10)
        await wait_for(lambda: len(sender_inbox) >= 6)

        # back, on another node in another region; ask for what came after the last message seen
        cursor = f"{int(last_seen['ts'] * 1000):013d}-0"
        back_inbox: list[dict[str, Any]] = []
        reader = await connect(stack.node_url("b1"), room, back_inbox)
        texts: list[str] = []

        async def collect() -> bool:
            events = await fetch_history(stack.functions_url, "chat:" + room, cursor, limit=2)
            texts[:] = [e["data"]["text"] for e in events if e["data"]["text"] != "before"]
            return texts == missed

        deadline = time.monotonic() + 20
        while not await collect():
            assert time.monotonic() < deadline, f"history returned {texts}"
            await asyncio.sleep(0.5)
        assert texts == missed  # all of them, in order, none twice
    finally:
        await sender.disconnect()
        await reader.disconnect()
