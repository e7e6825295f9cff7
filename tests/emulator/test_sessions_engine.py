"""SessionStore without I/O: a fake clock and fake session receivers drive session locks, FIFO per
session, waits for the next available session, expiry and state."""

from __future__ import annotations

import itertools
import uuid

import pytest

from servicebus_emulator.errors import InvalidOperation, SessionCannotBeLocked, SessionLockLost
from servicebus_emulator.sessions import NULL_SESSION_REASON, LockState, Session, SessionStore
from servicebus_emulator.store import Entry, Message, MessageStore, StoreSettings, new_entry

_seq = itertools.count(1)
T0 = 1000.0


class Receiver:
    """A fake session receiver: records what it is told."""

    def __init__(self, credit: int = 100, receive_and_delete: bool = False):
        self.receive_and_delete = receive_and_delete
        self._credit = credit
        self.got: list[Entry] = []
        self.granted: list[str] = []
        self.timed_out = False
        self.lost: list[str] = []

    def credit(self) -> int:
        return self._credit

    def deliver(self, entry: Entry, store: MessageStore) -> None:
        self._credit -= 1
        self.got.append(entry)

    def session_granted(self, session: Session) -> None:
        self.granted.append(session.session_id)

    def session_wait_timed_out(self) -> None:
        self.timed_out = True

    def session_lost(self, session: Session) -> None:
        self.lost.append(session.session_id)


def make(lock: float = 10.0, mdc: int = 10) -> tuple[SessionStore, MessageStore]:
    dlq = MessageStore("q/$DeadLetterQueue", StoreSettings())
    return SessionStore("q", StoreSettings(lock_duration=lock, max_delivery_count=mdc), dlq), dlq


def put(store: MessageStore, session_id: str | None, body: str, now: float = T0) -> Entry:
    system = {} if session_id is None else {"sessionid": session_id}
    msg = Message(message_id=body, system=system, user={}, payload=body, size=1, seq=next(_seq), enqueued_at=now)
    entry = new_entry(msg, 1e13, now)
    store.add(entry, now)
    return entry


def bodies(receiver: Receiver) -> list[str]:
    return [e.msg.payload for e in receiver.got]


def accept(store: SessionStore, receiver: Receiver, session_id: str | None, now: float = T0,
           wait: float = 5.0) -> Session | None:
    session = store.accept_session(receiver, session_id, now, now + wait)
    store.attach(receiver, now)
    store.dispatch(now)
    return session


def test_a_named_session_delivers_its_messages_in_order_and_nothing_else() -> None:
    store, _ = make()
    for i in range(3):
        put(store, "a", f"a{i}")
        put(store, "b", f"b{i}")
    r = Receiver()
    session = accept(store, r, "b")
    assert session is not None and session.lock is LockState.LOCKED
    assert bodies(r) == ["b0", "b1", "b2"]
    assert all(e.locked_until == session.locked_until for e in r.got)


def test_next_available_takes_the_session_with_the_oldest_message_and_skips_locked_ones() -> None:
    store, _ = make()
    put(store, "late", "x")
    put(store, "later", "y")
    first, second, third = Receiver(), Receiver(), Receiver()
    assert accept(store, first, None).session_id == "late"  # type: ignore[union-attr]
    assert accept(store, second, None).session_id == "later"  # type: ignore[union-attr]
    assert accept(store, third, None) is None  # waits: both sessions are locked
    put(store, "new", "z")
    assert third.granted == ["new"] and bodies(third) == ["z"]


def test_a_wait_for_the_next_session_ends_at_its_deadline() -> None:
    store, _ = make()
    r = Receiver()
    assert accept(store, r, None, wait=2.0) is None
    store.tick(T0 + 1.0)
    assert not r.timed_out
    store.tick(T0 + 2.0)
    assert r.timed_out
    put(store, "s", "after", now=T0 + 3)
    assert r.granted == [] and r.got == []  # a receiver whose wait ended gets nothing


def test_a_named_session_locked_elsewhere_cannot_be_locked() -> None:
    store, _ = make()
    put(store, "s", "m")
    accept(store, Receiver(), "s")
    with pytest.raises(SessionCannotBeLocked):
        store.accept_session(Receiver(), "s", T0, T0 + 5)


def test_session_lock_expiry_unlocks_its_messages_in_order_and_settling_reports_lock_lost() -> None:
    store, _ = make(lock=10.0)
    for i in range(3):
        put(store, "s", f"m{i}")
    r = Receiver(credit=2)
    accept(store, r, "s")
    token = r.got[0].lock_token
    assert token is not None
    store.tick(T0 + 10.0)
    assert r.lost == ["s"]
    with pytest.raises(SessionLockLost):
        store.complete(token, T0 + 10.0)
    other = Receiver()
    accept(store, other, None, now=T0 + 11)
    assert bodies(other) == ["m0", "m1", "m2"]
    assert [e.delivery_count for e in other.got] == [1, 1, 0]


def test_renewing_the_session_renews_its_messages_locks() -> None:
    store, _ = make(lock=10.0)
    put(store, "s", "m")
    r = Receiver()
    session = accept(store, r, "s")
    assert session is not None
    store.tick(T0 + 8)
    until = store.renew_session(store.held_session("s", T0 + 8, [r]), T0 + 8)
    assert until == T0 + 18 and r.got[0].locked_until == until
    store.tick(T0 + 12)
    assert r.lost == []
    store.complete(r.got[0].lock_token, T0 + 12)  # type: ignore[arg-type]
    assert store.entries == {}
    with pytest.raises(InvalidOperation):  # message locks go with the session
        store.renew(uuid.uuid4(), T0 + 12)


def test_an_abandoned_message_comes_back_before_the_rest_of_its_session() -> None:
    store, _ = make()
    for i in range(3):
        put(store, "s", f"m{i}")
    r = Receiver(credit=1)
    accept(store, r, "s")
    store.abandon(r.got[0].lock_token, T0)  # type: ignore[arg-type]
    r._credit = 3
    store.dispatch(T0)
    assert bodies(r) == ["m0", "m0", "m1", "m2"]


def test_a_receiver_going_away_releases_its_session_at_once() -> None:
    store, _ = make()
    put(store, "s", "m0")
    r = Receiver()
    accept(store, r, "s")
    store.detach(r, T0 + 1)
    other = Receiver()
    assert accept(store, other, None, now=T0 + 1) is not None
    assert bodies(other) == ["m0"] and other.got[0].delivery_count == 1


def test_state_needs_the_session_lock_of_one_of_the_holders() -> None:
    store, _ = make()
    r, stranger = Receiver(), Receiver()
    session = accept(store, r, "s")
    assert session is not None
    store.set_state(store.held_session("s", T0, [r]), b"st", T0)
    assert store.held_session("s", T0, [r]).state == b"st"
    with pytest.raises(SessionLockLost):
        store.held_session("s", T0, [stranger])
    store.detach(r, T0)
    with pytest.raises(SessionLockLost):
        store.held_session("s", T0, [r])
    assert store.session_ids() == ["s"]  # a session with a state is listed (and kept) without messages


def test_a_message_without_session_id_is_dead_lettered_by_a_session_store() -> None:
    store, dlq = make()
    put(store, None, "orphan")
    assert store.entries == {}
    (dead,) = dlq.entries.values()
    assert dead.dead_letter is not None and dead.dead_letter[0] == NULL_SESSION_REASON


def test_peek_within_a_session() -> None:
    store, _ = make()
    for i in range(3):
        put(store, "p", f"p{i}")
        put(store, "q", f"q{i}")
    assert [e.msg.payload for e in store.peek_session("q", 0, 10)] == ["q0", "q1", "q2"]
    second = store.peek_session("q", 0, 10)[1].seq
    assert [e.msg.payload for e in store.peek_session("q", second, 1)] == ["q1"]
