"""A client that reconnects to another node, in another region, gets what it missed; nobody else does.

Chat messages are persisted (persist flag → ``persist`` subscription → Table Storage in Azurite)
and served by the history API; the cursor is the time of the last message the client saw. The
API wants a history token that the relay node the client is connected to mints for a room the
socket is in (``relay:history_token``), or a function key on ``/history/server``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import uuid
from typing import Any

import aiohttp
import pytest
import socketio

from local_stack.processes import ROOT
from local_stack.stack import LocalStack
from socketio_servicebus import history_token as ht
from tests.support.history_api import HISTORY_TOKEN_EVENT, fetch_history, history_token

from .conftest import output_dir


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
        proof = await history_token(reader, "chat:" + room)  # kept: it proves since when the reader is in
        await reader.disconnect()  # the reader's node goes away, as far as it knows

        missed = [f"missed {i}" for i in range(5)]
        for text in missed:
            await sender.call("chat", {"room": room, "text": text}, timeout=10)
        await wait_for(lambda: len(sender_inbox) >= 6)

        # back, on another node in another region; ask for what came after the last message seen
        cursor = f"{int(last_seen['ts'] * 1000):013d}-0"
        back_inbox: list[dict[str, Any]] = []
        reader = await connect(stack.node_url("b1"), room, back_inbox)
        # from b1, for the room it rejoined; the earlier token moves its start back to the first join
        token = await history_token(reader, "chat:" + room, resume=proof)
        texts: list[str] = []

        async def collect() -> bool:
            events = await fetch_history(stack.functions_url, "chat:" + room, cursor, limit=2, token=token)
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


async def test_a_late_joiner_reads_none_of_the_past_unless_the_hook_grants_it(stack: LocalStack) -> None:
    """Messages persisted before a socket joined stay closed to its history token; a room whose
    ``authorize_room`` hook answers ``"read-history"`` (tests/e2e/room_hooks.py) opens them all."""
    for room, whole in ((f"late-{uuid.uuid4().hex[:6]}", False), (f"archive-{uuid.uuid4().hex[:6]}", True)):
        inbox: list[dict[str, Any]] = []
        writer = await connect(stack.node_url("a1"), room, inbox)
        texts = [f"early {i}" for i in range(3)]
        try:
            for text in texts:
                await writer.call("chat", {"room": room, "text": text}, timeout=10)
            await wait_for(lambda inbox=inbox, texts=texts: len(inbox) == len(texts))
            writer_token = await history_token(writer, "chat:" + room)
            deadline = time.monotonic() + 20  # until the persist function has stored them all
            while len(await fetch_history(stack.functions_url, "chat:" + room, "", token=writer_token)) < len(texts):
                assert time.monotonic() < deadline, "the messages were not persisted"
                await asyncio.sleep(0.3)

            late = await connect(stack.node_url("b1"), room, [])
            try:
                token = await history_token(late, "chat:" + room)
                assert ht.verify(token, [stack.history_token_key]).whole_history is whole
                events = await fetch_history(stack.functions_url, "chat:" + room, "", token=token)
                assert [e["data"]["text"] for e in events] == (texts if whole else []), room
            finally:
                await late.disconnect()
        finally:
            await writer.disconnect()


async def get(url: str, headers: dict[str, str] | None = None, **params: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(url, params=params, headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers.get("Content-Type", "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_history_api_refuses_what_the_token_does_not_cover(stack: LocalStack) -> None:
    room_a, room_b = f"auth-a-{uuid.uuid4().hex[:6]}", f"auth-b-{uuid.uuid4().hex[:6]}"
    inbox: list[dict[str, Any]] = []
    member = await connect(stack.node_url("a1"), room_a, inbox)
    outsider = await connect(stack.node_url("b1"), room_b, [])
    url = stack.functions_url + "/history"
    a, b = "chat:" + room_a, "chat:" + room_b
    try:
        await member.call("chat", {"room": room_a, "text": "secret plans"}, timeout=10)
        await wait_for(lambda: len(inbox) == 1)

        # anonymous: 401 with a JSON error, and the scheme to use
        status, doc, ctype = await get(url, ns="/", room=a)
        assert status == 401 and ctype.startswith("application/json") and "Bearer" in doc["error"]

        # the node mints only for rooms the socket is in
        ack = await outsider.call(HISTORY_TOKEN_EVENT, {"room": a}, timeout=10)
        assert ack["ok"] is False and "join it first" in ack["error"]
        ack = await outsider.call(HISTORY_TOKEN_EVENT, {"room": outsider.get_sid()}, timeout=10)
        assert ack["ok"] is False  # never its own sid room

        # a token for room B does not open room A: 403
        token_b = await history_token(outsider, b)
        status, doc, _ = await get(url, bearer(token_b), ns="/", room=a)
        assert status == 403 and "does not cover" in doc["error"]
        assert (await get(url, bearer(token_b), ns="/other", room=b))[0] == 403

        # tampered: room B's token rewritten to say room A (the signature no longer matches): 401
        header, claims, sig = token_b.split(".")
        doc_claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        forged = base64.urlsafe_b64encode(json.dumps({**doc_claims, "room": a}).encode()).rstrip(b"=").decode()
        status, doc, _ = await get(url, bearer(f"{header}.{forged}.{sig}"), ns="/", room=a)
        assert (status, doc) == (401, {"error": "bad token signature"})
        # ... or the signature of a real token for A flipped
        token_a = await history_token(member, a)
        flipped = token_a[:-4] + ("AAAA" if not token_a.endswith("AAAA") else "BBBB")
        assert (await get(url, bearer(flipped), ns="/", room=a))[0] == 401

        # expired (minted with the stack's key ten minutes ago, 5-minute lifetime): 401
        expired = ht.mint(stack.history_token_key, ns="/", room=a, now=time.time() - 600, ttl=300, since=0)
        status, doc, _ = await get(url, bearer(expired), ns="/", room=a)
        assert (status, doc) == (401, {"error": "token expired"})

        # the member's own token: 200 with the message (once the persist function has stored it)
        deadline = time.monotonic() + 20
        while True:
            status, doc, _ = await get(url, bearer(token_a), ns="/", room=a)
            assert status == 200, doc
            if doc["events"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert [e["data"]["text"] for e in doc["events"]] == ["secret plans"]
        claims_a = ht.verify(token_a, [stack.history_token_key])
        assert (claims_a.iss, claims_a.sid, claims_a.room) == ("a1", member.get_sid(), a)

        # server-side callers: function key on /history/server (any room); without it 401 from the host
        key_url = stack.functions_url + "/history/server"
        assert (await get(key_url, ns="/", room=a))[0] == 401
        assert (await get(key_url, {"x-functions-key": "wrong"}, ns="/", room=a))[0] == 401
        status, doc, _ = await get(key_url, {"x-functions-key": stack.function_key}, ns="/", room=a)
        assert status == 200 and [e["data"]["text"] for e in doc["events"]] == ["secret plans"]
        status, doc, _ = await get(key_url, ns="/", room=a, code=stack.function_key)
        assert status == 200 and len(doc["events"]) == 1
    finally:
        await member.disconnect()
        await outsider.disconnect()


@pytest.mark.slow
async def test_demo_page_replays_what_it_missed_through_a_history_token(stack: LocalStack) -> None:
    """The real page in headless Chromium: offline, messages sent meanwhile, back online → the page
    asks its node for a token and shows the missed messages from the (cross-origin) history API."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    texts = [f"while away {i}" for i in range(3)]
    spec = {"urlA": stack.node_url("a1") + "/", "urlB": stack.node_url("b1") + "/",
            "room": f"replay-{uuid.uuid4().hex[:6]}", "texts": texts, "outDir": str(output_dir()),
            "chromium": chromium}
    proc = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests" / "e2e" / "js" / "browser_replay.mjs"), json.dumps(spec), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["ok"], result
    assert result["textsInB"] == ["before", *texts], result  # each once, in order
    assert any(f"{len(texts)} missed message(s)" in line for line in result["systemInB"]), result
    assert not result["errorsInB"], result
    # the login token given in the URL is no longer in the address bar (nor the browser history)
    assert "token=" not in result["urlB"] and "polling=1" in result["urlB"], result["urlB"]
