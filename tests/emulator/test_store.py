"""MessageStore without I/O: a fake clock and fake consumers drive peek-lock, defer, TTL, DLQ."""

from __future__ import annotations

import pytest

from servicebus_emulator.config import parse_config
from servicebus_emulator.entities import Namespace
from servicebus_emulator.errors import LockLost, MessageNotFound, QuotaExceeded
from servicebus_emulator.store import (
    ACTIVE,
    DEFERRED,
    SCHEDULED,
    Entry,
    Message,
    MessageStore,
    StoreSettings,
    new_entry,
)

INF = float("inf")


class FakeConsumer:
    def __init__(self, credit: int = 100, receive_and_delete: bool = False):
        self.receive_and_delete = receive_and_delete
        self._credit = credit
        self.got: list[Entry] = []

    def credit(self) -> int:
        return self._credit

    def deliver(self, entry: Entry, store: MessageStore) -> None:
        self._credit -= 1
        self.got.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


def make(lock: float = 10.0, mdc: int = 3, dead_on_expiry: bool = False, max_bytes: int = 10_000):
    dlq = MessageStore("t/Subscriptions/s/$DeadLetterQueue", StoreSettings())
    store = MessageStore(
        "t/Subscriptions/s",
        StoreSettings(lock_duration=lock, max_delivery_count=mdc,
                      dead_lettering_on_expiration=dead_on_expiry, max_bytes=max_bytes),
        dlq,
    )
    return store, dlq, Clock()


_seq = iter(range(1, 1_000_000))


def put(store: MessageStore, now: float, ttl: float = INF, size: int = 10, mid: str = "m") -> Entry:
    msg = Message(message_id=mid, system={}, user={}, payload=mid, size=size, seq=next(_seq), enqueued_at=now)
    entry = new_entry(msg, ttl if ttl != INF else 1e13, now)
    store.add(entry, now)
    return entry


def test_peek_lock_complete() -> None:
    store, _, clock = make()
    c = FakeConsumer()
    store.attach(c, clock.now)
    e = put(store, clock.now)
    assert c.got == [e] and e.lock_token is not None and e.locked_until == clock.now + 10
    store.complete(e.lock_token, clock.now)
    assert store.active_count == 0 and store.size_bytes == 0
    with pytest.raises(LockLost):
        store.complete(e.lock_token or __import__("uuid").uuid4(), clock.now)


def test_lock_expiry_redelivers_with_count_then_dead_letters() -> None:
    store, dlq, clock = make(lock=5, mdc=2)
    c = FakeConsumer()
    store.attach(c, clock.now)
    e = put(store, clock.now)
    token = e.lock_token
    clock.now += 5.1
    store.tick(clock.now)
    assert len(c.got) == 2 and e.delivery_count == 1 and e.lock_token != token
    with pytest.raises(LockLost):
        store.complete(token, clock.now)  # type: ignore[arg-type]
    clock.now += 5.1
    store.tick(clock.now)
    assert store.active_count == 0 and len(c.got) == 2
    (dead,) = dlq.entries.values()
    assert dead.dead_letter is not None and dead.dead_letter[0] == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_source == "t/Subscriptions/s"


def test_release_is_not_a_delivery_attempt() -> None:
    store, _, clock = make()
    c = FakeConsumer(credit=1)
    store.attach(c, clock.now)
    e = put(store, clock.now)
    store.detach(c, clock.now)
    store.release(e.lock_token, clock.now)  # type: ignore[arg-type]
    assert e.delivery_count == 0 and e.lock_token is None
    c2 = FakeConsumer()
    store.attach(c2, clock.now)
    store.dispatch(clock.now)
    assert c2.got == [e] and e.delivery_count == 0


def test_abandon_counts_and_keeps_order() -> None:
    store, _, clock = make()
    c = FakeConsumer(credit=2)
    store.attach(c, clock.now)
    first, second = put(store, clock.now), put(store, clock.now)
    store.abandon(first.lock_token, clock.now, {"why": "retry"})  # type: ignore[arg-type]
    assert first.delivery_count == 1 and first.user_overrides == {"why": "retry"}
    c._credit = 1
    store.complete(second.lock_token, clock.now)  # type: ignore[arg-type]
    store.dispatch(clock.now)
    assert c.got[-1] is first


def test_defer_and_receive_deferred() -> None:
    store, _, clock = make()
    c = FakeConsumer()
    store.attach(c, clock.now)
    e = put(store, clock.now)
    store.defer(e.lock_token, clock.now)  # type: ignore[arg-type]
    store.tick(clock.now + 100)
    assert len(c.got) == 1 and e.deferred and e.lock_token is None
    (again,) = store.receive_deferred([e.seq], clock.now, lock=True)
    assert again is e and e.lock_token is not None
    store.complete(e.lock_token, clock.now)  # type: ignore[arg-type]
    with pytest.raises(MessageNotFound):
        store.receive_deferred([e.seq], clock.now, lock=True)


def test_renew_extends_lock() -> None:
    store, _, clock = make(lock=5)
    c = FakeConsumer()
    store.attach(c, clock.now)
    e = put(store, clock.now)
    clock.now += 4
    until = store.renew(e.lock_token, clock.now)  # type: ignore[arg-type]
    assert until == clock.now + 5
    clock.now += 4  # past the first lock
    store.tick(clock.now)
    assert e.delivery_count == 0 and len(c.got) == 1
    store.complete(e.lock_token, clock.now)  # type: ignore[arg-type]


def test_ttl_drop_and_dead_letter() -> None:
    for dead_on_expiry in (False, True):
        store, dlq, clock = make(dead_on_expiry=dead_on_expiry)
        put(store, clock.now, ttl=2)
        keep = put(store, clock.now)
        clock.now += 2.5
        store.tick(clock.now)
        assert list(store.entries.values()) == [keep]
        assert len(dlq.entries) == (1 if dead_on_expiry else 0)
        if dead_on_expiry:
            (dead,) = dlq.entries.values()
            assert dead.dead_letter is not None and dead.dead_letter[0] == "TTLExpiredException"


def test_expired_message_is_not_delivered() -> None:
    store, _, clock = make()
    put(store, clock.now, ttl=1)
    c = FakeConsumer()
    clock.now += 2
    store.attach(c, clock.now)
    store.dispatch(clock.now)
    assert c.got == [] and store.active_count == 0


def test_receive_and_delete_and_round_robin() -> None:
    store, _, clock = make()
    a, b = FakeConsumer(receive_and_delete=True), FakeConsumer(receive_and_delete=True)
    store.attach(a, clock.now)
    store.attach(b, clock.now)
    for _ in range(4):
        put(store, clock.now)
    assert len(a.got) == 2 and len(b.got) == 2
    assert store.active_count == 0 and store.size_bytes == 0


def test_no_credit_no_delivery() -> None:
    store, _, clock = make()
    c = FakeConsumer(credit=0)
    store.attach(c, clock.now)
    e = put(store, clock.now)
    assert c.got == [] and e.lock_token is None
    c._credit = 1
    store.dispatch(clock.now)
    assert c.got == [e]


def test_quota_and_peek() -> None:
    store, _, clock = make(max_bytes=100)
    entries = [put(store, clock.now, size=40) for _ in range(2)]
    with pytest.raises(QuotaExceeded):
        store.check_quota(40)
    store.check_quota(20)
    assert store.peek(0, 10) == entries
    assert store.peek(entries[1].seq, 10) == entries[1:]
    assert store.peek(0, 1) == entries[:1]


def test_purge_forgets_everything() -> None:
    store, _, clock = make()
    store.attach(FakeConsumer(), clock.now)
    put(store, clock.now)
    store.purge()
    assert store.deleted and store.active_count == 0 and store.size_bytes == 0 and not store.locks


def test_detached_consumer_keeps_its_locks_until_they_expire() -> None:
    """As on Azure: a receiver that goes away does not release its locks; they expire at
    locked_until (a delivery attempt) and the message is delivered again."""
    store, _, clock = make(lock=5)
    c = FakeConsumer(credit=1)
    store.attach(c, clock.now)
    e = put(store, clock.now)
    store.detach(c, clock.now)
    c2 = FakeConsumer()
    store.attach(c2, clock.now)
    clock.now += 4.9
    store.tick(clock.now)
    assert c2.got == [] and e.lock_token is not None
    clock.now += 0.2
    store.tick(clock.now)
    assert c2.got == [e] and e.delivery_count == 1


# -- peek: active, deferred and scheduled messages in sequence order -------------------------
def test_peek_merges_scheduled_messages_in_sequence_order_with_states() -> None:
    store, _, clock = make()
    waiting: dict[int, Message] = {}
    store.scheduled = waiting
    c = FakeConsumer(credit=1)
    store.attach(c, clock.now)
    deferred = put(store, clock.now, mid="deferred")
    store.defer(deferred.lock_token, clock.now)  # type: ignore[arg-type]
    later = Message(message_id="later", system={}, user={}, payload="later", size=10, seq=next(_seq),
                    enqueued_at=clock.now, scheduled_at=clock.now + 3600)
    waiting[later.seq] = later
    active = put(store, clock.now, mid="active")
    assert c.got == [deferred]  # the scheduled one is never handed to a consumer
    peeked = store.peek(0, 10)
    assert [e.seq for e in peeked] == [deferred.seq, later.seq, active.seq]
    assert [e.state for e in peeked] == [DEFERRED, SCHEDULED, ACTIVE]
    assert peeked[0] is deferred and peeked[2] is active
    assert peeked[1].msg is later and peeked[1].scheduled and peeked[1].seq not in store.entries
    # paging: count and from_seq apply across both kinds
    assert [e.seq for e in store.peek(0, 2)] == [deferred.seq, later.seq]
    assert [e.seq for e in store.peek(later.seq, 1)] == [later.seq]
    assert [e.seq for e in store.peek(later.seq + 1, 5)] == [active.seq]
    assert store.peek(active.seq + 1, 5) == [] and store.peek(0, 0) == []
    # a cancelled (or delivered) scheduled message is gone from peek
    del waiting[later.seq]
    assert [e.seq for e in store.peek(0, 10)] == [deferred.seq, active.seq]
    assert store.active_count == 2 and store.size_bytes == 20


def test_queue_peek_shows_scheduled_messages_a_subscription_peek_does_not() -> None:
    config = parse_config({"UserConfig": {"Namespaces": [{
        "Name": "ns", "Queues": [{"Name": "q"}], "Topics": [{"Name": "t", "Subscriptions": [{"Name": "s"}]}],
    }]}})
    clock = Clock()
    ns = Namespace(config.namespaces[0], lambda: clock.now)

    def msg(mid: str, at: float | None = None) -> Message:
        return Message(message_id=mid, system={}, user={}, payload=mid, size=10, scheduled_at=at)

    queue, topic = ns.queues["q"], ns.topics["t"]
    first = queue.accept(msg("first"), clock.now)
    soon = queue.accept(msg("soon", clock.now + 5), clock.now)
    gone = queue.accept(msg("gone", clock.now + 5), clock.now)
    last = queue.accept(msg("last"), clock.now)
    store = ns.store_for("q")
    consumer = FakeConsumer()
    store.attach(consumer, clock.now)
    store.dispatch(clock.now)
    assert [e.seq for e in consumer.got] == [first, last]  # receive: never before their time
    assert [(e.seq, e.state) for e in store.peek(0, 10)] == [
        (first, ACTIVE), (soon, SCHEDULED), (gone, SCHEDULED), (last, ACTIVE)]
    queue.cancel_scheduled(gone)
    assert [e.seq for e in store.peek(0, 10)] == [first, soon, last]
    # the subscription does not show a message scheduled at the topic before its time
    at_topic = topic.accept(msg("topic", clock.now + 5), clock.now)
    sub = ns.store_for("t/Subscriptions/s")
    assert sub.peek(0, 10) == [] and ns.store_for("q/$DeadLetterQueue").peek(0, 10) == []
    clock.now += 5.1
    ns.tick()
    # due: stored under the same sequence number, active, received, and no longer a stand-in
    assert [e.seq for e in consumer.got] == [first, last, soon]
    assert [(e.seq, e.state) for e in store.peek(0, 10)] == [(first, ACTIVE), (soon, ACTIVE), (last, ACTIVE)]
    assert all(e is store.entries[e.seq] for e in store.peek(0, 10))
    assert [(e.seq, e.state) for e in sub.peek(0, 10)] == [(at_topic, ACTIVE)]
