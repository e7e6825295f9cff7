"""Sessions (``RequiresSession``) over the unmodified azure-servicebus SDK (aio), against a real
emulator process: session receivers for a named session and for ``NEXT_AVAILABLE_SESSION``,
session locks (renew, expiry, competing receivers), session state, FIFO within a session under
concurrency, peek within a session, and the refusals Azure answers with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator
from tests.support.receiving import receive as _receive


def _queue(name: str, **props: object) -> dict[str, Any]:
    return {"Name": name, "Properties": {"RequiresSession": True, **props}}


CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sessions",
                "Queues": [
                    _queue("named"),
                    _queue("competing"),
                    _queue("fifo"),
                    _queue("state"),
                    _queue("expiry", LockDuration="PT2S"),
                    _queue("renewed", LockDuration="PT3S"),
                    _queue("locked"),
                    _queue("empty"),
                    _queue("nosession"),
                    _queue("peek"),
                    _queue("closing", LockDuration="PT30S"),
                    _queue("deferring"),
                    {"Name": "plain", "Properties": {}},
                ],
                "Topics": [
                    {"Name": "orders", "Subscriptions": [
                        {"Name": "bysession", "Properties": {"RequiresSession": True}},
                        {"Name": "all"},
                    ]},
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("sessions"), CONFIG) as proc:
        yield proc


@pytest.fixture
def cs(emulator: EmulatorProcess) -> str:
    return emulator.connection_string("sessions")


async def _send(cs: str, queue: str, *messages: ServiceBusMessage) -> None:
    async with servicebus_client(connection_string=cs) as client, client.get_queue_sender(queue) as sender:
        await sender.send_messages(list(messages))


async def test_named_session_receives_only_its_messages_in_order(cs: str) -> None:
    await _send(cs, "named", *[ServiceBusMessage(f"{sid}-{i}", session_id=sid) for i in range(5) for sid in ("a", "b")])
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("named", session_id="b") as receiver:
            session = receiver.session
            assert session.session_id == "b"
            assert session.locked_until_utc is not None and not session._lock_expired  # noqa: SLF001
            got = await _receive(receiver, 6, wait=3)
            assert [str(m) for m in got] == [f"b-{i}" for i in range(5)]
            assert {m.session_id for m in got} == {"b"}
            seqs = [m.sequence_number for m in got]
            assert seqs == sorted(seqs)
            for msg in got:
                await receiver.complete_message(msg)
        async with client.get_queue_receiver("named", session_id="a") as receiver:
            got = await _receive(receiver, 5)
            assert [str(m) for m in got] == [f"a-{i}" for i in range(5)]
            for msg in got:
                await receiver.complete_message(msg)


async def test_next_available_session_picks_a_session_with_messages(cs: str) -> None:
    await _send(cs, "competing", ServiceBusMessage("only", session_id="the-one"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("competing", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
            got = await _receive(receiver, 1)
            assert receiver.session.session_id == "the-one"
            assert [str(m) for m in got] == ["only"]
            await receiver.complete_message(got[0])


#: the SDK retries a timed-out or refused session attach (3 times by default), against Azure too;
#: tests that expect one ask for no retries to stay short
NO_RETRY = {"retry_total": 0}


async def test_two_receivers_on_next_available_session_never_share_a_session(cs: str) -> None:
    sessions = [f"s{i}" for i in range(6)]
    await _send(cs, "competing", *[ServiceBusMessage(f"{sid}:{i}", session_id=sid) for sid in sessions for i in range(3)])
    seen: dict[str, list[str]] = defaultdict(list)  # receiver name -> sessions it held
    got: dict[str, list[str]] = defaultdict(list)  # session -> bodies

    async def worker(name: str) -> None:
        async with servicebus_client(connection_string=cs, **NO_RETRY) as client:
            while True:
                try:
                    receiver = client.get_queue_receiver("competing", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2)
                    async with receiver:
                        sid = receiver.session.session_id
                        seen[name].append(sid)
                        for msg in await _receive(receiver, 3, wait=15):  # all 3: a session is held once
                            got[sid].append(str(msg))
                            await receiver.complete_message(msg)
                            await asyncio.sleep(0.05)  # hold the session a while: the other receiver must skip it
                except OperationTimeoutError:
                    return  # no session left

    await asyncio.wait_for(asyncio.gather(worker("r1"), worker("r2")), timeout=90)
    assert sorted(seen["r1"] + seen["r2"]) == sessions  # each session was held by exactly one receiver, once
    assert seen["r1"] and seen["r2"]  # both worked
    assert {sid: bodies for sid, bodies in got.items()} == {sid: [f"{sid}:{i}" for i in range(3)] for sid in sessions}


async def test_order_within_a_session_holds_under_concurrency(cs: str) -> None:
    """Four senders send concurrently to eight sessions; four receivers take sessions as they come
    and abandon some messages on the way: each session still arrives in the order it was sent."""
    sessions = [f"k{i}" for i in range(8)]
    per_session = 12

    async def sender(part: int) -> None:
        async with servicebus_client(connection_string=cs) as client, client.get_queue_sender("fifo") as snd:
            for sid in sessions[part::4]:
                for i in range(per_session):
                    await snd.send_messages(ServiceBusMessage(str(i), session_id=sid))

    completed: dict[str, list[int]] = defaultdict(list)
    abandoned: set[tuple[str, int]] = set()

    async def receiver() -> None:
        async with servicebus_client(connection_string=cs, **NO_RETRY) as client:
            while sum(len(v) for v in completed.values()) < len(sessions) * per_session:
                try:
                    async with client.get_queue_receiver("fifo", session_id=NEXT_AVAILABLE_SESSION,
                                                         max_wait_time=2) as rcv:
                        sid = rcv.session.session_id
                        for msg in await _receive(rcv, 5, wait=2):
                            i = int(str(msg))
                            if i % 5 == 2 and (sid, i) not in abandoned:
                                abandoned.add((sid, i))
                                await rcv.abandon_message(msg)  # comes back first: nothing after it was completed
                                break
                            completed[sid].append(i)
                            await rcv.complete_message(msg)
                except OperationTimeoutError:
                    continue

    await asyncio.gather(*(sender(p) for p in range(4)))
    await asyncio.wait_for(asyncio.gather(*(receiver() for _ in range(4))), timeout=120)
    assert dict(completed) == {sid: list(range(per_session)) for sid in sessions}
    assert abandoned  # the abandon path was exercised


async def test_session_state_get_set_and_clear(cs: str) -> None:
    await _send(cs, "state", ServiceBusMessage("x", session_id="st"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("state", session_id="st") as receiver:
            assert await receiver.session.get_state() is None
            await receiver.session.set_state("step-1")
            assert await receiver.session.get_state() == b"step-1"
            await receiver.session.set_state(b"\x00\x01binary")
        async with client.get_queue_receiver("state", session_id="st") as receiver:
            assert await receiver.session.get_state() == b"\x00\x01binary"  # kept across receivers
            await receiver.session.set_state(None)
            assert await receiver.session.get_state() is None


async def test_session_lock_expiry_is_reported_as_session_lock_lost(cs: str) -> None:
    await _send(cs, "expiry", ServiceBusMessage("slow", session_id="e1"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("expiry", session_id="e1") as receiver:
            (msg,) = await _receive(receiver, 1)
            assert msg.delivery_count == 0
            await asyncio.sleep(3)  # the 2 s session lock runs out
            with pytest.raises(SessionLockLostError):
                await receiver.complete_message(msg)
            with pytest.raises(SessionLockLostError):
                await receiver.session.renew_lock()
            # the SDK checks the expiry it was told before asking; make it ask, to see that the broker
            # answers the same (com.microsoft:session-lock-lost), not only the client
            receiver.session._locked_until_utc = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # noqa: SLF001
            with pytest.raises(SessionLockLostError) as from_broker:
                await receiver.session.renew_lock()
            assert "session lock has expired" in str(from_broker.value)
            with pytest.raises(SessionLockLostError):
                await receiver.session.get_state()
        # the broker released the session: another receiver takes it, the message counts a failed delivery
        async with client.get_queue_receiver("expiry", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
            assert receiver.session.session_id == "e1"
            (again,) = await _receive(receiver, 1)
            assert str(again) == "slow" and again.delivery_count == 1
            await receiver.complete_message(again)


async def test_renewing_the_session_lock_keeps_the_session_and_its_messages(cs: str) -> None:
    await _send(cs, "renewed", ServiceBusMessage("kept", session_id="r1"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("renewed", session_id="r1") as receiver:
            (msg,) = await _receive(receiver, 1)
            first = receiver.session.locked_until_utc
            for _ in range(3):
                await asyncio.sleep(1.2)
                until = await receiver.session.renew_lock()
            assert until > first
            await receiver.complete_message(msg)  # 3.6 s after receipt, past the first 3 s lock
        async with client.get_queue_receiver("renewed", session_id="r1") as receiver:
            assert await _receive(receiver, 1, wait=1) == []  # completed for good


async def test_a_named_session_locked_by_another_receiver_cannot_be_locked(cs: str) -> None:
    await _send(cs, "locked", ServiceBusMessage("x", session_id="busy"))
    async with servicebus_client(connection_string=cs, **NO_RETRY) as client:
        async with client.get_queue_receiver("locked", session_id="busy") as holder:
            with pytest.raises(SessionCannotBeLockedError) as refused:
                async with client.get_queue_receiver("locked", session_id="busy") as other:
                    await other.receive_messages(max_wait_time=1)
            assert "busy" in str(refused.value)
            # the next available session is not the locked one either
            with pytest.raises(OperationTimeoutError):
                async with client.get_queue_receiver("locked", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2) as nxt:
                    await nxt.receive_messages(max_wait_time=1)
            (msg,) = await _receive(holder, 1)
            await holder.complete_message(msg)


async def test_next_available_session_with_none_available_times_out(cs: str) -> None:
    async with servicebus_client(connection_string=cs, **NO_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError):
            async with client.get_queue_receiver("empty", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2) as r:
                await r.receive_messages(max_wait_time=1)
        assert time.monotonic() - started < 30


async def test_a_waiting_receiver_gets_a_session_sent_while_it_waits(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        receiver = client.get_queue_receiver("empty", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=10)

        async def late_send() -> None:
            await asyncio.sleep(1)
            await _send(cs, "empty", ServiceBusMessage("late", session_id="late"))

        sending = asyncio.create_task(late_send())
        async with receiver:
            got = await _receive(receiver, 1, wait=10)
            assert receiver.session.session_id == "late"
            assert [str(m) for m in got] == ["late"]
            await receiver.complete_message(got[0])
        await sending


async def test_a_message_without_a_session_id_is_refused_by_a_session_queue(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client, client.get_queue_sender("nosession") as sender:
        with pytest.raises(ServiceBusError) as refused:
            await sender.send_messages(ServiceBusMessage("no session"))
        assert "The SessionId was not set on a message" in str(refused.value)
        # a batch with one such message is refused whole
        with pytest.raises(ServiceBusError):
            await sender.send_messages([ServiceBusMessage("ok", session_id="s"), ServiceBusMessage("no session")])
        await sender.send_messages(ServiceBusMessage("with session", session_id="s"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("nosession", session_id="s") as receiver:
            got = await _receive(receiver, 2, wait=2)
            assert [str(m) for m in got] == ["with session"]
            await receiver.complete_message(got[0])


async def test_receivers_that_do_not_match_the_entity_are_refused(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        with pytest.raises(ServiceBusError) as plain:
            async with client.get_queue_receiver("nosession", max_wait_time=1) as receiver:
                await receiver.receive_messages(max_wait_time=1)
        assert "requires sessions" in str(plain.value) and "amqp:not-allowed" in str(plain.value)
        with pytest.raises(ServiceBusError) as sessionful:
            async with client.get_queue_receiver("plain", session_id="s", max_wait_time=1) as receiver:
                await receiver.receive_messages(max_wait_time=1)
        assert "does not require sessions" in str(sessionful.value)


async def test_peek_within_a_session(cs: str) -> None:
    await _send(cs, "peek", *[ServiceBusMessage(f"{sid}{i}", session_id=sid) for i in range(3) for sid in ("p", "q")])
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("peek", session_id="q") as receiver:
            peeked = await receiver.peek_messages(max_message_count=10)
            assert [str(m) for m in peeked] == ["q0", "q1", "q2"]
            assert await receiver.peek_messages(max_message_count=10) == []  # the SDK peeks on from the last one
            got = await _receive(receiver, 3)
            assert [str(m) for m in got] == ["q0", "q1", "q2"]  # peek neither locked nor removed
            for msg in got:
                await receiver.complete_message(msg)


async def test_closing_a_session_receiver_releases_the_session_and_its_messages(cs: str) -> None:
    await _send(cs, "closing", ServiceBusMessage("c0", session_id="c"), ServiceBusMessage("c1", session_id="c"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("closing", session_id="c") as receiver:
            got = await _receive(receiver, 1)
            assert [str(m) for m in got] == ["c0"]  # not settled
        async with client.get_queue_receiver("closing", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as receiver:
            got = await _receive(receiver, 2)
            assert [str(m) for m in got] == ["c0", "c1"]  # at once, in order (not after the 30 s lock)
            assert got[0].delivery_count == 1
            for msg in got:
                await receiver.complete_message(msg)


async def test_session_subscription_dead_letters_a_message_without_session_id(cs: str) -> None:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("orders") as sender:
            await sender.send_messages([ServiceBusMessage("with", session_id="o1"), ServiceBusMessage("without")])
        async with client.get_subscription_receiver("orders", "bysession", session_id="o1") as receiver:
            got = await _receive(receiver, 2, wait=2)
            assert [str(m) for m in got] == ["with"]
            await receiver.complete_message(got[0])
        async with client.get_subscription_receiver("orders", "bysession",
                                                    sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            (dead,) = await _receive(dlq, 1)
            assert str(dead) == "without" and dead.dead_letter_reason == "Session id is null."
            await dlq.complete_message(dead)
        async with client.get_subscription_receiver("orders", "all", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
            assert sorted(str(m) for m in await _receive(r, 2)) == ["with", "without"]


async def test_admin_api_creates_a_session_queue(cs: str) -> None:
    async with admin_client(connection_string=cs) as admin:
        await admin.create_queue("made-with-sessions", requires_session=True)
        props = await admin.get_queue("made-with-sessions")
        assert props.requires_session is True
        props.max_delivery_count = 7
        await admin.update_queue(props)  # the same RequiresSession: allowed
        props.requires_session = False
        with pytest.raises(Exception, match="RequiresSession"):
            await admin.update_queue(props)
    await _send(cs, "made-with-sessions", ServiceBusMessage("via admin", session_id="m"))
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("made-with-sessions", session_id=NEXT_AVAILABLE_SESSION,
                                             max_wait_time=5) as receiver:
            (msg,) = await _receive(receiver, 1)
            assert receiver.session.session_id == "m" and str(msg) == "via admin"
            await receiver.complete_message(msg)


async def test_deleting_the_entity_ends_a_wait_for_the_next_session(cs: str) -> None:
    async with admin_client(connection_string=cs) as admin:
        await admin.create_queue("deleted-while-waiting", requires_session=True)
        async with servicebus_client(connection_string=cs, **NO_RETRY) as client:
            receiver = client.get_queue_receiver("deleted-while-waiting", session_id=NEXT_AVAILABLE_SESSION,
                                                 max_wait_time=30)

            async def wait_for_a_session() -> None:
                async with receiver:
                    await receiver.receive_messages(max_wait_time=1)

            waiting = asyncio.create_task(wait_for_a_session())
            await asyncio.sleep(1)
            await admin.delete_queue("deleted-while-waiting")
            with pytest.raises(MessagingEntityNotFoundError):
                await asyncio.wait_for(waiting, 20)  # well before the end of its 30 s wait


async def test_defer_and_receive_deferred_within_a_session(cs: str) -> None:
    await _send(cs, "deferring", *[ServiceBusMessage(f"d{i}", session_id="d") for i in range(3)])
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_receiver("deferring", session_id="d") as receiver:
            first, *rest = await _receive(receiver, 3)
            await receiver.defer_message(first)
            for msg in rest:
                await receiver.complete_message(msg)
            (deferred,) = await receiver.receive_deferred_messages([first.sequence_number])
            assert str(deferred) == "d0" and deferred.session_id == "d"
            await receiver.complete_message(deferred)  # under the session lock, over the management link
            assert await receiver.peek_messages(max_message_count=5, sequence_number=1) == []
