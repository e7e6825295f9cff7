"""The scenarios of Microsoft's azure-servicebus samples (``samples/async_samples``), written
again here and run with the real SDK (aio) against the emulator, so a gap between what the
samples do and what the emulator serves shows up as a failing test.

Covered: send/receive on a queue and on a topic subscription, peek, schedule and cancel,
defer and receive deferred, dead-letter and the dead-letter queue, receive-and-delete,
``AmqpAnnotatedMessage`` with value/sequence/data bodies, ``AutoLockRenewer``, message
properties, batch send, the administration client (through the project's documented
``admin_client`` transport), and the session samples (``session_send_receive``,
``session_pool_receive``, ``AutoLockRenewer`` on a session, listing sessions), those with the
sync client too (``samples/sync_samples``).

Also here, each with the SDK: the three differences fixed in issue 14 (value bodies with
binary keys; concurrent lock renewals on the management link; locks of a closed receiver),
an undecodable transfer being refused at once with an AMQP error, and peek showing a queue's
scheduled messages with their state (and deferred/active ones with theirs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus import AutoLockRenewer as SyncAutoLockRenewer
from azure.servicebus import ServiceBusClient as SyncServiceBusClient
from azure.servicebus.aio import AutoLockRenewer
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import OperationTimeoutError
from azure.servicebus.management import SqlRuleFilter
from proton import Collector, Connection, Disposition, Endpoint, Message, Transport

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator
from tests.support.receiving import receive as _receive
from tests.support.sas import sas_token

UTC = dt.UTC


def _queue(name: str, **props: object) -> dict[str, Any]:
    return {"Name": name, "Properties": props}


CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "samples",
                # named here (the raw put-token below signs with it); without it the key is random
                "SharedAccessPolicies": [{"Name": "RootManageSharedAccessKey", "Key": "SAS_KEY_VALUE",
                                          "Rights": ["Manage", "Listen", "Send"]}],
                "Queues": [
                    _queue("sendreceive"),
                    _queue("peek"),
                    _queue("scheduled"),
                    _queue("deferred"),
                    _queue("deadletter"),
                    _queue("rad"),
                    _queue("props"),
                    _queue("batch"),
                    _queue("annotated"),
                    _queue("renew", LockDuration="PT5S"),  # Azure's shortest lock
                    _queue("concurrent", LockDuration="PT30S"),
                    _queue("closed", LockDuration="PT2S"),
                    _queue("closedmax", LockDuration="PT2S", MaxDeliveryCount=1),
                    _queue("abandoned", LockDuration="PT30S"),
                    _queue("raw"),
                    _queue("peekstates"),
                    _queue("session", RequiresSession=True),
                    _queue("syncsession", RequiresSession=True),
                    _queue("sessionpool", RequiresSession=True),
                    _queue("syncsessionpool", RequiresSession=True),
                    _queue("sessionrenew", RequiresSession=True, LockDuration="PT5S"),
                    _queue("sessionlist", RequiresSession=True),
                ],
                "Topics": [
                    {"Name": "topic", "Subscriptions": [{"Name": "one"}, {"Name": "two"}]},
                    {"Name": "scheduledtopic", "Subscriptions": [{"Name": "s"}]},
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def samples_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("samples"), CONFIG) as proc:
        yield proc


@pytest.fixture
def cs(samples_emulator: EmulatorProcess) -> str:
    return samples_emulator.connection_string("samples")


# -- send and receive --------------------------------------------------------------------------


async def test_send_and_receive_queue(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("sendreceive") as sender:
            await sender.send_messages(ServiceBusMessage("single"))
            await sender.send_messages([ServiceBusMessage(f"list {i}") for i in range(3)])
        async with client.get_queue_receiver("sendreceive") as receiver:
            got = await _receive(receiver, 4)
            assert [str(m) for m in got] == ["single", "list 0", "list 1", "list 2"]
            for msg in got:
                await receiver.complete_message(msg)
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
        # the samples also iterate the receiver
        async with client.get_queue_sender("sendreceive") as sender:
            await sender.send_messages(ServiceBusMessage("iterated"))
        async with client.get_queue_receiver("sendreceive", max_wait_time=1) as receiver:
            seen = []
            async for msg in receiver:
                seen.append(str(msg))
                await receiver.complete_message(msg)
            assert seen == ["iterated"]


async def test_send_to_topic_receive_from_each_subscription(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("topic") as sender:
            await sender.send_messages([ServiceBusMessage("fan-out 1"), ServiceBusMessage("fan-out 2")])
        for sub in ("one", "two"):
            async with client.get_subscription_receiver("topic", sub) as receiver:
                got = await _receive(receiver, 2)
                assert [str(m) for m in got] == ["fan-out 1", "fan-out 2"], sub
                for msg in got:
                    await receiver.complete_message(msg)


async def test_peek_does_not_lock_or_remove(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("peek") as sender:
            await sender.send_messages([ServiceBusMessage(f"p{i}") for i in range(5)])
        async with client.get_queue_receiver("peek") as receiver:
            peeked = await receiver.peek_messages(max_message_count=10)
            assert [str(m) for m in peeked] == [f"p{i}" for i in range(5)]
            assert all(m.locked_until_utc is None for m in peeked)
            # peek again from a sequence number: the same messages are still there
            again = await receiver.peek_messages(max_message_count=2, sequence_number=peeked[3].sequence_number)
            assert [str(m) for m in again] == ["p3", "p4"]
            got = await _receive(receiver, 5)
            assert [m.delivery_count for m in got] == [0] * 5
            for msg in got:
                await receiver.complete_message(msg)


async def test_schedule_and_cancel_scheduled(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("scheduled") as sender:
            at = dt.datetime.now(UTC) + dt.timedelta(seconds=3)
            kept, cancelled = await sender.schedule_messages(
                [ServiceBusMessage("kept"), ServiceBusMessage("cancelled")], at
            )
            assert kept < cancelled
            await sender.cancel_scheduled_messages(cancelled)
            # a message with scheduled_enqueue_time_utc set, sent normally, is scheduled too
            await sender.send_messages(ServiceBusMessage("by property", scheduled_enqueue_time_utc=at))
        async with client.get_queue_receiver("scheduled") as receiver:
            if dt.datetime.now(UTC) < at - dt.timedelta(seconds=0.7):
                assert await receiver.receive_messages(max_message_count=5, max_wait_time=0.5) == []
            got = await _receive(receiver, 2, wait=6)
            assert sorted(str(m) for m in got) == ["by property", "kept"]
            # the cancelled one never comes
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
            assert dt.datetime.now(UTC) >= at
            for msg in got:
                assert msg.scheduled_enqueue_time_utc is not None
                assert abs((msg.scheduled_enqueue_time_utc - at).total_seconds()) < 0.01
                await receiver.complete_message(msg)


async def test_defer_and_receive_deferred(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("deferred") as sender:
            await sender.send_messages([ServiceBusMessage("step 2"), ServiceBusMessage("step 1")])
        async with client.get_queue_receiver("deferred") as receiver:
            second, first = await _receive(receiver, 2)
            await receiver.defer_message(second)
            await receiver.complete_message(first)
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
            (deferred,) = await receiver.receive_deferred_messages([second.sequence_number])
            assert str(deferred) == "step 2" and deferred.locked_until_utc is not None
            await receiver.complete_message(deferred)
            assert await receiver.peek_messages(5, sequence_number=1) == []


async def test_peek_shows_scheduled_and_deferred_messages_with_their_state(cs: str) -> None:
    """As on Azure: a queue's peek returns messages waiting for their scheduled enqueue time,
    in sequence order among the others, with ``state`` SCHEDULED; deferred ones DEFERRED."""
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("peekstates") as sender:
            await sender.send_messages(ServiceBusMessage("to defer"))
        async with client.get_queue_receiver("peekstates", prefetch_count=0) as receiver:
            (to_defer,) = await _receive(receiver, 1)
            await receiver.defer_message(to_defer)
        at = (dt.datetime.now(UTC) + dt.timedelta(days=1)).replace(microsecond=123000)
        async with client.get_queue_sender("peekstates") as sender:
            later, cancelled = await sender.schedule_messages(
                [ServiceBusMessage("later"), ServiceBusMessage("cancelled")], at
            )
            await sender.send_messages(ServiceBusMessage("active"))
        async with client.get_queue_receiver("peekstates", prefetch_count=0) as receiver:
            peeked = await receiver.peek_messages(10)
            assert [(str(m), m.state) for m in peeked] == [
                ("to defer", ServiceBusMessageState.DEFERRED),
                ("later", ServiceBusMessageState.SCHEDULED),
                ("cancelled", ServiceBusMessageState.SCHEDULED),
                ("active", ServiceBusMessageState.ACTIVE),
            ]
            seqs = [m.sequence_number for m in peeked]
            assert seqs == sorted(seqs) and seqs[0] == to_defer.sequence_number and seqs[1:3] == [later, cancelled]
            for m in peeked[1:3]:
                assert m.scheduled_enqueue_time_utc == at
                assert m.locked_until_utc is None and m.delivery_count == 0
            assert peeked[0].scheduled_enqueue_time_utc is None and peeked[3].scheduled_enqueue_time_utc is None
            # paging spans scheduled and stored messages: the SDK goes on after the last one peeked
            assert [str(m) for m in await receiver.peek_messages(2, sequence_number=later)] == ["later", "cancelled"]
            assert [str(m) for m in await receiver.peek_messages(2)] == ["active"]
            assert [str(m) for m in await receiver.peek_messages(1, sequence_number=1)] == ["to defer"]
            assert [str(m) for m in await receiver.peek_messages(2)] == ["later", "cancelled"]

            async with client.get_queue_sender("peekstates") as sender:
                await sender.cancel_scheduled_messages(cancelled)
            after_cancel = await receiver.peek_messages(10, sequence_number=1)
            assert [(str(m), m.state) for m in after_cancel] == [
                ("to defer", ServiceBusMessageState.DEFERRED),
                ("later", ServiceBusMessageState.SCHEDULED),
                ("active", ServiceBusMessageState.ACTIVE),
            ]

            # receive is unchanged: only the active message comes; the deferred one by number
            got = await _receive(receiver, 3, wait=2)
            assert [str(m) for m in got] == ["active"]
            await receiver.complete_message(got[0])
            (deferred,) = await receiver.receive_deferred_messages([to_defer.sequence_number])
            await receiver.complete_message(deferred)
            remaining = await receiver.peek_messages(10, sequence_number=1)
            assert [(str(m), m.state, m.sequence_number) for m in remaining] == [
                ("later", ServiceBusMessageState.SCHEDULED, later)
            ]
            async with client.get_queue_sender("peekstates") as sender:
                await sender.cancel_scheduled_messages(later)
            assert await receiver.peek_messages(10, sequence_number=1) == []


async def test_subscription_peek_does_not_show_a_message_scheduled_at_the_topic(cs: str) -> None:
    """On Azure a message scheduled on a topic waits at the topic; the subscription shows it
    (active) only once its time has come."""
    async with servicebus_client(connection_string=cs) as client:
        at = dt.datetime.now(UTC) + dt.timedelta(seconds=4)
        async with client.get_topic_sender("scheduledtopic") as sender:
            (seq,) = await sender.schedule_messages(ServiceBusMessage("at the topic"), at)
        async with client.get_subscription_receiver("scheduledtopic", "s") as receiver:
            assert await receiver.peek_messages(10, sequence_number=1) == []
            assert dt.datetime.now(UTC) < at  # the peek above was made before the message's time
            peeked: list[Any] = []
            deadline = time.monotonic() + 10
            while not peeked and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                peeked = await receiver.peek_messages(10, sequence_number=1)
            assert [(str(m), m.state, m.sequence_number) for m in peeked] == [
                ("at the topic", ServiceBusMessageState.ACTIVE, seq)
            ]
            assert dt.datetime.now(UTC) >= at
            (got,) = await _receive(receiver, 1)
            await receiver.complete_message(got)


async def test_dead_letter_and_receive_from_dead_letter_queue(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("deadletter") as sender:
            await sender.send_messages(ServiceBusMessage("poison"))
        async with client.get_queue_receiver("deadletter") as receiver:
            (msg,) = await _receive(receiver, 1)
            await receiver.dead_letter_message(msg, reason="Bad payload", error_description="not JSON")
        async with client.get_queue_receiver("deadletter", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            (dead,) = await _receive(dlq, 1)
            assert str(dead) == "poison"
            assert (dead.dead_letter_reason, dead.dead_letter_error_description) == ("Bad payload", "not JSON")
            assert dead.dead_letter_source == "deadletter"
            await dlq.complete_message(dead)


async def test_receive_and_delete(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("rad") as sender:
            await sender.send_messages([ServiceBusMessage(f"r{i}") for i in range(3)])
        async with client.get_queue_receiver("rad", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await _receive(receiver, 3)
            assert [str(m) for m in got] == ["r0", "r1", "r2"]
            assert all(m.lock_token is None or m.locked_until_utc is None for m in got)
            assert await receiver.peek_messages(5, sequence_number=1) == []


async def test_batch_send(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("batch") as sender:
            batch = await sender.create_message_batch()
            for i in range(25):
                batch.add_message(ServiceBusMessage(f"b{i}"))
            assert len(batch) == 25
            await sender.send_messages(batch)
        async with client.get_queue_receiver(
            "batch", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive(receiver, 25)
            assert [str(m) for m in got] == [f"b{i}" for i in range(25)]
            seqs = [m.sequence_number for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == 25


async def test_message_properties_round_trip(cs: str) -> None:
    when = dt.datetime(2025, 6, 7, 8, 9, 10, 123000, tzinfo=UTC)
    ident = uuid.uuid4()
    app = {"str": "text", "int": 42, "neg": -7, "float": 2.5, "true": True, "false": False,
           "bytes": b"\x00\x01", "uuid": ident, "datetime": when}
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("props") as sender:
            await sender.send_messages(ServiceBusMessage(
                "with properties", application_properties=app, message_id="mid-42", correlation_id="corr-1",
                subject="the subject", content_type="application/json", time_to_live=dt.timedelta(minutes=5),
                to="destination", reply_to="reply-queue",
            ))
        async with client.get_queue_receiver("props") as receiver:
            (msg,) = await _receive(receiver, 1)
            await receiver.complete_message(msg)
    assert str(msg) == "with properties"
    assert (msg.message_id, msg.correlation_id, msg.subject) == ("mid-42", "corr-1", "the subject")
    assert (msg.content_type, msg.to, msg.reply_to) == ("application/json", "destination", "reply-queue")
    assert msg.time_to_live == dt.timedelta(minutes=5)
    got = msg.application_properties
    # the SDK hands keys and strings back as bytes, and timestamps as epoch milliseconds
    assert got[b"str"] == b"text" and got[b"bytes"] == b"\x00\x01"
    assert got[b"int"] == 42 and got[b"neg"] == -7 and got[b"float"] == 2.5
    assert got[b"true"] is True and got[b"false"] is False
    assert got[b"uuid"] == ident
    stamp = got[b"datetime"]
    assert (stamp if isinstance(stamp, int) else int(stamp.timestamp() * 1000)) == int(when.timestamp() * 1000)


# -- AmqpAnnotatedMessage bodies (issue 14: a map with binary keys crashed the decoder) ---------


def _typed(kind: str, value: object) -> dict[str, object]:
    """An explicitly typed AMQP value, as the SDK's encoder takes it."""
    return {"TYPE": kind, "VALUE": value}


async def test_amqp_annotated_message_bodies_round_trip(cs: str) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    rich = {
        b"binary key": {b"nested": [1, b"x", {b"deeper": None}, [[]]]},
        "string key": "text",
        7: [1.5, True, False],
        "timestamp": when,
        "uuid": ident,
        "symbol": _typed("SYMBOL", b"a-symbol"),
        "ubyte": _typed("UBYTE", 200),
        "ushort": _typed("USHORT", 60000),
        "uint": _typed("UINT", 4_000_000_000),
        "ulong": _typed("ULONG", 2**63),
        "byte": _typed("BYTE", -100),
        "short": _typed("SHORT", -30000),
        "long": _typed("LONG", -(2**40)),
        "float": _typed("FLOAT", 0.5),
        "array": _typed("ARRAY", [1, 2, 3]),
        "described": (b"com.example:thing", "v"),
    }
    expected_rich = {
        b"binary key": {b"nested": [1, b"x", {b"deeper": None}, [[]]]},
        b"string key": b"text",
        7: [1.5, True, False],
        b"timestamp": int(when.timestamp() * 1000),
        b"uuid": ident,
        b"symbol": b"a-symbol",
        b"ubyte": 200,
        b"ushort": 60000,
        b"uint": 4_000_000_000,
        b"ulong": 2**63,
        b"byte": -100,
        b"short": -30000,
        b"long": -(2**40),
        b"float": 0.5,
        b"array": [1, 2, 3],
        b"described": b"v",
    }
    sent = [
        AmqpAnnotatedMessage(value_body={b"key": 1}),  # the sample's body, which hung the send
        AmqpAnnotatedMessage(value_body=rich),
        AmqpAnnotatedMessage(value_body=[[1, [2, [3]]], {b"a": b"b"}]),
        AmqpAnnotatedMessage(value_body="just a string"),
        AmqpAnnotatedMessage(sequence_body=[[1, {b"k": 2}], [_typed("SYMBOL", b"s")]]),
        AmqpAnnotatedMessage(data_body=[b"first", b"\x00Sw\xa1\x01x"]),
        AmqpAnnotatedMessage(
            data_body=b"with everything", header={"priority": 3},
            annotations={"x-custom": "annotation"}, application_properties={"k": "v"},
            properties={"subject": "annotated", "message_id": "ann-1"},
        ),
    ]
    async with servicebus_client(connection_string=cs, retry_total=0) as client:
        async with client.get_queue_sender("annotated") as sender:
            for message in sent:
                # at once: an undecoded send used to hang until the SDK's timeout
                await asyncio.wait_for(sender.send_messages(message), 10)
        async with client.get_queue_receiver("annotated") as peeker:
            # peek hands the stored bytes back through the management link
            peeked = await peeker.peek_messages(len(sent) + 1)
            assert [p.body for p in peeked[:3]] == [{b"key": 1}, expected_rich, [[1, [2, [3]]], {b"a": b"b"}]]
        async with client.get_queue_receiver(
            "annotated", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive(receiver, len(sent))
    assert len(got) == len(sent)
    key, value, nested, text, sequence, data, full = got
    assert value.body_type == AmqpMessageBodyType.VALUE
    assert key.body == {b"key": 1}
    assert value.body == expected_rich
    assert nested.body == [[1, [2, [3]]], {b"a": b"b"}]
    assert text.body == b"just a string" or text.body == "just a string"
    assert sequence.body_type == AmqpMessageBodyType.SEQUENCE
    assert list(sequence.body) == [[1, {b"k": 2}], [b"s"]]
    assert data.body_type == AmqpMessageBodyType.DATA
    assert list(data.body) == [b"first", b"\x00Sw\xa1\x01x"]
    assert b"".join(full.body) == b"with everything"
    assert full.raw_amqp_message.header.priority == 3
    assert full.raw_amqp_message.annotations[b"x-custom"] == b"annotation"
    assert full.application_properties == {b"k": b"v"}
    assert (full.subject, full.message_id) == ("annotated", "ann-1")


# -- lock renewal (issue 14: concurrent renewals closed the connection) ------------------------


async def test_concurrent_lock_renewals_on_one_receiver(cs: str) -> None:
    """Several renew-lock requests in flight at once go out with the same delivery-id (an SDK
    race); each must be answered, and the connection must stay up for what follows."""
    async with servicebus_client(connection_string=cs, retry_total=0) as client:
        async with client.get_queue_sender("concurrent") as sender:
            await sender.send_messages([ServiceBusMessage(f"c{i}") for i in range(8)])
        async with client.get_queue_receiver("concurrent") as receiver:
            msgs = await _receive(receiver, 8)
            assert len(msgs) == 8
            for _ in range(3):
                before = [m.locked_until_utc for m in msgs]
                await asyncio.sleep(0.05)
                renewed = await asyncio.wait_for(
                    asyncio.gather(*(receiver.renew_message_lock(m) for m in msgs)), 20
                )
                assert all(new > old for new, old in zip(renewed, before, strict=True))
            # settlement over the receive link and the management link both still work
            await asyncio.gather(*(receiver.complete_message(m) for m in msgs[:4]))
            for msg in msgs[4:]:
                await receiver.complete_message(msg)
            assert await receiver.peek_messages(10, sequence_number=1) == []


async def test_concurrent_sends_on_one_sender(cs: str) -> None:
    """Tasks sharing one sender (the SDK serialises these sends, so their delivery-ids are in
    order): the frame fixer must leave them, and their dispositions, alone."""
    async with servicebus_client(connection_string=cs, retry_total=0) as client:
        async with client.get_queue_sender("concurrent") as sender:
            await asyncio.wait_for(asyncio.gather(
                *(sender.send_messages(ServiceBusMessage(f"s{i}")) for i in range(10))
            ), 30)
            await sender.send_messages(ServiceBusMessage("last"))
        async with client.get_queue_receiver(
            "concurrent", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive(receiver, 11)
    assert sorted(str(m) for m in got) == sorted([f"s{i}" for i in range(10)] + ["last"])


@pytest.mark.slow  # holds the messages past a 5 s lock; the concurrency itself is tested just above
async def test_auto_lock_renewer_keeps_several_messages_locked(cs: str) -> None:
    """Microsoft's auto_lock_renew sample, with six messages held past their 5 s lock.

    (The SDK's renewer polls once a second and renews at 75 % of the lock's whole seconds, so it
    cannot keep locks much shorter than Azure's 5 s minimum, against Azure or the emulator.)"""
    failures: list[BaseException | None] = []

    async def on_failure(_renewable: Any, error: BaseException | None) -> None:
        failures.append(error)

    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("renew") as sender, client.get_queue_receiver("renew") as receiver:
            await sender.send_messages([ServiceBusMessage(f"slow {i}") for i in range(6)])
            msgs = await _receive(receiver, 6)
            assert len(msgs) == 6
            original = [m.locked_until_utc for m in msgs]
            async with AutoLockRenewer(max_lock_renewal_duration=30, on_lock_renew_failure=on_failure) as renewer:
                for msg in msgs:
                    renewer.register(receiver, msg)
                await asyncio.sleep(6.5)  # past the 5 s lock
                assert failures == []
                assert all(m.locked_until_utc > orig + dt.timedelta(seconds=2)
                           for m, orig in zip(msgs, original, strict=True))
                assert all(m.locked_until_utc > dt.datetime.now(UTC) for m in msgs)
                for msg in msgs:
                    await receiver.complete_message(msg)
            assert failures == []
            # the same receiver (same connection) still works
            await sender.send_messages(ServiceBusMessage("after"))
            (after,) = await _receive(receiver, 1)
            assert str(after) == "after" and after.delivery_count == 0
            await receiver.complete_message(after)


# -- locks of a closed receiver (issue 14: they were released at once) -------------------------


async def test_closed_receiver_keeps_locks_until_they_expire(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("closed") as sender:
            await sender.send_messages([ServiceBusMessage(f"held {i}") for i in range(3)])
        async with client.get_queue_receiver("closed") as receiver:
            held = await _receive(receiver, 3)
            assert len(held) == 3
        locked_until = max(m.locked_until_utc for m in held)
        # closed without settling: as on Azure the messages stay locked until locked_until ...
        async with client.get_queue_receiver("closed") as receiver:
            early = await receiver.receive_messages(max_message_count=3, max_wait_time=0.5)
            assert early == [], "a closed receiver's locks were released before locked_until"
            got = await _receive(receiver, 3, wait=8)
            # ... then the lock expiry counts as a delivery and they come back
            assert dt.datetime.now(UTC) >= locked_until
            assert sorted(str(m) for m in got) == ["held 0", "held 1", "held 2"]
            assert [m.delivery_count for m in got] == [1, 1, 1]
            for msg in got:
                await receiver.complete_message(msg)


async def test_closed_receiver_lock_expiry_reaches_max_delivery_count(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("closedmax") as sender:
            await sender.send_messages(ServiceBusMessage("once only"))
        async with client.get_queue_receiver("closedmax") as receiver:
            (msg,) = await _receive(receiver, 1)
        async with client.get_queue_receiver(
            "closedmax", sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            (dead,) = await _receive(dlq, 1, wait=8)
            assert dt.datetime.now(UTC) >= msg.locked_until_utc
            assert str(dead) == "once only"
            assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert dead.delivery_count == 1
            await dlq.complete_message(dead)
        async with client.get_queue_receiver("closedmax") as receiver:
            assert await receiver.peek_messages(5, sequence_number=1) == []


async def test_abandon_releases_at_once_and_counts(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("abandoned") as sender:
            await sender.send_messages(ServiceBusMessage("try again"))
        async with client.get_queue_receiver("abandoned") as receiver:
            (msg,) = await _receive(receiver, 1)
            await receiver.abandon_message(msg)
            started = time.monotonic()
            (again,) = await _receive(receiver, 1)
            assert time.monotonic() - started < 5  # not after the 30 s lock
            assert str(again) == "try again" and again.delivery_count == 1
            await receiver.complete_message(again)


# -- administration client ----------------------------------------------------------------------


async def test_admin_client_crud(cs: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    queue, topic = f"adm-q-{suffix}", f"adm-t-{suffix}"
    async with admin_client(connection_string=cs) as admin:
        created = await admin.create_queue(queue, lock_duration=dt.timedelta(seconds=45), max_delivery_count=4)
        assert created.name == queue and created.max_delivery_count == 4
        props = await admin.get_queue(queue)
        assert props.lock_duration == dt.timedelta(seconds=45)
        props.max_delivery_count = 6
        await admin.update_queue(props)
        assert (await admin.get_queue(queue)).max_delivery_count == 6
        assert queue in [q.name async for q in admin.list_queues()]

        await admin.create_topic(topic)
        await admin.create_subscription(topic, "sub")
        await admin.create_rule(topic, "sub", "only-red", filter=SqlRuleFilter("color = 'red'"))
        await admin.delete_rule(topic, "sub", "$Default")
        rules = [r.name async for r in admin.list_rules(topic, "sub")]
        assert rules == ["only-red"]
        assert [s.name async for s in admin.list_subscriptions(topic)] == ["sub"]

        async with servicebus_client(connection_string=cs) as client:
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages([ServiceBusMessage("q1"), ServiceBusMessage("q2")])
            async with client.get_topic_sender(topic) as sender:
                await sender.send_messages([
                    ServiceBusMessage("red", application_properties={"color": "red"}),
                    ServiceBusMessage("blue", application_properties={"color": "blue"}),
                ])
        runtime = await admin.get_queue_runtime_properties(queue)
        assert runtime.active_message_count == 2
        sub_runtime = await admin.get_subscription_runtime_properties(topic, "sub")
        assert sub_runtime.active_message_count == 1

        await admin.delete_subscription(topic, "sub")
        await admin.delete_topic(topic)
        await admin.delete_queue(queue)
        assert queue not in [q.name async for q in admin.list_queues()]
        assert topic not in [t.name async for t in admin.list_topics()]


# -- an undecodable transfer -------------------------------------------------------------------


async def test_undecodable_transfer_is_rejected_at_once(samples_emulator: EmulatorProcess, cs: str) -> None:
    """No SDK sends this, so a bare proton client does: a transfer that is not an AMQP message
    gets a rejected outcome with a condition, a description and info; the connection stays up."""
    port = samples_emulator.port_of("samples")
    conn = Connection()
    conn.hostname = "localhost"
    transport = Transport()
    transport.sasl().allowed_mechs("ANONYMOUS")
    transport.bind(conn)
    conn.collect(Collector())
    conn.open()
    session = conn.session()
    session.open()
    cbs_out = session.sender("cbs-out")
    cbs_out.target.address = "$cbs"
    cbs_in = session.receiver("cbs-in")
    cbs_in.source.address = "$cbs"
    for link in (cbs_out, cbs_in):
        link.open()
    cbs_in.flow(5)
    uri = f"sb://localhost:{port}/raw"
    put = Message(
        id=uuid.uuid4(), reply_to="$cbs", body=sas_token(uri, "RootManageSharedAccessKey", "SAS_KEY_VALUE",
                                                         int(time.time()) + 600),
        properties={"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": uri},
    )

    with socket.create_connection(("127.0.0.1", port)) as sock:

        def pump(until: Any, timeout: float = 5.0) -> bool:
            deadline = time.monotonic() + timeout
            sock.settimeout(0.05)
            while time.monotonic() < deadline:
                while (pending := transport.pending()) > 0:
                    sock.sendall(transport.peek(pending))
                    transport.pop(pending)
                if until():
                    return True
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return until()
                transport.push(data)
            return until()

        assert pump(lambda: cbs_out.credit > 0)
        cbs_out.delivery(b"put-token")
        cbs_out.send(put.encode())
        cbs_out.advance()
        assert pump(lambda: cbs_in.current is not None and not cbs_in.current.partial), "no put-token reply"
        reply = Message()
        reply.decode(cbs_in.recv(cbs_in.current.pending))
        assert reply.properties["status-code"] == 200

        sender = session.sender("raw-sender")
        sender.target.address = f"amqps://localhost:{port}/raw"
        sender.open()
        assert pump(lambda: sender.credit > 0), "the entity link was not attached"
        junk = sender.delivery(b"junk")
        sender.send(b"\x00Sw\xff\xff\xff")  # a value section with a constructor that does not exist
        sender.advance()
        assert pump(lambda: junk.remote_state != 0, timeout=5), "the undecodable transfer was never settled"
        assert junk.remote_state == Disposition.REJECTED
        condition = junk.remote.condition
        assert condition is not None and condition.name == "amqp:decode-error"
        assert "malformed" in (condition.description or "")
        assert condition.info  # the SDK reads [condition, description, info] by index

        good = sender.delivery(b"good")
        sender.send(Message(body="after the junk").encode())
        sender.advance()
        assert pump(lambda: good.remote_state != 0)
        assert good.remote_state == Disposition.ACCEPTED
        assert conn.state & Endpoint.REMOTE_ACTIVE and not conn.state & Endpoint.REMOTE_CLOSED

    # the good message sent after the junk arrived intact
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("raw", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await _receive(receiver, 1, wait=3)
    assert [m.body for m in got] == [b"after the junk"]


# -- sessions (samples/*/session_send_receive*.py, session_pool_receive*.py) ---------------------


def _session_messages(session_id: str) -> tuple[ServiceBusMessage, list[ServiceBusMessage], list[ServiceBusMessage]]:
    """What session_send_receive sends: one message, a list of five, a batch of ten."""
    single = ServiceBusMessage("single", session_id=session_id)
    listed = [ServiceBusMessage(f"list {i}", session_id=session_id) for i in range(5)]
    batched = [ServiceBusMessage(f"batch {i}", session_id=session_id) for i in range(10)]
    return single, listed, batched


EXPECTED_SESSION_BODIES = ["single", *(f"list {i}" for i in range(5)), *(f"batch {i}" for i in range(10))]


async def test_session_send_receive(cs: str) -> None:
    single, listed, batched = _session_messages("sample-session")
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("session") as sender:
            await sender.send_messages(single)
            await sender.send_messages(listed)
            batch = await sender.create_message_batch()
            for msg in batched:
                batch.add_message(msg)
            await sender.send_messages(batch)
        async with client.get_queue_receiver("session", session_id="sample-session", max_wait_time=5) as receiver:
            session = receiver.session
            await session.set_state("START")
            assert await session.get_state() == b"START"
            got = await _receive(receiver, 16, wait=8)
            assert [str(m) for m in got] == EXPECTED_SESSION_BODIES
            for msg in got:
                await receiver.complete_message(msg)
                await session.renew_lock()
            await session.set_state("END")
            assert await session.get_state() == b"END"
            assert await receiver.receive_messages(max_wait_time=1) == []


def test_session_send_receive_sync(cs: str) -> None:
    single, listed, batched = _session_messages("sync-session")
    with SyncServiceBusClient.from_connection_string(cs) as client:
        with client.get_queue_sender("syncsession") as sender:
            sender.send_messages(single)
            sender.send_messages(listed)
            batch = sender.create_message_batch()
            for msg in batched:
                batch.add_message(msg)
            sender.send_messages(batch)
        with client.get_queue_receiver("syncsession", session_id="sync-session", max_wait_time=5) as receiver:
            session = receiver.session
            session.set_state("START")
            assert session.get_state() == b"START"
            got: list[Any] = []
            deadline = time.monotonic() + 8
            while len(got) < 16 and time.monotonic() < deadline:
                got += receiver.receive_messages(max_message_count=16 - len(got), max_wait_time=1)
            assert [str(m) for m in got] == EXPECTED_SESSION_BODIES
            for msg in got:
                receiver.complete_message(msg)
                session.renew_lock()
            session.set_state("END")
            assert session.get_state() == b"END"


POOL_SESSIONS = [f"pool-{i}" for i in range(4)]
POOL_MESSAGES = 5


def _pool_messages() -> list[ServiceBusMessage]:
    """Each session: five numbered messages, then "shutdown" (as session_pool_receive sends)."""
    return [ServiceBusMessage(body, session_id=sid)
            for sid in POOL_SESSIONS for body in [*(f"{sid}:{i}" for i in range(POOL_MESSAGES)), "shutdown"]]


def _check_pool(processed: dict[str, list[str]], holders: dict[str, str]) -> None:
    assert sorted(holders) == POOL_SESSIONS  # every session was taken once, by one worker
    assert {sid: bodies for sid, bodies in processed.items()} == {
        sid: [*(f"{sid}:{i}" for i in range(POOL_MESSAGES)), "shutdown"] for sid in POOL_SESSIONS}


async def test_session_pool_receive(cs: str) -> None:
    """Concurrent workers on NEXT_AVAILABLE_SESSION, each session's lock kept by an AutoLockRenewer,
    its state set to OPEN and then CLOSED, until no session is left (OperationTimeoutError)."""
    processed: dict[str, list[str]] = {}
    holders: dict[str, str] = {}

    async def worker(name: str) -> None:
        async with servicebus_client(connection_string=cs, retry_total=0) as client:
            while True:
                try:
                    receiver = client.get_queue_receiver("sessionpool", session_id=NEXT_AVAILABLE_SESSION,
                                                         max_wait_time=5)
                    async with receiver, AutoLockRenewer() as renewer:
                        renewer.register(receiver, receiver.session)
                        sid = receiver.session.session_id
                        assert sid not in holders, f"{sid} handed out twice"
                        holders[sid] = name
                        await receiver.session.set_state("OPEN")
                        async for message in receiver:
                            processed.setdefault(sid, []).append(str(message))
                            await receiver.complete_message(message)
                            if str(message) == "shutdown":
                                await receiver.session.set_state("CLOSED")
                                break
                except OperationTimeoutError:
                    return  # no non-empty session left

    async with servicebus_client(connection_string=cs) as client, client.get_queue_sender("sessionpool") as sender:
        await sender.send_messages(_pool_messages())
    await asyncio.wait_for(asyncio.gather(*(worker(f"w{i}") for i in range(3))), timeout=120)
    _check_pool(processed, holders)
    assert len(set(holders.values())) > 1  # the sessions were shared out between the workers
    async with servicebus_client(connection_string=cs) as client:
        for sid in POOL_SESSIONS:
            async with client.get_queue_receiver("sessionpool", session_id=sid) as receiver:
                assert await receiver.session.get_state() == b"CLOSED"


def test_session_pool_receive_sync(cs: str) -> None:
    """The sync sample: the same workers in a thread pool (concurrent.futures), one client each."""
    processed: dict[str, list[str]] = {}
    holders: dict[str, str] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        with SyncServiceBusClient.from_connection_string(cs, retry_total=0) as client:
            while True:
                try:
                    with client.get_queue_receiver("syncsessionpool", session_id=NEXT_AVAILABLE_SESSION,
                                                   max_wait_time=5) as receiver:
                        renewer = SyncAutoLockRenewer()
                        renewer.register(receiver, receiver.session)
                        sid = receiver.session.session_id
                        with lock:
                            assert sid not in holders, f"{sid} handed out twice"
                            holders[sid] = name
                        receiver.session.set_state("OPEN")
                        for message in receiver:
                            with lock:
                                processed.setdefault(sid, []).append(str(message))
                            receiver.complete_message(message)
                            if str(message) == "shutdown":
                                receiver.session.set_state("CLOSED")
                                break
                        renewer.close()
                except OperationTimeoutError:
                    return

    with SyncServiceBusClient.from_connection_string(cs) as client, client.get_queue_sender("syncsessionpool") as sender:
        sender.send_messages(_pool_messages())
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(worker, f"w{i}") for i in range(3)]:
            done.result(timeout=120)
    _check_pool(processed, holders)


async def test_auto_lock_renewer_keeps_a_session_locked(cs: str) -> None:
    """The session half of the auto_lock_renew sample: a session held past its 5 s lock."""
    failures: list[BaseException | None] = []

    async def on_failure(_renewable: Any, error: BaseException | None) -> None:
        failures.append(error)

    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("sessionrenew") as sender:
            await sender.send_messages([ServiceBusMessage(f"held {i}", session_id="renewed") for i in range(3)])
        async with client.get_queue_receiver("sessionrenew", session_id="renewed") as receiver:
            async with AutoLockRenewer(max_lock_renewal_duration=30, on_lock_renew_failure=on_failure) as renewer:
                renewer.register(receiver, receiver.session)
                original = receiver.session.locked_until_utc
                msgs = await _receive(receiver, 3)
                await asyncio.sleep(6.5)  # past the 5 s session lock
                assert failures == [] and not receiver.session.auto_renew_error
                assert receiver.session.locked_until_utc > original + dt.timedelta(seconds=2)
                for msg in msgs:
                    await receiver.complete_message(msg)  # still under the (renewed) session lock
            assert [str(m) for m in msgs] == ["held 0", "held 1", "held 2"]


async def test_list_sessions(cs: str) -> None:
    """The client's session listing: sessions with messages or a state."""
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("sessionlist") as sender:
            await sender.send_messages([ServiceBusMessage("m", session_id=sid) for sid in ("l1", "l2")])
        async with client.get_queue_receiver("sessionlist", session_id="l3") as receiver:
            before = dt.datetime.now(UTC)
            await receiver.session.set_state("only a state")
        assert sorted([sid async for sid in client.list_queue_sessions("sessionlist")]) == ["l1", "l2", "l3"]
        recent = [sid async for sid in client.list_queue_sessions("sessionlist",
                                                             state_updated_after=before - dt.timedelta(seconds=1))]
        assert recent == ["l3"]
