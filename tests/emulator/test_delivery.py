"""Data-plane behaviour of the emulator, driven by the real azure-servicebus SDK over TCP.

One emulator process for the module, with its own Config.json: short lock durations, a small
MaxDeliveryCount, TTLs, duplicate detection, AutoDeleteOnIdle and a second namespace with
small size limits. Every test uses its own topic or subscription so tests do not see each
other's messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.servicebus import (
    ServiceBusClient as SyncServiceBusClient,
)
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageNotFoundError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusQuotaExceededError,
)

from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator

UTC = dt.UTC


def _sub(name: str, rules: list[dict] | None = None, **props: object) -> dict:
    out: dict = {"Name": name, "Properties": props}
    if rules is not None:
        out["Rules"] = rules
    return out


def _sql_rule(name: str, expression: str) -> dict:
    return {"Name": name, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": expression}}}


CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "delivery",
                "Queues": [{"Name": "syncq", "Properties": {"LockDuration": "PT5S"}}],
                "Topics": [
                    {
                        "Name": "roundtrip",
                        "Subscriptions": [
                            _sub("a"),
                            _sub("b"),
                            _sub("none", [_sql_rule("nothing", "1=0")]),
                            _sub("red", [_sql_rule("red", "color = 'red'")]),
                        ],
                    },
                    {"Name": "settle", "Subscriptions": [_sub("s", LockDuration="PT5S")]},
                    {"Name": "defer", "Subscriptions": [_sub("s", LockDuration="PT5S")]},
                    {"Name": "deadletter", "Subscriptions": [_sub("s", LockDuration="PT5S")]},
                    {"Name": "renew", "Subscriptions": [_sub("s", LockDuration="PT2S")]},
                    {"Name": "expiry", "Subscriptions": [_sub("s", LockDuration="PT1S", MaxDeliveryCount=5)]},
                    {"Name": "maxdelivery", "Subscriptions": [_sub("s", LockDuration="PT5S", MaxDeliveryCount=2)]},
                    {
                        "Name": "ttl",
                        "Subscriptions": [
                            _sub("drop", DefaultMessageTimeToLive="PT1S"),
                            _sub("dlq", DefaultMessageTimeToLive="PT1S", DeadLetteringOnMessageExpiration=True),
                        ],
                    },
                    {
                        "Name": "dedupe",
                        "Properties": {
                            "RequiresDuplicateDetection": True,
                            "DuplicateDetectionHistoryTimeWindow": "PT1M",
                        },
                        "Subscriptions": [_sub("s")],
                    },
                    {"Name": "scheduled", "Subscriptions": [_sub("s")]},
                    {"Name": "rad", "Subscriptions": [_sub("s"), _sub("peek", LockDuration="PT5S")]},
                    {"Name": "prefetch", "Subscriptions": [_sub("s")]},
                    {"Name": "big", "Subscriptions": [_sub("s")]},
                ],
            },
            {
                "Name": "small",
                "MaxMessageSizeInKilobytes": 64,
                "MaxSizeInMegabytes": 1,
                "Topics": [{"Name": "t", "Subscriptions": [_sub("s")]}],
            },
        ]
    }
}


@pytest.fixture(scope="module")
def delivery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("delivery"), CONFIG) as proc:
        yield proc


@pytest.fixture
def cs(delivery_emulator: EmulatorProcess) -> str:
    return delivery_emulator.connection_string("delivery")


@pytest.fixture
def small_cs(delivery_emulator: EmulatorProcess) -> str:
    return delivery_emulator.connection_string("small")


async def _receive(receiver, count: int, wait: float = 3.0) -> list:
    """Receive exactly ``count`` messages (or fewer when none come within ``wait``)."""
    got: list = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(max_message_count=count - len(got), max_wait_time=0.5)
    return got


# -- round trip ----------------------------------------------------------------------------


async def test_round_trip_properties_and_fan_out(cs: str) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    props = {"i": 7, "neg": -3, "f": 1.5, "t": True, "no": False, "s": "text", "color": "red",
             "by": b"raw bytes", "dt": when, "u": ident}
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("roundtrip") as sender:
            before = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
            await sender.send_messages(
                ServiceBusMessage(
                    b"\x00binary\xff",
                    application_properties=props,
                    message_id="mid-1",
                    correlation_id="cid-1",
                    subject="subj",
                    to="somewhere",
                    reply_to="replies",
                    content_type="application/x-test",
                )
            )
            await sender.send_messages(ServiceBusMessage("unicode ✓ text", message_id="mid-2"))
            await sender.send_messages(AmqpAnnotatedMessage(value_body={"k": [1, 2, "x"]}))
            await sender.send_messages(AmqpAnnotatedMessage(sequence_body=[[1, "a"], [2]]))
            after = dt.datetime.now(UTC) + dt.timedelta(seconds=1)

        for sub in ("a", "b"):
            async with client.get_subscription_receiver("roundtrip", sub) as receiver:
                msgs = await _receive(receiver, 4)
                assert len(msgs) == 4, f"{sub} got {len(msgs)} messages"
                for m in msgs:
                    await receiver.complete_message(m)
            first, text, value, seq = msgs
            assert b"".join(first.body) == b"\x00binary\xff"
            assert first.message_id == "mid-1"
            assert first.correlation_id == "cid-1"
            assert first.subject == "subj"
            assert first.to == "somewhere"
            assert first.reply_to == "replies"
            assert first.content_type == "application/x-test"
            app = first.application_properties
            assert app[b"i"] == 7 and app[b"neg"] == -3 and app[b"f"] == 1.5
            assert app[b"t"] is True and app[b"no"] is False
            assert app[b"s"] == b"text" and app[b"by"] == b"raw bytes"
            assert app[b"u"] == ident
            # the SDK decodes an AMQP timestamp as milliseconds since the epoch
            stamp = app[b"dt"]
            stamp = stamp if isinstance(stamp, int) else int(stamp.timestamp() * 1000)
            assert stamp == int(when.timestamp() * 1000)
            assert str(text) == "unicode ✓ text"
            assert value.body_type == AmqpMessageBodyType.VALUE and value.body == {b"k": [1, 2, b"x"]}
            assert seq.body_type == AmqpMessageBodyType.SEQUENCE and list(seq.body) == [[1, b"a"], [2]]
            seqs = [m.sequence_number for m in msgs]
            assert seqs == sorted(seqs) and len(set(seqs)) == 4
            for m in msgs:
                assert before <= m.enqueued_time_utc <= after
                assert m.delivery_count == 0

        # the filtered subscriptions: 'red' got only the red message, 'none' nothing
        async with client.get_subscription_receiver(
            "roundtrip", "red", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await _receive(receiver, 1)
            assert [m.message_id for m in msgs] == ["mid-1"]
            assert await receiver.peek_messages(5, sequence_number=1) == []
        async with client.get_subscription_receiver("roundtrip", "none") as receiver:
            assert await receiver.peek_messages(10, sequence_number=1) == []


async def test_batch_send_keeps_order_and_sequence(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("rad") as sender:
            batch = await sender.create_message_batch()
            for i in range(50):
                batch.add_message(ServiceBusMessage(f"m{i}", application_properties={"i": i}))
            await sender.send_messages(batch)
            await sender.send_messages([ServiceBusMessage(f"l{i}") for i in range(10)])
        async with client.get_subscription_receiver(
            "rad", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await _receive(receiver, 60)
            assert [str(m) for m in msgs] == [f"m{i}" for i in range(50)] + [f"l{i}" for i in range(10)]
            assert [m.application_properties[b"i"] for m in msgs[:50]] == list(range(50))
            seqs = [m.sequence_number for m in msgs]
            assert seqs == sorted(seqs) and len(set(seqs)) == 60
            assert all(m.locked_until_utc is None for m in msgs)
            # receive-and-delete removed them from this subscription, not from the other one
            assert await receiver.peek_messages(10, sequence_number=1) == []
        async with client.get_subscription_receiver("rad", "peek") as receiver:
            assert len(await receiver.peek_messages(100)) == 60


# -- peek-lock settlement --------------------------------------------------------------------


async def test_complete_abandon_and_lock(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("settle") as sender:
            await sender.send_messages([ServiceBusMessage("one"), ServiceBusMessage("two")])
        async with client.get_subscription_receiver("settle", "s") as receiver:
            first, second = await _receive(receiver, 2)
            now = dt.datetime.now(UTC)
            assert now + dt.timedelta(seconds=3) < first.locked_until_utc <= now + dt.timedelta(seconds=6)
            assert first.lock_token != second.lock_token
            await receiver.complete_message(first)
            await receiver.abandon_message(second)
            (again,) = await _receive(receiver, 1)
            assert str(again) == "two" and again.delivery_count == 1
            assert again.sequence_number == second.sequence_number
            await receiver.complete_message(again)
            assert await receiver.peek_messages(5, sequence_number=1) == []


async def test_renew_lock_extends_locked_until(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("renew") as sender:
            await sender.send_messages(ServiceBusMessage("r"))
        async with client.get_subscription_receiver("renew", "s") as receiver:
            (msg,) = await _receive(receiver, 1)
            original = msg.locked_until_utc
            await asyncio.sleep(1.2)
            renewed = await receiver.renew_message_lock(msg)
            assert renewed > original + dt.timedelta(seconds=1)
            assert msg.locked_until_utc == renewed
            await asyncio.sleep(1.2)  # past the original lock, within the renewed one
            await receiver.complete_message(msg)
            assert await receiver.peek_messages(5, sequence_number=1) == []


async def test_defer_and_receive_deferred(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("defer") as sender:
            await sender.send_messages([ServiceBusMessage("later"), ServiceBusMessage("now")])
        async with client.get_subscription_receiver("defer", "s") as receiver:
            later, now = await _receive(receiver, 2)
            await receiver.defer_message(later)
            await receiver.complete_message(now)
            # a deferred message is not received again by an ordinary receive
            assert await receiver.receive_messages(max_message_count=5, max_wait_time=1) == []
            # ... but is still in the entity (peek shows it)
            # (a receiver peeks from the last sequence number it received unless told otherwise)
            peeked = await receiver.peek_messages(5, sequence_number=1)
            assert [p.sequence_number for p in peeked] == [later.sequence_number]
            (deferred,) = await receiver.receive_deferred_messages([later.sequence_number])
            assert str(deferred) == "later"
            assert deferred.locked_until_utc is not None
            await receiver.complete_message(deferred)
            assert await receiver.peek_messages(5, sequence_number=1) == []
    async with servicebus_client(connection_string=cs, retry_total=0) as client:
        async with client.get_subscription_receiver("defer", "s") as receiver:
            with pytest.raises(MessageNotFoundError):
                await receiver.receive_deferred_messages([later.sequence_number])


async def test_dead_letter_with_reason(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("deadletter") as sender:
            await sender.send_messages(ServiceBusMessage("bad", application_properties={"k": "v"}))
        async with client.get_subscription_receiver("deadletter", "s") as receiver:
            (msg,) = await _receive(receiver, 1)
            await receiver.dead_letter_message(msg, reason="Poison", error_description="cannot parse")
            assert await receiver.peek_messages(5, sequence_number=1) == []
        async with client.get_subscription_receiver(
            "deadletter", "s", sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            (dead,) = await _receive(dlq, 1)
            assert str(dead) == "bad"
            assert dead.dead_letter_reason == "Poison"
            assert dead.dead_letter_error_description == "cannot parse"
            assert dead.dead_letter_source == "deadletter/Subscriptions/s"
            assert dead.application_properties[b"k"] == b"v"
            assert dead.sequence_number == msg.sequence_number
            await dlq.complete_message(dead)
            assert await dlq.peek_messages(5) == []


@pytest.mark.slow
async def test_lock_expiry_redelivers_with_incremented_count(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("expiry") as sender:
            await sender.send_messages(ServiceBusMessage("slow"))
        async with client.get_subscription_receiver("expiry", "s") as receiver:
            (msg,) = await _receive(receiver, 1)
            assert msg.delivery_count == 0
            await asyncio.sleep(1.3)
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(msg)
            (again,) = await _receive(receiver, 1)
            assert str(again) == "slow" and again.delivery_count == 1
            await receiver.complete_message(again)


@pytest.mark.slow
async def test_max_delivery_count_moves_to_dead_letter(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("maxdelivery") as sender:
            await sender.send_messages(ServiceBusMessage("poison"))
        async with client.get_subscription_receiver("maxdelivery", "s") as receiver:
            for attempt in range(2):
                (msg,) = await _receive(receiver, 1)
                assert msg.delivery_count == attempt
                await receiver.abandon_message(msg)
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
        async with client.get_subscription_receiver(
            "maxdelivery", "s", sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
        ) as dlq:
            (dead,) = await _receive(dlq, 1)
            assert str(dead) == "poison"
            assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert dead.delivery_count == 2


async def test_prefetch_and_peek(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("prefetch") as sender:
            await sender.send_messages([ServiceBusMessage(f"p{i}") for i in range(20)])
        async with client.get_subscription_receiver("prefetch", "s") as peeker:
            peeked = await peeker.peek_messages(5)
            assert [str(m) for m in peeked] == [f"p{i}" for i in range(5)]
            assert all(m.locked_until_utc is None for m in peeked)
            tail = await peeker.peek_messages(100, sequence_number=peeked[3].sequence_number)
            assert [str(m) for m in tail] == [f"p{i}" for i in range(3, 20)]
        async with client.get_subscription_receiver("prefetch", "s", prefetch_count=10) as receiver:
            got = await _receive(receiver, 20)
            assert [str(m) for m in got] == [f"p{i}" for i in range(20)]
            # peek did not lock: every message comes first time round
            assert all(m.delivery_count == 0 for m in got)
            for m in got:
                await receiver.complete_message(m)


# -- time to live, duplicate detection, scheduling, auto-delete ---------------------------------


@pytest.mark.slow
async def test_ttl_drops_or_dead_letters(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("ttl") as sender:
            await sender.send_messages(ServiceBusMessage("short-lived"))
            await sender.send_messages(
                ServiceBusMessage("own-ttl", time_to_live=dt.timedelta(milliseconds=300))
            )
        await asyncio.sleep(1.3)
        async with client.get_subscription_receiver("ttl", "drop") as receiver:
            assert await receiver.receive_messages(max_message_count=5, max_wait_time=0.5) == []
        async with client.get_subscription_receiver(
            "ttl", "dlq", sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            dead = await _receive(dlq, 2)
            assert sorted(str(m) for m in dead) == ["own-ttl", "short-lived"]
            assert {m.dead_letter_reason for m in dead} == {"TTLExpiredException"}
            for m in dead:
                await dlq.complete_message(m)


async def test_duplicate_detection_drops_resend(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("dedupe") as sender:
            await sender.send_messages(ServiceBusMessage("first", message_id="same"))
            await sender.send_messages(ServiceBusMessage("second", message_id="same"))
            await sender.send_messages(ServiceBusMessage("other", message_id="different"))
        async with client.get_subscription_receiver(
            "dedupe", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive(receiver, 2)
            got += await receiver.receive_messages(max_message_count=1, max_wait_time=0.3)
        assert [str(m) for m in got] == ["first", "other"]


@pytest.mark.slow
async def test_scheduled_messages(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("scheduled") as sender:
            at = dt.datetime.now(UTC) + dt.timedelta(seconds=1.5)
            seqs = await sender.schedule_messages(
                [ServiceBusMessage("kept"), ServiceBusMessage("cancelled")], at
            )
            assert len(seqs) == 2 and seqs[0] < seqs[1]
            await sender.cancel_scheduled_messages(seqs[1])
            at2 = dt.datetime.now(UTC) + dt.timedelta(seconds=2)
            await sender.send_messages(ServiceBusMessage("via-property", scheduled_enqueue_time_utc=at2))
        async with client.get_subscription_receiver("scheduled", "s") as receiver:
            early = await receiver.peek_messages(5)
            assert early == [], [(str(m), m.sequence_number, m.scheduled_enqueue_time_utc) for m in early]
            got = await _receive(receiver, 2, wait=4)
            assert [str(m) for m in got] == ["kept", "via-property"]
            assert got[0].sequence_number == seqs[0]
            assert got[0].enqueued_time_utc >= at - dt.timedelta(milliseconds=100)
            for m in got:
                await receiver.complete_message(m)
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []


IDLE_CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "idle",
                "Topics": [
                    {
                        "Name": "idle",
                        "Subscriptions": [
                            _sub("idle", AutoDeleteOnIdle="PT2S"),
                            _sub("held", AutoDeleteOnIdle="PT2S"),
                        ],
                    }
                ],
            }
        ]
    }
}


@pytest.mark.slow
async def test_auto_delete_on_idle(tmp_path: Path) -> None:
    # its own process: AutoDeleteOnIdle counts from creation, so the subscriptions must be new
    (tmp_path / "Config.json").write_text(json.dumps(IDLE_CONFIG))
    proc = EmulatorProcess(tmp_path / "Config.json")
    await asyncio.to_thread(proc.start)
    try:
        async with servicebus_client(connection_string=proc.connection_string("idle")) as client:
            async with client.get_subscription_receiver("idle", "held") as held:
                await asyncio.sleep(2.5)
                # an attached receiver keeps its subscription alive; the idle one is gone
                assert await held.receive_messages(max_message_count=1, max_wait_time=0.2) == []
                with pytest.raises(MessagingEntityNotFoundError):
                    async with client.get_subscription_receiver("idle", "idle") as gone:
                        await gone.receive_messages(max_message_count=1, max_wait_time=0.5)
                async with client.get_topic_sender("idle") as sender:
                    await sender.send_messages(ServiceBusMessage("still here"))
                (msg,) = await _receive(held, 1)
                assert str(msg) == "still here"
                await held.complete_message(msg)
    finally:
        await asyncio.to_thread(proc.stop)


# -- size limits --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_message_size_limit_default_256k(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("big") as sender:
            assert sender._max_message_size_on_link == 256 * 1024  # noqa: SLF001 - advertised on attach
            with pytest.raises(MessageSizeExceededError):  # refused by the broker, not the SDK
                await sender.send_messages(ServiceBusMessage(b"x" * (257 * 1024)))
            await sender.send_messages(ServiceBusMessage(b"y" * (200 * 1024)))
        async with client.get_subscription_receiver(
            "big", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            (msg,) = await _receive(receiver, 1)
            assert b"".join(msg.body) == b"y" * (200 * 1024)


async def test_broker_enforces_configured_message_size(small_cs: str) -> None:
    async with servicebus_client(connection_string=small_cs) as client:
        async with client.get_topic_sender("t") as sender:
            # advertised on attach; the SDK sizes batches by it ...
            assert sender._max_message_size_on_link == 64 * 1024  # noqa: SLF001
            batch = await sender.create_message_batch()
            assert batch.max_size_in_bytes == 64 * 1024
            with pytest.raises(MessageSizeExceededError):
                batch.add_message(ServiceBusMessage(b"x" * (65 * 1024)))
            # ... but sends a single message unchecked: the broker refuses it
            with pytest.raises(MessageSizeExceededError):
                await sender.send_messages(ServiceBusMessage(b"x" * (65 * 1024)))
            await sender.send_messages(ServiceBusMessage(b"x" * (60 * 1024)))  # the link still works
        async with client.get_subscription_receiver(
            "t", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            (msg,) = await _receive(receiver, 1)
            assert len(b"".join(msg.body)) == 60 * 1024


@pytest.mark.slow
async def test_entity_quota(small_cs: str) -> None:
    chunk = b"q" * (60 * 1024)
    async with servicebus_client(connection_string=small_cs) as client:
        async with client.get_topic_sender("t") as sender:
            with pytest.raises(ServiceBusQuotaExceededError):
                for _ in range(30):  # 1 MB quota, 60 KB each: refused at the 18th
                    await sender.send_messages(ServiceBusMessage(chunk))
        async with client.get_subscription_receiver(
            "t", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive(receiver, 30, wait=2)
            assert 10 <= len(got) <= 17
        # room again after draining
        async with client.get_topic_sender("t") as sender:
            await sender.send_messages(ServiceBusMessage(chunk))


@pytest.mark.slow
async def test_namespaces_are_separate(cs: str, small_cs: str) -> None:
    assert cs != small_cs
    async with servicebus_client(connection_string=small_cs) as client:
        with pytest.raises(MessagingEntityNotFoundError):
            async with client.get_topic_sender("roundtrip") as sender:
                await sender.send_messages(ServiceBusMessage("x"))


# -- the sync client --------------------------------------------------------------------------------


def test_sync_client_queue_round_trip(cs: str) -> None:
    with SyncServiceBusClient.from_connection_string(cs) as client:
        with client.get_queue_sender("syncq") as sender:
            sender.send_messages([ServiceBusMessage("s1", message_id="sync-1"), ServiceBusMessage("s2")])
        with client.get_queue_receiver("syncq", max_wait_time=2) as receiver:
            msgs = receiver.receive_messages(max_message_count=2, max_wait_time=2)
            while len(msgs) < 2:
                more = receiver.receive_messages(max_message_count=2 - len(msgs), max_wait_time=2)
                assert more, "sync receiver got too few messages"
                msgs += more
            assert [str(m) for m in msgs] == ["s1", "s2"]
            assert msgs[0].message_id == "sync-1"
            receiver.complete_message(msgs[0])
            receiver.dead_letter_message(msgs[1], reason="sync", error_description="from the sync client")
            assert receiver.peek_messages(5) == []
        with client.get_queue_receiver("syncq", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            (dead,) = dlq.receive_messages(max_message_count=1, max_wait_time=2)
            assert dead.dead_letter_reason == "sync"
            assert dead.dead_letter_source == "syncq"
            dlq.complete_message(dead)
