"""Fault scenarios against the whole local stack, each printing one figure line.

Order matters (one stack per module): the harmless scenarios first, then the emulator crash,
then a relay node is SIGKILLed, and last every process log is searched for secrets.

Covered elsewhere, not repeated here:

* a function that throws is retried, then dead-lettered with nothing lost:
  ``tests/functions/test_e2e.py::test_failing_hook_is_retried_then_dead_lettered`` (hooks module
  through ``SIO_HOOKS_MODULE``) and ``test_malformed_message_is_dead_lettered_by_service_bus``;
* the router with one region down: ``tests/functions/test_e2e_region_down.py``;
* poison messages at a node: ``tests/library/test_manager_faults.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
import uuid
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus import ServiceBusMessage
from azure.servicebus.management import SqlRuleFilter, TrueRuleFilter

from local_stack.stack import LocalStack, parse_metrics
from socketio_servicebus import history_token as ht
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from socketio_servicebus.topology import load_topology
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind
from tests.support.history_api import history_token

from .conftest import AUTO_DELETE_ON_IDLE, SUBSCRIPTION_CHECK_INTERVAL
from .crash_scenario import SAME_REGION, run_emulator_crash
from .support import Counting, ReadyWatch, fetch_history, figure, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

TOPO = load_topology()
TOPIC = TOPO["topic"]
WEST, NORTH = "westeurope", "northeurope"


def new_room(prefix: str) -> str:
    # under factory1's room prefix: with trust zones on, the on-premise node may emit only there
    return f"factory1-{prefix}-{uuid.uuid4().hex[:6]}"


class Chatter:
    """A client on one node sending ``chat`` at a steady rate; keeps what was acknowledged."""

    def __init__(self, url: str, room: str, rate: float = 20.0):
        self.client = Counting("sender")
        self.url, self.room, self.rate = url, room, rate
        self.acked: dict[str, float] = {}  # chat id -> monotonic time of the ack
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def connect(self) -> Chatter:
        await self.client.connect(self.url, self.room)
        return self

    def begin(self) -> Chatter:
        self._task = asyncio.create_task(self._run())
        return self

    async def start(self) -> Chatter:
        return (await self.connect()).begin()

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                ack = await self.client.client.call("chat", {"room": self.room, "text": f"m{i}"}, timeout=5)
                if isinstance(ack, dict) and ack.get("ok"):
                    self.acked[ack["id"]] = time.monotonic()
                else:
                    self.failed += 1
            except Exception:  # noqa: BLE001 - counted
                self.failed += 1
            await asyncio.sleep(1 / self.rate)

    def acked_between(self, start: float, end: float) -> set[str]:
        return {i for i, t in self.acked.items() if start <= t < end}

    async def stop(self, close: bool = True) -> None:
        """Stop sending (and, with ``close``, disconnect; without, the client keeps receiving)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        if close:
            await self.client.close()


async def chat_round_trip(stack: LocalStack, sender_node: str, receivers: dict[str, str], within: float = 30) -> float:
    """Seconds until a fresh chat from ``sender_node`` reaches a client on every receiver node."""
    room = new_room("rt")
    sender = await Counting("rt-sender").connect(stack.node_url(sender_node), room)
    clients = {n: await Counting(n).connect(stack.node_url(n), room) for n in receivers}
    start = time.monotonic()
    try:
        while True:
            ack = await sender.client.call("chat", {"room": room, "text": "ping"}, timeout=5)
            try:
                wanted = ack["id"]
                await wait_until(lambda: all(wanted in c.ids("chat") for c in clients.values()), 1.5,  # noqa: B023
                                 "round trip")
                return time.monotonic() - start
            except AssertionError:
                if time.monotonic() - start > within:
                    raise
    finally:
        for c in [sender, *clients.values()]:
            await c.close()


async def node_metric(stack: LocalStack, node: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(stack.node_url(node) + "/metrics") as resp:
        return parse_metrics(await resp.text()).get(name, 0.0)


# ====================================================================== duplicates / order
async def test_duplicate_and_out_of_order_batches_reach_clients_once(stack: LocalStack) -> None:
    """Crafted batches with the raw SDK: every batch sent twice (distinct message ids, so the
    broker's duplicate detection does not hide it), the second round in reverse order, plus
    one batch that repeats envelopes of two others. Clients see each envelope exactly once."""
    room = new_room("dup")
    clients = [await Counting(n).connect(stack.node_url(n), room) for n in ("a1", "a2", "b1")]

    def env(i: int) -> Envelope:
        body = {"method": "emit", "event": "chat", "data": [{"id": f"e{i}", "text": f"crafted {i}"}],
                "binary": False, "namespace": "/", "room": "chat:" + room, "skip_sid": None,
                "callback": None, "host_id": "forger"}
        return Envelope(kind=Kind.EMIT, origin_node="forger", origin_region=WEST, body=body)

    envs = [env(i) for i in range(60)]
    batches = [Batch(tuple(envs[i:i + 10])) for i in range(0, 60, 10)]
    mixed = Batch((envs[5], envs[15], envs[25], envs[35]))
    plan = batches + list(reversed(batches)) + [mixed]
    async with servicebus_client(connection_string=stack.connection_string(WEST)) as client, \
            client.get_topic_sender(TOPIC) as sender:
        for batch in plan:
            await sender.send_messages(ServiceBusMessage(
                batch.encode(), message_id=uuid.uuid4().hex, application_properties=batch.application_properties()))
    try:
        took = await wait_until(lambda: all(len(c.ids("chat")) == 60 for c in clients), 30, "all crafted envelopes")
        await asyncio.sleep(1.5)  # let any duplicate arrive
        dups = {c.name: c.duplicated("chat") for c in clients}
        figure("duplicates", batches_sent=len(plan), envelopes_sent=sum(len(b.envelopes) for b in plan),
               distinct=len(envs), received_per_client={c.name: sum(c.seen["chat"].values()) for c in clients},
               duplicated_at_clients=sum(dups.values()), seconds=round(took, 2))
        assert all(c.ids("chat") == {f"e{i}" for i in range(60)} for c in clients)
        assert sum(dups.values()) == 0
        assert await node_metric(stack, "a2", "socketio_servicebus_duplicates_dropped_total") >= 64
    finally:
        for c in clients:
            await c.close()


# ====================================================================== subscription / rule / topic
async def test_subscription_deleted_from_outside_is_recreated_and_history_fills_the_gap(stack: LocalStack) -> None:
    room = new_room("subdel")
    reader = await Counting("a2").connect(stack.node_url("a2"), room)
    chatter = await Chatter(stack.node_url("a1"), room).start()
    await asyncio.sleep(1.0)
    async with admin_client(connection_string=stack.connection_string(WEST)) as admin:
        await admin.delete_subscription(TOPIC, "node-a2")

        async def exists() -> bool:
            try:
                await admin.get_subscription(TOPIC, "node-a2")
                return True
            except ResourceNotFoundError:
                return False
        recreated_in = await wait_until(exists, 30, "node-a2 recreated", interval=0.2)
    ready_in = await wait_until(lambda: reader.last.get("chat") is not None and
                                chatter.acked and max(chatter.acked, key=chatter.acked.get) in reader.ids("chat"),
                                30, "live delivery again")
    await asyncio.sleep(1.0)
    await chatter.stop()
    await asyncio.sleep(1.5)
    acked = set(chatter.acked)
    live_missed = acked - reader.ids("chat")
    # the reader's recovery path: the history API for what it did not get live
    history = await fetch_history(stack.functions_url, "chat:" + room, "0000000000000-0", function_key=stack.function_key)
    history_ids = {e["data"]["id"] for e in history}
    missed = acked - reader.ids("chat") - history_ids
    figure("subscription-deleted", acked=len(acked), delivered_live=len(acked & reader.ids("chat")),
           missed_live_while_gone=len(live_missed), recovered_from_history=len(live_missed & history_ids),
           missed_after_history=len(missed), recreated_after_s=round(recreated_in, 2),
           live_again_after_s=round(ready_in + recreated_in, 2), duplicated=reader.duplicated("chat"))
    await reader.close()
    assert not missed and reader.duplicated("chat") == 0
    assert await node_metric(stack, "a2", "socketio_servicebus_subscription_recreated_total") >= 1


async def test_rule_changed_from_outside_is_restored(stack: LocalStack) -> None:
    """Someone deletes the node rule and adds a catch-all ``$Default`` TrueFilter. While the
    rule is missing the node gets nothing; with the catch-all it gets its own envelopes and
    other nodes' replies, which the manager drops. Within the check interval the node rule is
    restored, and nothing reaches a client twice."""
    spec_sql = TOPO["nodeSubscription"]["sqlTemplate"].format(node="a2")
    rule = TOPO["nodeSubscription"]["rule"]
    room = new_room("rule")
    reader = await Counting("a2").connect(stack.node_url("a2"), room)
    local = await Counting("a2-local").connect(stack.node_url("a2"), room)  # its own node's chat
    chatter = await Chatter(stack.node_url("a1"), room).start()
    local_sender = await Chatter(stack.node_url("a2"), room, rate=5).start()
    before = await node_metric(stack, "a2", "socketio_servicebus_subscription_repaired_total")
    await asyncio.sleep(1.0)
    async with admin_client(connection_string=stack.connection_string(WEST)) as admin:
        await admin.delete_rule(TOPIC, "node-a2", rule)
        await admin.create_rule(TOPIC, "node-a2", "$Default", filter=TrueRuleFilter())

        async def restored() -> bool:
            rules = [r async for r in admin.list_rules(TOPIC, "node-a2")]
            return [r.name for r in rules] == [rule] and getattr(rules[0].filter, "sql_expression", None) == spec_sql
        repaired_in = await wait_until(restored, 5 * SUBSCRIPTION_CHECK_INTERVAL + 10, "rule restored", interval=0.2)
    await asyncio.sleep(2.0)
    await chatter.stop()
    await local_sender.stop()
    await asyncio.sleep(1.5)
    acked = set(chatter.acked) | set(local_sender.acked)
    history = await fetch_history(stack.functions_url, "chat:" + room, "0000000000000-0", function_key=stack.function_key)
    history_ids = {e["data"]["id"] for e in history}
    live_missed = acked - reader.ids("chat")
    repaired = await node_metric(stack, "a2", "socketio_servicebus_subscription_repaired_total") - before
    dups = reader.duplicated("chat") + local.duplicated("chat")
    figure("rule-changed", acked=len(acked), missed_live=len(live_missed),
           missed_after_history=len(live_missed - history_ids), restored_after_s=round(repaired_in, 2),
           check_interval_s=SUBSCRIPTION_CHECK_INTERVAL, repairs_counted=int(repaired), duplicated=dups)
    await reader.close()
    await local.close()
    assert repaired >= 1 and dups == 0 and not (live_missed - history_ids)


async def _recreate_topic_as_infra_would(admin: Any) -> None:
    """What a Bicep re-deployment does: the topic and the function subscriptions with their rules."""
    await admin.create_topic(TOPIC, requires_duplicate_detection=True,
                             duplicate_detection_history_time_window=dt.timedelta(minutes=10))
    for spec in TOPO["functionSubscriptions"].values():
        await admin.create_subscription(TOPIC, spec["name"], max_delivery_count=spec["maxDeliveryCount"],
                                        lock_duration=dt.timedelta(minutes=1))
        await admin.create_rule(TOPIC, spec["name"], spec["rule"], filter=SqlRuleFilter(spec["sql"]))
        await admin.delete_rule(TOPIC, spec["name"], "$Default")


async def test_topic_briefly_missing_nodes_recover(stack: LocalStack) -> None:
    room = new_room("topic")
    reader = await Counting("a2").connect(stack.node_url("a2"), room)
    far = await Counting("b1").connect(stack.node_url("b1"), room)
    chatter = await Chatter(stack.node_url("a1"), room).start()
    watch = ReadyWatch({n: stack.node_url(n) for n in ("a1", "a2")}).start()
    await asyncio.sleep(1.0)
    async with admin_client(connection_string=stack.connection_string(WEST)) as admin:
        t_gone = time.monotonic()
        await admin.delete_topic(TOPIC)
        await asyncio.sleep(2.0)
        await _recreate_topic_as_infra_would(admin)
        t_back = time.monotonic()
    try:
        recovered = await chat_round_trip(stack, "a1", {"a2": "a2", "b1": "b1"}, within=60)
        # delivery is back; /readyz follows once the node's own send path has succeeded again
        for _ in range(100):  # up to 20 s
            if watch.status.get("a2") == 200:
                break
            await asyncio.sleep(0.2)
    finally:
        await watch.stop()
    await asyncio.sleep(1.0)
    await chatter.stop()
    await asyncio.sleep(2.0)
    acked = set(chatter.acked)
    before = chatter.acked_between(0, t_gone - 1.0)  # older than the in-flight window
    after = chatter.acked_between(t_back + recovered, float("inf"))
    history = {e["data"]["id"] for e in await fetch_history(stack.functions_url, "chat:" + room, "0000000000000-0", function_key=stack.function_key)}
    figure("topic-missing", acked=len(acked), failed_sends=chatter.failed,
           a2_missed_live=len(acked - reader.ids("chat")), b1_missed_live=len(acked - far.ids("chat")),
           persisted=len(acked & history), recovered_after_s=round(recovered, 2),
           readyz_a2=watch.codes("a2"), before_lost=len(before - reader.ids("chat")),
           after_lost=len(after - reader.ids("chat")) + len(after - far.ids("chat")),
           duplicated=reader.duplicated("chat") + far.duplicated("chat"))
    await reader.close()
    await far.close()
    assert not (before - reader.ids("chat")) and not (before - far.ids("chat"))
    assert not (after - reader.ids("chat")) and not (after - far.ids("chat"))
    assert reader.duplicated("chat") == 0 and far.duplicated("chat") == 0
    assert 503 in watch.codes("a2") and watch.codes("a2")[-1] == 200


# ====================================================================== bad input at the Functions HTTP API
async def test_emit_api_refuses_huge_and_malformed_bodies_and_keeps_serving(stack: LocalStack) -> None:
    """Gaps left by tests/functions: a 10 MB body, a non-object, no key — through the real runner."""
    url = stack.functions_url + "/emit"
    key = {"x-functions-key": stack.function_key}
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(url, data=b"{" + b" " * 10_000_000 + b"}", headers=key) as resp:
            huge = resp.status, await resp.text()
        huge_s = time.monotonic() - started
        async with session.post(url, data=b"\xff\xfe garbage", headers=key) as resp:
            garbage = resp.status
        async with session.post(url, json={"event": "chat"}) as resp:
            nokey = resp.status
        async with session.post(url, json={"event": "chat", "room": "x"}, headers=key) as resp:
            ok = resp.status
    figure("emit-api-bad-input", huge_10mb_status=huge[0], huge_seconds=round(huge_s, 2),
           garbage_status=garbage, no_key_status=nokey, valid_after_status=ok)
    assert huge[0] == 400 and "limit is" in huge[1]
    assert garbage == 400 and nokey == 401 and ok == 202


# ====================================================================== emulator crash
async def test_emulator_sigkill_and_restart_under_load(stack: LocalStack) -> None:
    """The emulator in memory (no ``--data-dir``): what it held at the kill is gone. The same
    scenario with ``--data-dir``: ``test_emulator_crash_data_dir.py``."""
    assert stack.emulator_data_dir is None
    result = await run_emulator_crash(stack, "emulator-crash")
    for name, row in result.rows.items():
        assert row["duplicated"] == 0, name
        assert row["after_missing"] == 0, (name, row)
        if name in SAME_REGION:
            # b1 is reached through the router function, whose backlog at 1,000 emits/s is seconds
            # long: what sat in the router subscription at the crash is lost with the emulator
            assert row["before_missing"] == 0, (name, row)
        assert row["delivered"] + result.dropped + row["lost_in_broker_crash"] + row["lost_before_resubscribe"] \
            + row["unacked_undelivered"] >= result.sent


# ====================================================================== relay node crash
async def test_relay_node_sigkill_clients_recover_from_history(stack: LocalStack) -> None:
    room = new_room("nodekill")
    reader = await Counting("reader").connect(stack.node_url("a2"), room)
    proof = await history_token(reader.client, "chat:" + room)  # as the page does it right after the join
    chatter = await Chatter(stack.node_url("a1"), room, rate=40).start()
    await asyncio.sleep(2.0)
    last_seen = dict(reader.last["chat"])
    t_kill = time.monotonic()
    stack.processes["node-a2"].signal(signal.SIGKILL)
    detected = await wait_until(lambda: not reader.client.connected, 30, "client notices the dead node")
    last_seen = dict(reader.last["chat"])
    seen_before = reader.ids("chat")
    # reconnect elsewhere (another node), rejoin, then ask history for what came after the last message seen
    back = await Counting("reader-again").connect(stack.node_url("a1"), room)
    reconnect_s = time.monotonic() - t_kill
    cursor = f"{int(last_seen['ts'] * 1000):013d}-0"
    await asyncio.sleep(2.0)
    await chatter.stop()
    acked = set(chatter.acked)

    recovered: set[str] = set()
    # as the page does it: a history token from the node it reconnected to
    # (resuming the earlier membership: a new join alone opens nothing older than itself)
    token = await history_token(back.client, "chat:" + room, resume=proof)

    async def caught_up() -> bool:
        events = await fetch_history(stack.functions_url, "chat:" + room, cursor, token=token)
        recovered.update(e["data"]["id"] for e in events)
        return acked <= seen_before | back.ids("chat") | recovered
    try:
        await wait_until(caught_up, 30, "history covers the gap", interval=0.5)
    except AssertionError:
        pass
    missed = acked - seen_before - back.ids("chat") - recovered
    admin_cs = stack.connection_string(WEST)

    async def subscription_gone() -> bool:
        async with admin_client(connection_string=admin_cs) as admin:
            try:
                await admin.get_subscription(TOPIC, "node-a2")
                return False
            except ResourceNotFoundError:
                return True
    await wait_until(subscription_gone, AUTO_DELETE_ON_IDLE + 20, "node-a2 auto-deleted", interval=0.5)
    gone_after = time.monotonic() - t_kill
    gap = acked - seen_before - back.ids("chat")
    figure("relay-node-sigkill", acked=len(acked), live_before_kill=len(seen_before & acked),
           live_after_reconnect=len(back.ids("chat") & acked), gap=len(gap),
           recovered_from_history=len(gap & recovered), missed=len(missed),
           disconnect_noticed_s=round(detected, 2), reconnected_s=round(reconnect_s, 2),
           subscription_gone_after_s=round(gone_after, 1), auto_delete_on_idle_s=AUTO_DELETE_ON_IDLE,
           duplicated_live=reader.duplicated("chat") + back.duplicated("chat"))
    await back.close()
    await reader.close()
    assert not missed
    assert gone_after <= AUTO_DELETE_ON_IDLE + 15
    assert reader.duplicated("chat") == 0 and back.duplicated("chat") == 0


# ====================================================================== secrets
async def test_no_secret_in_any_process_log(stack: LocalStack) -> None:
    """After everything above (startup, crashes, reconnects, errors): no SAS key, function key,
    history token key, history token, Web PubSub access key or Azurite key in any log. The one exception is the emulator's documented startup output
    (``namespace <name>: <connection string>``): it is a local dev tool whose job is to print
    its connection strings (see README and docs/emulator.md)."""
    from shared.connections import AZURITE_ACCOUNT_KEY

    secrets = {f"root key {r.name}": r.root_key for r in stack.regions}
    secrets.update({f"on-prem key {r.name}": r.on_prem_key for r in stack.regions if r.on_prem_nodes})
    secrets["function key"] = stack.function_key
    secrets["history token key"] = stack.history_token_key
    secrets["web pubsub access key"] = stack.webpubsub_key
    secrets["azurite key"] = AZURITE_ACCOUNT_KEY
    secrets.update({f"zone key {zone}": key.text() for zone, key in stack.zone_keys.items()})
    secrets.update({f"site history key {node}": key for node, key in stack.site_history_keys.items()})
    # bearer credentials too: any history token (the relay-node SIGKILL scenario above reads history with
    # one) starts with this header, whatever its claims
    secrets["a history token"] = ht.mint(stack.history_token_key, ns="/", room="r", since=0).split(".")[0]
    logs = sorted((stack.run_dir / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"emulator", "functions", "node-a1", "node-b1", "node-factory1", "azurite"}
    leaks: list[str] = []
    excluded = 0
    lines = 0
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            lines += 1
            if path.stem == "emulator" and line.startswith("namespace sb-") and ": Endpoint=sb://" in line:
                excluded += 1
                continue
            for what, value in secrets.items():
                if value and value in line:
                    leaks.append(f"{path.name}: {what}: {line[:160]}")
    figure("secrets-in-logs", log_files=len(logs), lines_scanned=lines, secrets_checked=len(secrets),
           documented_emulator_lines_excluded=excluded, leaks=len(leaks))
    assert not leaks, "\n".join(leaks)
    assert json.dumps(secrets)  # keep the names in the report readable
