"""Sessions of a session-enabled queue or subscription (``RequiresSession``). No I/O.

A :class:`SessionStore` is a :class:`store.MessageStore` (entries, TTL, dead-lettering, peek
and persistence stay as they are) whose deliveries go by session, as Service Bus serves them:

- a message belongs to the session named by its ``session_id`` (AMQP ``group-id``); each session
  keeps its ready messages in sequence order, so a session is delivered first in, first out;
- a receiver gets messages only after it holds a session's lock: a named session
  (:meth:`SessionStore.accept_session` with an id) or the next available one (``None``: an
  unlocked session with a message ready, the one whose oldest message is oldest). With none
  available it waits until one is, or until its deadline (the receiver's
  ``com.microsoft:timeout``); one session is held by at most one receiver at a time;
- the messages a receiver gets are locked under the session lock: they stay locked as long as
  the session lock does, renewing the session renews them, and when the session lock expires
  or its receiver goes away they count a failed delivery and are delivered again, in order;
- a session has a state (opaque bytes), read and written by the receiver holding its lock.

Time comes from the caller. The receivers are :class:`SessionConsumer` objects (the AMQP
adapter's links); the store tells them when a wait ended and when a lock was lost.
"""

from __future__ import annotations

import enum
import heapq
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from .errors import InvalidOperation, SessionCannotBeLocked, SessionLockLost
from .store import Consumer, Entry, Journal, MessageStore, StoreSettings

#: what Service Bus answers when a session lock is gone (settle, renew, state)
LOCK_LOST_TEXT = "The session lock has expired on the MessageSession. Accept a new MessageSession."

#: Azure's dead-letter reason and description for a message without a session id that a topic
#: hands to a session-enabled subscription
NULL_SESSION_REASON = "Session id is null."
NULL_SESSION_DESCRIPTION = "Session enabled entity doesn't allow a message whose session identifier is null."


def session_of(entry: Entry) -> str | None:
    """The session id of an entry's message (None: the message has none)."""
    value = entry.msg.system.get("sessionid")
    return None if value in (None, "") else str(value)


class LockState(enum.Enum):
    UNLOCKED = "unlocked"
    LOCKED = "locked"


class SessionConsumer(Consumer, Protocol):
    """A session receiver as seen by a session store."""

    def session_granted(self, session: Session) -> None:
        """A wait for the next available session ended: ``session`` is now locked for it."""

    def session_wait_timed_out(self) -> None:
        """A wait for the next available session ended at its deadline with no session."""

    def session_lost(self, session: Session) -> None:
        """The lock on ``session`` expired."""


@dataclass(eq=False)
class Session:
    """One session of a session store."""

    session_id: str
    #: sequence numbers of this session's entries ready for delivery (a heap)
    ready: list[int] = field(default_factory=list)
    state: bytes | None = None
    state_updated_at: float = 0.0
    lock: LockState = LockState.UNLOCKED
    holder: SessionConsumer | None = None
    locked_until: float = 0.0


@dataclass(eq=False)
class _Waiter:
    consumer: SessionConsumer
    deadline: float


class SessionStore(MessageStore):
    """The store of a session-enabled queue or subscription."""

    def __init__(self, path: str, settings: StoreSettings, dead_letter: MessageStore | None = None,
                 journal: Journal | None = None):
        super().__init__(path, settings, dead_letter, journal)
        self.sessions: dict[str, Session] = {}
        self._held: dict[SessionConsumer, Session] = {}
        self._waiters: list[_Waiter] = []

    # -- sessions -------------------------------------------------------------------------
    def session(self, session_id: str) -> Session:
        """The session ``session_id`` (made on first use)."""
        found = self.sessions.get(session_id)
        if found is None:
            found = self.sessions[session_id] = Session(session_id)
        return found

    def accept_session(self, consumer: SessionConsumer, session_id: str | None, now: float,
                       deadline: float) -> Session | None:
        """Lock a session for ``consumer``: the one named, or (``session_id`` None) the next
        available. Returns None when none is available yet: the consumer then waits, and hears
        of the outcome through ``session_granted`` or, at ``deadline``, ``session_wait_timed_out``.
        A named session locked by another receiver raises :class:`SessionCannotBeLocked`."""
        self._expire_locks(now)
        if session_id is not None:
            named = self.session(session_id)
            if named.lock is LockState.LOCKED and named.holder is not consumer:
                raise SessionCannotBeLocked(
                    f"The requested session '{session_id}' cannot be accepted. It may be locked by "
                    f"another receiver. ({self.path})")
            self._lock_session(named, consumer, now)
            return named
        session = self._available(now)
        if session is not None:
            self._lock_session(session, consumer, now)
            return session
        self._waiters.append(_Waiter(consumer, deadline))
        return None

    def held_session(self, session_id: str, now: float, holders: Collection[SessionConsumer]) -> Session:
        """The session ``session_id`` if one of ``holders`` holds its lock, else
        :class:`SessionLockLost` (management operations on a session need its lock)."""
        self._expire_locks(now)
        session = self.sessions.get(session_id)
        if session is None or session.lock is not LockState.LOCKED or session.holder not in holders:
            raise SessionLockLost(f"{LOCK_LOST_TEXT} ({self.path}, session '{session_id}')")
        return session

    def renew_session(self, session: Session, now: float) -> float:
        """Extend a held session's lock (and its messages' locks); returns the new expiry."""
        session.locked_until = now + self.settings.lock_duration
        for entry in self._locked_in(session):
            entry.locked_until = session.locked_until
        self.last_activity = now
        return session.locked_until

    def set_state(self, session: Session, state: bytes | None, now: float) -> None:
        session.state = state
        session.state_updated_at = now
        if self.journal is not None:
            self.journal.session_state_changed(self, session.session_id, state, now)

    def restore_state(self, session_id: str, state: bytes, updated_at: float) -> None:
        """Put back a session state read from a data dir (no journal)."""
        session = self.session(session_id)
        session.state, session.state_updated_at = state, updated_at

    def peek_session(self, session_id: str, from_seq: int, count: int) -> list[Entry]:
        """Up to ``count`` entries of one session from sequence number ``from_seq`` on."""
        if count <= 0:
            return []
        seqs = sorted(s for s, e in self.entries.items() if s >= from_seq and session_of(e) == session_id)
        return [self.entries[s] for s in seqs[:count]]

    def session_ids(self, state_updated_after: float | None = None) -> list[str]:
        """The sessions that have messages or a state (get-message-sessions); with
        ``state_updated_after``, those whose state was set after that time."""
        if state_updated_after is not None:
            return sorted(sid for sid, s in self.sessions.items() if s.state_updated_at > state_updated_after)
        with_messages = {session_of(e) for e in self.entries.values()}
        return sorted(sid for sid, s in self.sessions.items() if s.state is not None or sid in with_messages)

    def _lock_session(self, session: Session, consumer: SessionConsumer, now: float) -> None:
        previous = self._held.pop(consumer, None)
        if previous is not None and previous is not session:
            self._unlock_session(previous, now)
        session.lock = LockState.LOCKED
        session.holder = consumer
        session.locked_until = now + self.settings.lock_duration
        self._held[consumer] = session
        self.last_activity = now

    def _unlock_session(self, session: Session, now: float) -> None:
        """Drop a session's lock; its locked messages count a failed delivery and are ready
        again (in order: the session's ready heap is by sequence number)."""
        if session.holder is not None:
            self._held.pop(session.holder, None)
        session.lock = LockState.UNLOCKED
        session.holder = None
        session.locked_until = 0.0
        for entry in self._locked_in(session):
            self._failed_attempt(entry, now)

    def _locked_in(self, session: Session) -> list[Entry]:
        return [e for e in self.locks.values() if session_of(e) == session.session_id]

    def _head(self, session: Session, now: float) -> Entry | None:
        """The next deliverable entry of a session, left in place (stale heap items dropped)."""
        while session.ready:
            entry = self.entries.get(session.ready[0])
            if entry is None or entry.lock_token is not None or entry.deferred:
                heapq.heappop(session.ready)
                continue
            if entry.expires_at <= now:
                heapq.heappop(session.ready)
                self._expire(entry, now)
                continue
            return entry
        return None

    def _available(self, now: float) -> Session | None:
        best: tuple[int, Session] | None = None
        for session in list(self.sessions.values()):
            if session.lock is LockState.LOCKED:
                continue
            head = self._head(session, now)
            if head is None:
                if session.state is None:  # nothing left to remember
                    del self.sessions[session.session_id]
                continue
            if best is None or head.seq < best[0]:
                best = (head.seq, session)
        return None if best is None else best[1]

    def _expire_locks(self, now: float) -> None:
        for session in [s for s in self._held.values() if s.locked_until <= now]:
            holder = session.holder
            self._unlock_session(session, now)
            if holder is not None:
                super().detach(holder, now)  # its link is closed: no longer a consumer
                holder.session_lost(session)

    # -- MessageStore, by session -----------------------------------------------------------
    def add(self, entry: Entry, now: float) -> None:
        if session_of(entry) is None:
            # as Azure does for a topic's message to a session-enabled subscription
            self.dead_letter(entry, now, NULL_SESSION_REASON, NULL_SESSION_DESCRIPTION)
            return
        super().add(entry, now)

    def restore(self, entry: Entry) -> None:
        """A data dir's entry: a session lock does not outlive the process, so a message locked
        at the stop counts a failed delivery and is ready again (in its session's order)."""
        if entry.lock_token is not None:
            entry.lock_token = None
            entry.delivery_count += 1
        super().restore(entry)

    def _make_ready(self, entry: Entry) -> None:
        sid = session_of(entry)
        if sid is not None:
            heapq.heappush(self.session(sid).ready, entry.seq)

    def _lock(self, entry: Entry, now: float) -> None:
        sid = session_of(entry)
        session = self.sessions.get(sid) if sid is not None else None
        if session is None or session.lock is not LockState.LOCKED:
            raise SessionLockLost(f"{LOCK_LOST_TEXT} ({self.path}, session '{sid}')")
        token = uuid.uuid4()
        entry.lock_token = token
        entry.locked_until = session.locked_until
        self.locks[token] = entry
        self._touch(entry)

    def _locked(self, token: uuid.UUID, now: float) -> Entry:
        entry = self.locks.get(token)
        sid = session_of(entry) if entry is not None else None
        session = self.sessions.get(sid) if sid is not None else None
        if entry is None or session is None or session.lock is not LockState.LOCKED or session.locked_until <= now:
            raise SessionLockLost(f"{LOCK_LOST_TEXT} ({self.path})")
        return entry

    def renew(self, token: uuid.UUID, now: float) -> float:
        raise InvalidOperation(
            "Renewing message lock is an invalid operation when working with sessions; renew the session lock.")

    def detach(self, consumer: Consumer, now: float) -> None:
        """A session receiver went away: its wait ends, its session's lock is released."""
        super().detach(consumer, now)
        self._waiters = [w for w in self._waiters if w.consumer is not consumer]
        session = next((s for c, s in self._held.items() if c is consumer), None)
        if session is not None:
            self._unlock_session(session, now)
            self.dispatch(now)

    def dispatch(self, now: float) -> None:
        """Grant available sessions to waiting receivers, then hand each receiver with credit
        the next messages of its session, in sequence order."""
        while self._waiters:
            session = self._available(now)
            if session is None:
                break
            waiter = self._waiters.pop(0)
            self._lock_session(session, waiter.consumer, now)
            waiter.consumer.session_granted(session)
        for consumer, session in list(self._held.items()):
            while consumer.credit() > 0 and session.lock is LockState.LOCKED:
                entry = self._head(session, now)
                if entry is None:
                    break
                heapq.heappop(session.ready)
                self.last_activity = now
                if consumer.receive_and_delete:
                    self._remove(entry)
                else:
                    self._lock(entry, now)
                consumer.deliver(entry, self)

    def tick(self, now: float) -> None:
        """Session locks and waits that ran out, then what every store does."""
        self._expire_locks(now)
        ended = [w for w in self._waiters if w.deadline <= now]
        if ended:
            self._waiters = [w for w in self._waiters if w.deadline > now]
            for waiter in ended:
                super().detach(waiter.consumer, now)  # its link is refused: no longer a consumer
                waiter.consumer.session_wait_timed_out()
        super().tick(now)

    def purge(self) -> None:
        super().purge()
        self.sessions.clear()
        self._held.clear()
        self._waiters.clear()


__all__ = [
    "LOCK_LOST_TEXT",
    "LockState",
    "Session",
    "SessionConsumer",
    "SessionStore",
    "session_of",
]
