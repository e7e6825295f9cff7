"""End to end: the local runner (a real subprocess) running function_app against the Service Bus
emulator (one namespace per region, subscriptions from topology.json), Azurite Table Storage and a
the local Web PubSub service (local_stack/webpubsub).

Regions: ``eu``, ``us``, ``asia`` form a full mesh; ``edge`` is a spoke reachable only through
``eu`` (``"neighbors": ["eu"]``). Every region has a ``test-all`` subscription (``1=1``) through
which the tests count the copies that land in each region's topic.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue

from socketio_servicebus import history_token
from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind
from tests.support.emulator_process import EmulatorProcess
from tests.support.stack_config import region_settings, stack_config
from tests.support.webpubsub import FrameClient

from .conftest import FUNCTION_KEY, Runner
from .helpers import emit_envelope

REGIONS = ["eu", "us", "asia", "edge"]
NEIGHBORS = {"edge": ["eu"]}
TOPIC = "socketio"
HISTORY_KEY = "history-token-key-of-the-functions-e2e-stack"
QUIET = 2.0  # seconds of silence after which "no more copies arrive" is asserted


class Stack:
    def __init__(self, emulator: EmulatorProcess, runner: Runner, table: str) -> None:
        self.emulator = emulator
        self.runner = runner
        self.table = table

    def conn(self, region: str) -> str:
        return self.emulator.connection_string(region)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, azurite, webpubsub) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    cfg = tmp_path_factory.mktemp("stack") / "Config.json"
    cfg.write_text(json.dumps(stack_config(REGIONS, extra_subscriptions={"test-all": "1=1"})))
    emulator = EmulatorProcess(cfg)
    emulator.start()
    table = "e2e" + uuid.uuid4().hex[:10]
    env = region_settings({r: emulator.connection_string(r) for r in REGIONS}, home="eu", neighbors=NEIGHBORS)
    env.update({
        "TablesConnection": azurite.connection_string,
        "SIO_HISTORY_TABLE": table,
        "WebPubSubConnection": webpubsub.connection_string,
        "SIO_HOOKS_MODULE": "tests.functions.e2e_hooks",
        "SIO_HISTORY_TOKEN_KEY": HISTORY_KEY,
    })
    runner = Runner(env)
    try:
        runner.start()
        yield Stack(emulator, runner, table)
    finally:
        runner.stop()
        emulator.stop()


async def publish(conn: str, batch: Batch, message_id: str, *, props: dict[str, Any] | None = None,
                  body: bytes | None = None) -> None:
    async with servicebus_client(connection_string=conn) as client, client.get_topic_sender(TOPIC) as sender:
        await sender.send_messages(ServiceBusMessage(
            body if body is not None else batch.encode(), message_id=message_id,
            application_properties=props if props is not None else batch.application_properties()))


async def collect(stack: Stack, message_id: str, expect: dict[str, int], wait: float = 20.0) -> dict[str, list[Any]]:
    """Drain ``test-all`` of every region until ``expect`` copies of ``message_id`` arrived, then
    keep listening for QUIET seconds so extra copies would be seen."""
    got: dict[str, list[Any]] = {r: [] for r in REGIONS}

    async def drain(region: str, stop: asyncio.Event) -> None:
        async with servicebus_client(connection_string=stack.conn(region)) as client, client.get_subscription_receiver(
                TOPIC, "test-all", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as rx:
            while not stop.is_set():
                for m in await rx.receive_messages(max_message_count=50, max_wait_time=0.5):
                    if m.message_id == message_id:
                        got[region].append(m)

    stop = asyncio.Event()
    tasks = [asyncio.create_task(drain(r, stop)) for r in REGIONS]
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            if all(len(got[r]) >= n for r, n in expect.items()):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(QUIET)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return got


def counts(got: dict[str, list[Any]]) -> dict[str, int]:
    return {r: len(v) for r, v in got.items()}


def batch_of(msg: Any) -> Batch:
    return Batch.decode(b"".join(msg.body))


@pytest.mark.parametrize("origin", ["us", "edge", "eu"])
async def test_each_region_gets_exactly_one_copy(stack: Stack, origin: str) -> None:
    envs = tuple(emit_envelope(origin, data=i, room="r") for i in range(3))
    mid = f"mesh-{origin}-{uuid.uuid4().hex[:8]}"
    await publish(stack.conn(origin), Batch(envs, 0, (origin,)), mid)
    got = await collect(stack, mid, {r: 1 for r in REGIONS})
    assert counts(got) == {r: 1 for r in REGIONS}, stack.runner.output[-30:]
    for region in REGIONS:
        (msg,) = got[region]
        batch = batch_of(msg)
        assert [e.id for e in batch.envelopes] == [e.id for e in envs]  # batches stay batches
        assert batch.visited[0] == origin and batch.visited[-1] == region
        assert batch.hops == len(batch.visited) - 1
    # spokes only via their hub
    if origin != "edge":
        assert batch_of(got["edge"][0]).visited[-2:] == ("eu", "edge")
    else:
        assert batch_of(got["us"][0]).visited == ("edge", "eu", "us")


@pytest.mark.parametrize(
    ("origin", "target", "path"),
    [("us", "edge", ["us", "eu", "edge"]), ("edge", "asia", ["edge", "eu", "asia"]), ("us", "asia", ["us", "asia"]),
     ("eu", "eu", ["eu"])],
)
async def test_a_reply_reaches_its_target_region_and_no_other(stack: Stack, origin: str, target: str,
                                                               path: list[str]) -> None:
    reply = Envelope(kind=Kind.RESPONSE, origin_node=f"{origin}-1", origin_region=origin, target_node=f"{target}-1",
                     target_region=target, body={"rid": uuid.uuid4().hex, "data": [{"sid": "s1"}]})
    mid = f"reply-{origin}-{target}-{uuid.uuid4().hex[:8]}"
    await publish(stack.conn(origin), Batch((reply,), 0, (origin,)), mid)
    got = await collect(stack, mid, {r: 1 for r in path})
    assert counts(got) == {r: int(r in path) for r in REGIONS}, stack.runner.output[-30:]
    last = batch_of(got[target][0])
    assert last.visited == tuple(path) and last.hops == len(path) - 1 and last.envelopes == (reply,)
    # one forward per hop, each logged by the router of the region it left
    forwards = stack.runner.lines(rf"router\[\w+\] message {mid} ")
    assert len(forwards) == len(path) - 1, forwards
    assert all(f"to node {target}-1 in {target}" in line for line in forwards)


async def test_malformed_message_is_dead_lettered_by_service_bus(stack: Stack) -> None:
    mid = f"bad-{uuid.uuid4().hex[:8]}"
    await publish(stack.conn("asia"), None, mid, body=b"{this is not a batch", props={"sio_kind": "emit"})  # type: ignore[arg-type]
    async with servicebus_client(connection_string=stack.conn("asia")) as client, client.get_subscription_receiver(
            TOPIC, "router", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as dlq:
        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = [m for m in await dlq.receive_messages(max_message_count=10, max_wait_time=1) if m.message_id == mid]
    assert found, stack.runner.output[-20:]
    assert found[0].dead_letter_reason == "MaxDeliveryCountExceeded"
    failures = stack.runner.lines(rf"router_asia: message {mid} failed .*Unroutable: malformed:not-json")
    assert len(failures) == 10  # topology.json router maxDeliveryCount


async def http(stack: Stack, method: str, path: str, *, key: str | None = FUNCTION_KEY, **kwargs: Any) -> tuple[int, Any]:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["x-functions-key"] = key
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{stack.runner.base}/{path}", headers=headers, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def test_emit_api_validation_and_auth(stack: Stack) -> None:
    assert (await http(stack, "POST", "emit", key=None, json={"event": "chat"}))[0] == 401
    assert (await http(stack, "POST", "emit", key="wrong", json={"event": "chat"}))[0] == 401
    status, doc = await http(stack, "POST", "emit", data=b"{oops", headers={"content-type": "application/json"})
    assert status == 400 and "not valid JSON" in doc["error"]
    status, doc = await http(stack, "POST", "emit", json={"event": ["chat"], "room": 3})
    assert status == 400 and "'event' must be a non-empty string" in doc["error"] and "'room'" in doc["error"]
    status, doc = await http(stack, "POST", "emit", json={"event": "chat", "data": "x" * 300_000})
    assert status == 400 and "limit is 262144 bytes" in doc["error"]
    status, _ = await http(stack, "GET", "emit")
    assert status == 405
    # ?code= works like the header
    status, doc = await http(stack, "POST", f"emit?code={FUNCTION_KEY}", key=None, json={"event": "ping", "room": "x"})
    assert status == 202 and doc["region"] == "eu"


async def test_persisted_emits_reach_history_in_order_and_webpubsub_once(stack: Stack) -> None:
    room = f"hist/{uuid.uuid4().hex[:6]}#1"
    # a Web PubSub client in the room's group, with the URL the Function App's negotiate hands out
    status, doc = await http(stack, "GET", "negotiate", params={"rooms": room})
    assert status == 200, doc
    client = await FrameClient.connect(doc["url"])
    assert (await client.next())["event"] == "connected"
    ids = []
    for i in range(5):
        status, doc = await http(stack, "POST", "emit", json={"event": "chat", "room": room, "data": {"n": i},
                                                              "persist": True})
        assert status == 202, doc
        ids.append(doc["id"])
        await asyncio.sleep(0.01)  # distinct ms timestamps
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(events) < 5 and time.monotonic() < deadline:
        status, doc = await http(stack, "GET", "history/server", params={"ns": "/", "room": room, "limit": "10"})
        assert status == 200
        events = doc["events"]
        await asyncio.sleep(0.2)
    assert [e["id"] for e in events] == ids
    assert [e["data"] for e in events] == [{"n": i} for i in range(5)]
    pages, after = [], None
    while True:
        params = {"ns": "/", "room": room, "limit": "2", **({"after": after} if after else {})}
        status, doc = await http(stack, "GET", "history/server", params=params)
        pages.append([e["data"]["n"] for e in doc["events"]])
        after = doc["next"]
        if not after:
            break
    assert pages == [[0, 1], [2, 3], [4]]
    # browsers read /history with a history token (anonymous at the host); /history/server takes the key
    token = history_token.mint(HISTORY_KEY, ns="/", room=room, since=0)
    status, doc = await http(stack, "GET", "history", key=None, params={"room": room},
                             headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and [e["id"] for e in doc["events"]] == ids
    assert (await http(stack, "GET", "history", key=None, params={"room": room}))[0] == 401
    assert (await http(stack, "GET", "history", params={"room": room}))[0] == 401  # a function key is no token
    assert (await http(stack, "GET", "history/server", key=None, params={"room": room}))[0] == 401
    assert (await http(stack, "GET", "history/server", key="wrong", params={"room": room}))[0] == 401
    # Web PubSub: the client gets one message per emit (originals only), even though copies went
    # to 3 other regions
    try:
        frames = [await client.next(20) for _ in range(5)]
        frames += await client.frames_within(QUIET)
    finally:
        await client.close()
    assert len(frames) == 5, frames
    assert all(f["type"] == "message" and f["from"] == "group" and f["group"] == room and f["dataType"] == "json"
               and f["data"]["event"] == "chat" for f in frames), frames
    assert sorted(f["data"]["data"]["n"] for f in frames) == list(range(5))


async def test_failing_hook_is_retried_then_dead_lettered(stack: Stack) -> None:
    room = f"hook-{uuid.uuid4().hex[:6]}"
    status, doc = await http(stack, "POST", "emit", json={"event": "explode", "room": room, "persist": True})
    assert status == 202
    async with servicebus_client(connection_string=stack.conn("eu")) as client, client.get_subscription_receiver(
            TOPIC, "persist", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as dlq:
        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = [m for m in await dlq.receive_messages(max_message_count=10, max_wait_time=1)
                     if doc["id"] in str(m)]
    assert found and found[0].dead_letter_reason == "MaxDeliveryCountExceeded"
    assert len(stack.runner.lines(rf"persist_eu: message .* failed .*HookFailed: hook explode failed for event {doc['id']}")) == 5
    # the row was written (idempotently, 5 times) before the hook failed: not lost
    status, hist = await http(stack, "GET", "history/server", params={"room": room})
    assert [e["id"] for e in hist["events"]] == [doc["id"]]
