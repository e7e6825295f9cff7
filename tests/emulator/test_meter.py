"""The credit meter, throttling and quotas, as Azure's Standard tier applies them.

The engine's meter with a fake clock; then emulator processes in ``--tier standard`` driven by
the unmodified azure-servicebus SDK: the meter counts a known sequence of operations at the
documented costs exactly, a throttled operation raises the SDK's own ``ServiceBusServerBusyError``
(admin calls: HTTP 429), and the quotas are refused with Azure's errors.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusError, ServiceBusServerBusyError
from azure.servicebus.management import SqlRuleFilter

from servicebus_emulator.errors import QuotaExceeded, ServerBusy
from servicebus_emulator.meter import Meter, Op, Tier
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import EmulatorProcess


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the engine's meter ----------------------------------------------------------------------
def test_meter_charges_the_documented_costs() -> None:
    clock = FakeClock()
    meter = Meter(clock, Tier.STANDARD, 100)
    meter.charge("t", {Op.SEND: 2, Op.FILTER: 6})
    meter.charge("t/subscriptions/a", {Op.RECEIVE: 1}, refusable=False)
    meter.charge("t/subscriptions/a", {Op.PEEK: 3})
    meter.charge("t/subscriptions/a", {Op.MANAGEMENT: 1})
    snap = meter.snapshot()
    assert snap["total"]["used"] == 2 + 6 + 1 + 3 + 10
    assert {k: v["used"] for k, v in snap["by_kind"].items()} == {
        "send": 2, "filter": 6, "receive": 1, "peek": 3, "management": 10}
    assert snap["by_entity"]["t"]["filter"]["used"] == 6
    assert snap["per_second"][-1] == {"second": 1000, "used": 22, "refused": 0, "refused_operations": 0}


def test_standard_tier_refuses_when_credits_are_gone_and_carries_debt() -> None:
    clock = FakeClock()
    meter = Meter(clock, Tier.STANDARD, 10)
    meter.charge("t", {Op.SEND: 25})  # admitted in full: 15 credits of debt
    with pytest.raises(ServerBusy, match="50009"):
        meter.charge("t", {Op.SEND: 1})
    clock.now += 1  # +10: still -5
    with pytest.raises(ServerBusy):
        meter.charge("t", {Op.SEND: 1})
    clock.now += 1  # +10: 5 left
    meter.charge("t", {Op.SEND: 1})
    snap = meter.snapshot()
    assert snap["total"]["refused"] == 2 and snap["total"]["refused_operations"] == 2
    assert snap["total"]["used"] == 26
    assert [s["refused"] for s in snap["per_second"]] == [1, 1, 0]


def test_premium_meters_and_never_refuses() -> None:
    meter = Meter(FakeClock(), Tier.PREMIUM, 1)
    for _ in range(5):
        meter.charge("t", {Op.MANAGEMENT: 1})
    assert meter.snapshot()["total"] == {"used": 50, "refused": 0, "operations": 5, "refused_operations": 0}


def test_connection_quota() -> None:
    meter = Meter(FakeClock(), max_connections=1)
    meter.connection_opened()
    with pytest.raises(QuotaExceeded, match="maximum number of connections"):
        meter.connection_opened()
    meter.connection_closed()
    meter.connection_opened()


# -- emulator processes in standard tier -----------------------------------------------------
def _config() -> dict[str, Any]:
    return EmulatorProcess.default_config({
        "Name": "metered",
        "Topics": [
            {"Name": "counted", "Subscriptions": [{"Name": "a"}, {"Name": "b"}]},
            {"Name": "busy", "Subscriptions": [{"Name": "s"}]},
            {"Name": "quota"},
        ],
    })


def _start(directory: Path, *args: str) -> EmulatorProcess:
    path = directory / "Config.json"
    path.write_text(json.dumps(_config()))
    proc = EmulatorProcess(path, extra_args=["--tier", "standard", *args])
    proc.start()
    return proc


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """Azure's budget (1,000 credits/s), small quotas."""
    proc = _start(tmp_path_factory.mktemp("standard"), "--max-subscriptions-per-topic", "3",
                  "--max-sql-filters-per-topic", "4", "--max-connections", "3")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def starved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A budget of 20 credits a second."""
    proc = _start(tmp_path_factory.mktemp("starved"), "--credits-per-second", "20")
    yield proc
    proc.stop()


def _meter(proc: EmulatorProcess) -> dict[str, Any]:
    port = proc.port_of("metered")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/$emulator/meter", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return data


def _used(snap: dict[str, Any], entity: str) -> dict[str, int]:
    return {kind: tally["used"] for kind, tally in snap["by_entity"].get(entity, {}).items()}


async def test_meter_counts_a_known_sequence_exactly(standard: EmulatorProcess) -> None:
    conn = standard.connection_string("metered")
    async with admin_client(connection_string=conn) as admin:
        await admin.get_topic("counted")  # 1 management operation
    async with servicebus_client(connection_string=conn, retry_total=0) as client:
        async with client.get_topic_sender("counted") as sender:
            await sender.send_messages([ServiceBusMessage(b"1"), ServiceBusMessage(b"2")])  # one transfer
            await sender.send_messages(ServiceBusMessage(b"3"))
        async with client.get_subscription_receiver("counted", "a", prefetch_count=0) as receiver:
            received: list[Any] = []
            for _ in range(20):
                received += await receiver.receive_messages(max_message_count=3 - len(received), max_wait_time=1)
                if len(received) == 3:
                    break
            for msg in received:
                await receiver.complete_message(msg)  # settlements are free
            peeked = await receiver.peek_messages(max_message_count=5)  # nothing left: an empty peek
        async with client.get_subscription_receiver("counted", "b", prefetch_count=0) as receiver_b:
            peeked_b = await receiver_b.peek_messages(max_message_count=2)
    assert len(received) == 3 and peeked == [] and len(peeked_b) == 2
    snap = _meter(standard)
    assert snap["tier"] == "standard" and snap["throttles"] is True
    # 3 messages sent, each evaluated against 2 subscriptions' rules
    assert _used(snap, "counted") == {"management": 10, "send": 3, "filter": 6}
    assert _used(snap, "counted/Subscriptions/a") == {"receive": 3, "peek": 1}
    assert _used(snap, "counted/Subscriptions/b") == {"peek": 2}
    assert snap["total"]["refused"] == 0


async def test_throttled_send_raises_the_sdks_server_busy_error(starved: EmulatorProcess) -> None:
    conn = starved.connection_string("metered")
    raised: ServiceBusServerBusyError | None = None
    sent = 0
    async with servicebus_client(connection_string=conn, retry_total=0) as client:
        async with client.get_topic_sender("busy") as sender:
            for _ in range(200):  # 2 credits each against 20 a second
                try:
                    await sender.send_messages(ServiceBusMessage(b"x"))
                    sent += 1
                except ServiceBusServerBusyError as exc:
                    raised = exc
                    break
    assert raised is not None, f"{sent} sends, none throttled"
    assert "50009" in str(raised)
    snap = _meter(starved)
    assert snap["by_kind"]["send"]["refused_operations"] >= 1
    assert snap["total"]["refused"] >= 2
    assert any(second["refused"] for second in snap["per_second"])


async def test_throttled_sdk_send_succeeds_after_its_own_retries(starved: EmulatorProcess) -> None:
    """With the SDK's retry policy, a throttled send waits and goes through: nothing lost."""
    conn = starved.connection_string("metered")
    async with servicebus_client(connection_string=conn, retry_total=5, retry_backoff_factor=0.2, retry_backoff_max=1) as client:
        async with client.get_topic_sender("busy") as sender:
            for _ in range(15):
                await sender.send_messages(ServiceBusMessage(b"x"))
    assert _meter(starved)["by_kind"]["send"]["refused_operations"] >= 1


async def test_throttled_admin_call_is_answered_429(starved: EmulatorProcess) -> None:
    conn = starved.connection_string("metered")
    status = None
    async with admin_client(connection_string=conn, retry_total=0) as admin:
        for _ in range(20):  # 10 credits each against 20 a second
            try:
                await admin.get_topic("busy")
            except HttpResponseError as exc:
                status = exc.status_code
                assert "50009" in str(exc)
                break
    assert status == 429


async def test_subscription_quota(standard: EmulatorProcess) -> None:
    conn = standard.connection_string("metered")
    async with admin_client(connection_string=conn) as admin:
        for i in range(3):
            await admin.create_subscription("quota", f"s{i}")
        with pytest.raises(HttpResponseError, match="maximum of 3 subscriptions") as refused:
            await admin.create_subscription("quota", "s3")
        assert refused.value.status_code == 403
        # 3 subscriptions with a $Default rule each: 3 SQL filters of 4
        await admin.create_rule("quota", "s0", "extra", filter=SqlRuleFilter("color = 'red'"))
        with pytest.raises(HttpResponseError, match="maximum of 4 SQL filters"):
            await admin.create_rule("quota", "s1", "extra", filter=SqlRuleFilter("color = 'blue'"))


async def test_connection_quota_refuses_the_connection_past_it(standard: EmulatorProcess) -> None:
    conn = standard.connection_string("metered")
    clients = [servicebus_client(connection_string=conn, retry_total=0) for _ in range(4)]
    senders = [c.get_topic_sender("busy") for c in clients]
    try:
        for sender in senders[:3]:
            await sender.send_messages(ServiceBusMessage(b"x"))
        # the SDK pipelines its attach behind the open, so it sees the refused connection close
        # under it (amqp:socket-error) rather than the close's condition
        with pytest.raises(ServiceBusError):
            await asyncio.wait_for(senders[3].send_messages(ServiceBusMessage(b"x")), 30)
        connections = _meter(standard)["connections"]
        assert connections["refused"] >= 1 and connections["open"] == 3
    finally:
        for sender in senders:
            await sender.close()
        for client in clients:
            await client.close()
