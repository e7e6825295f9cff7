"""The history cursor over the whole local stack: three senders on a1, a2 (region A) and b1
(region B) fire 300 chats each into one room without waiting for acks; a reader pages the
history with the cursor of the last event it saw, while they send and after. It must end with
all 900 exactly once, each sender's in the order it sent them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from local_stack.stack import LocalStack, StackPorts

PER_SENDER = 300
NODES = ("a1", "a2", "b1")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    """A stack of its own whose nodes do not rate-limit sockets: each sender fires 300 chats at
    once, well past the per-socket default (20/s, burst 60), which tests/relay_node/test_security.py
    holds. Here only the history's order and completeness are under test."""
    stack = LocalStack(run_dir=tmp_path_factory.mktemp("cursor-stack"), ports=StackPorts.ephemeral(),
                       node_extra_args=["--app", "relay_node.chat:setup", "--rate-limit", "0"])
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def joined_client(url: str, room: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    ack = await client.call("join", room, timeout=10)
    assert ack and ack.get("ok"), ack
    return client


async def page(session: aiohttp.ClientSession, stack: LocalStack, room: str, after: str | None) -> dict[str, Any]:
    params = {"ns": "/", "room": "chat:" + room, "limit": "37"}
    if after:
        params["after"] = after
    async with session.get(stack.functions_url + "/history/server", params=params,
                           headers={"x-functions-key": stack.function_key}) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_three_senders_and_a_paging_reader_get_all_900_once_in_each_senders_order(stack: LocalStack) -> None:
    room = f"cursor-{uuid.uuid4().hex[:8]}"
    senders = {node: await joined_client(stack.node_url(node), room) for node in NODES}
    seen: list[str] = []
    sending = True
    sent_at = time.monotonic()
    page_errors: list[str] = []

    async def fire(node: str, client: socketio.AsyncClient) -> None:
        for i in range(PER_SENDER):  # no ack awaited: as fast as the socket takes them
            await client.emit("chat", {"room": room, "text": f"{node}:{i}"})

    async def read() -> None:
        after: str | None = None
        deadline = time.monotonic() + 150
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            while len(seen) < PER_SENDER * len(NODES) or sending:
                if not sending:  # all sent: the history has a minute to catch up
                    deadline = min(deadline, sent_at + 60)
                if time.monotonic() > deadline:
                    have = set(seen)
                    missing = [f"{n}:{i}" for n in NODES for i in range(PER_SENDER) if f"{n}:{i}" not in have]
                    raise AssertionError(
                        f"the reader has {len(seen)} events ({len(have)} distinct) of {PER_SENDER * len(NODES)}; "
                        f"never got {len(missing)}, e.g. {missing[:5]}; failed pages {len(page_errors)} "
                        f"{page_errors[-3:]}")
                try:
                    body = await page(session, stack, room, after)
                except (TimeoutError, aiohttp.ClientError) as exc:  # counted, said if the test fails
                    page_errors.append(f"{type(exc).__name__}: {exc}"[:120])
                    continue
                for event in body["events"]:
                    seen.append(event["data"]["text"])
                    after = event["cursor"]  # the last cursor seen, as a resuming client does
                if not body["events"]:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(2)  # and after: nothing more may turn up
            body = await page(session, stack, room, after)
            seen.extend(e["data"]["text"] for e in body["events"])

    reader = asyncio.create_task(read())
    try:
        await asyncio.gather(*(fire(node, client) for node, client in senders.items()))
        sent_at = time.monotonic()
        sending = False
        await asyncio.wait_for(reader, 200)
    finally:
        sending = False
        reader.cancel()
        for client in senders.values():
            await client.disconnect()
    assert len(seen) == len(set(seen)) == PER_SENDER * len(NODES), (len(seen), len(set(seen)))
    for node in NODES:
        assert [t for t in seen if t.startswith(node + ":")] == [f"{node}:{i}" for i in range(PER_SENDER)]
