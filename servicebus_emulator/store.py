"""A message store: what a subscription, a queue or a dead-letter queue holds.

No I/O. Time comes from the caller (``now`` arguments), so tests drive it with a fake clock.
A store keeps every entry by sequence number, a heap of the ones ready for delivery, the
peek-locks it has handed out, and the consumers (receiver links) waiting for messages.

Persistence seam: a store with a ``journal`` (see :class:`Journal`) reports every entry it
adds, changes or removes, and its own purge; the journal (``persistence.py``) decides what to
write and when. The engine itself never does I/O; without a journal nothing is reported.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import LockLost, MessageNotFound, QuotaExceeded


@dataclass(slots=True)
class Message:
    """A brokered message as accepted by an entity. Immutable once published.

    ``payload`` is opaque to the engine (the AMQP adapter keeps its decoded message there);
    ``system`` and ``user`` are what filters see.
    """

    message_id: str | None
    system: dict[str, Any]
    user: dict[str, Any]
    payload: Any
    size: int
    ttl: float | None = None
    scheduled_at: float | None = None
    seq: int = 0
    enqueued_at: float = 0.0


#: message states as Service Bus reports them (``x-opt-message-state``; the SDK's
#: ``ServiceBusMessageState``)
ACTIVE, DEFERRED, SCHEDULED = 0, 1, 2


@dataclass(slots=True)
class Entry:
    """One copy of a message inside one store.

    ``scheduled`` marks the stand-in :meth:`MessageStore.peek` makes for a message that still
    waits at its queue for its scheduled enqueue time; such an entry is never stored.
    """

    msg: Message
    seq: int
    expires_at: float
    delivery_count: int = 0
    lock_token: uuid.UUID | None = None
    locked_until: float = 0.0
    deferred: bool = False
    user_overrides: dict[str, Any] | None = None
    dead_letter: tuple[str, str] | None = None
    dead_letter_source: str | None = None
    scheduled: bool = False

    @property
    def state(self) -> int:
        """``ACTIVE``, ``DEFERRED`` or ``SCHEDULED``."""
        if self.scheduled:
            return SCHEDULED
        return DEFERRED if self.deferred else ACTIVE


class Journal(Protocol):
    """Where the engine reports state changes (``persistence.SqliteJournal`` writes them).

    Calls only record; the owner of the journal commits at its own points (before any byte
    that reveals the change leaves the emulator, and after each clock tick).
    """

    def entry_changed(self, store: MessageStore, entry: Entry) -> None:
        """``entry`` was added to, changed in or removed from ``store`` (the journal reads which
        from ``store.entries``)."""

    def store_purged(self, store: MessageStore) -> None:
        """Every entry of ``store`` is gone (its entity was deleted)."""

    def message_changed(self, owner_name: str, msg: Message, pending: bool) -> None:
        """A message was accepted by the sending entity ``owner_name``; ``pending`` while it waits
        for its scheduled enqueue time (False once delivered into stores or cancelled)."""

    def entities_changed(self) -> None:
        """Entities or their settings or rules changed (created, updated, deleted)."""

    def session_state_changed(self, store: MessageStore, session_id: str, state: bytes | None,
                              updated_at: float) -> None:
        """The state of session ``session_id`` of the session store ``store`` was set at
        ``updated_at`` (``state`` None: cleared)."""


class Consumer(Protocol):
    """A receiver link as seen by a store."""

    receive_and_delete: bool

    def credit(self) -> int: ...

    def deliver(self, entry: Entry, store: MessageStore) -> None: ...


@dataclass
class StoreSettings:
    lock_duration: float = 60.0
    max_delivery_count: int = 10
    dead_lettering_on_expiration: bool = False
    max_bytes: int = 100 * 1024 * 1024


class MessageStore:
    """Entries of one entity with peek-lock, defer, TTL and dead-lettering."""

    def __init__(self, path: str, settings: StoreSettings, dead_letter: MessageStore | None = None,
                 journal: Journal | None = None):
        self.path = path
        self.journal = journal
        self.settings = settings
        self.dlq = dead_letter
        self.entries: dict[int, Entry] = {}
        self.ready: list[int] = []
        self.locks: dict[uuid.UUID, Entry] = {}
        self._lock_heap: list[tuple[float, int, uuid.UUID]] = []
        self._expiry_heap: list[tuple[float, int]] = []
        self._tie = itertools.count()
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.size_bytes = 0
        self.last_activity = 0.0
        self.deleted = False
        #: messages that will come into this store when their scheduled enqueue time comes
        #: (a queue's own store: its intake's scheduled messages, by sequence number); peek
        #: shows them, nothing else here touches them
        self.scheduled: Mapping[int, Message] = {}

    # -- counts ---------------------------------------------------------------------------
    @property
    def active_count(self) -> int:
        return len(self.entries)

    # -- enqueue --------------------------------------------------------------------------
    def check_quota(self, size: int) -> None:
        if self.size_bytes + size > self.settings.max_bytes:
            raise QuotaExceeded(
                f"The maximum entity size of {self.settings.max_bytes} bytes has been reached "
                f"for {self.path}; receive or purge messages first."
            )

    def add(self, entry: Entry, now: float) -> None:
        self.entries[entry.seq] = entry
        self.size_bytes += entry.msg.size
        self._make_ready(entry)
        if entry.expires_at < float("inf"):
            heapq.heappush(self._expiry_heap, (entry.expires_at, entry.seq))
        if self.journal is not None:
            self.journal.entry_changed(self, entry)
        self.dispatch(now)

    def restore(self, entry: Entry) -> None:
        """Put back an entry read from a data dir (no dispatch, no journal): locked entries keep
        their lock until ``locked_until``, after which the clock counts the delivery as failed."""
        self.entries[entry.seq] = entry
        self.size_bytes += entry.msg.size
        if entry.lock_token is not None:
            self.locks[entry.lock_token] = entry
            heapq.heappush(self._lock_heap, (entry.locked_until, next(self._tie), entry.lock_token))
        elif not entry.deferred:
            self._make_ready(entry)
        if entry.expires_at < float("inf"):
            heapq.heappush(self._expiry_heap, (entry.expires_at, entry.seq))

    def _make_ready(self, entry: Entry) -> None:
        """``entry`` can be delivered (again); a session store keeps one queue per session."""
        heapq.heappush(self.ready, entry.seq)

    def _touch(self, entry: Entry) -> None:
        if self.journal is not None:
            self.journal.entry_changed(self, entry)

    def _remove(self, entry: Entry) -> None:
        if self.entries.pop(entry.seq, None) is not None:
            self.size_bytes -= entry.msg.size
        if entry.lock_token is not None:
            self.locks.pop(entry.lock_token, None)
            entry.lock_token = None
        self._touch(entry)

    # -- delivery -------------------------------------------------------------------------
    def attach(self, consumer: Consumer, now: float) -> None:
        self.consumers.append(consumer)
        self.last_activity = now

    def detach(self, consumer: Consumer, now: float) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        self.last_activity = now

    def _pop_ready(self, now: float) -> Entry | None:
        while self.ready:
            seq = heapq.heappop(self.ready)
            entry = self.entries.get(seq)
            if entry is None or entry.lock_token is not None or entry.deferred:
                continue
            if entry.expires_at <= now:
                self._expire(entry, now)
                continue
            return entry
        return None

    def dispatch(self, now: float) -> None:
        """Hand ready entries to consumers with credit, round robin."""
        if not self.consumers or not self.ready:
            return
        self.last_activity = now
        while self.ready:
            consumer = self._next_consumer()
            if consumer is None:
                return
            entry = self._pop_ready(now)
            if entry is None:
                return
            if consumer.receive_and_delete:
                self._remove(entry)
            else:
                self._lock(entry, now)
            consumer.deliver(entry, self)

    def _next_consumer(self) -> Consumer | None:
        count = len(self.consumers)
        for i in range(count):
            consumer = self.consumers[(self._rr + i) % count]
            if consumer.credit() > 0:
                self._rr = (self._rr + i + 1) % count
                return consumer
        return None

    def _lock(self, entry: Entry, now: float) -> None:
        token = uuid.uuid4()
        entry.lock_token = token
        entry.locked_until = now + self.settings.lock_duration
        self.locks[token] = entry
        heapq.heappush(self._lock_heap, (entry.locked_until, next(self._tie), token))
        self._touch(entry)

    def receive_deferred(self, seqs: list[int], now: float, lock: bool) -> list[Entry]:
        """Receive deferred messages by sequence number (locked unless receive-and-delete)."""
        out = []
        for seq in seqs:
            entry = self.entries.get(int(seq))
            if entry is None or not entry.deferred:
                raise MessageNotFound(f"Failed to retrieve deferred message {seq} from {self.path}.")
            if lock:
                if entry.lock_token is not None:
                    self.locks.pop(entry.lock_token, None)
                self._lock(entry, now)
            else:
                self._remove(entry)
            out.append(entry)
        self.last_activity = now
        return out

    def peek(self, from_seq: int, count: int) -> list[Entry]:
        """Up to ``count`` messages from sequence number ``from_seq`` on, in sequence order,
        without locking: stored entries (active, deferred or locked) and, as Service Bus shows
        them, messages still waiting for their scheduled enqueue time (as stand-in entries with
        ``scheduled`` set)."""
        if count <= 0:
            return []
        stored = sorted(s for s in self.entries if s >= from_seq)[:count]
        pending = sorted(s for s in self.scheduled if s >= from_seq)[:count]
        out = []
        for seq in itertools.islice(heapq.merge(stored, pending), count):
            entry = self.entries.get(seq)
            if entry is None:
                msg = self.scheduled[seq]
                entry = Entry(msg=msg, seq=seq, expires_at=float("inf"), scheduled=True)
            out.append(entry)
        return out

    # -- settlement -----------------------------------------------------------------------
    def _locked(self, token: uuid.UUID, now: float) -> Entry:
        entry = self.locks.get(token)
        if entry is None or entry.locked_until <= now:
            raise LockLost(
                "The lock supplied is invalid. Either the lock expired, or the message has "
                f"already been removed from {self.path}."
            )
        return entry

    def complete(self, token: uuid.UUID, now: float) -> None:
        self._remove(self._locked(token, now))
        self.last_activity = now

    def release(self, token: uuid.UUID, now: float) -> None:
        """Unlock without counting a delivery attempt (AMQP released)."""
        entry = self.locks.pop(token, None)
        if entry is None:
            return
        entry.lock_token = None
        self._touch(entry)
        if not entry.deferred:
            self._make_ready(entry)
        self.dispatch(now)

    def abandon(self, token: uuid.UUID, now: float, properties: dict[str, Any] | None = None) -> None:
        entry = self._locked(token, now)
        if properties:
            entry.user_overrides = {**(entry.user_overrides or {}), **properties}
        self._failed_attempt(entry, now)

    def defer(self, token: uuid.UUID, now: float) -> None:
        entry = self._locked(token, now)
        self.locks.pop(token, None)
        entry.lock_token = None
        entry.deferred = True
        self._touch(entry)

    def dead_letter_locked(self, token: uuid.UUID, now: float, reason: str, description: str) -> None:
        self.dead_letter(self._locked(token, now), now, reason, description)

    def renew(self, token: uuid.UUID, now: float) -> float:
        entry = self._locked(token, now)
        entry.locked_until = now + self.settings.lock_duration
        heapq.heappush(self._lock_heap, (entry.locked_until, next(self._tie), token))
        self.last_activity = now
        self._touch(entry)
        return entry.locked_until

    def _failed_attempt(self, entry: Entry, now: float) -> None:
        if entry.lock_token is not None:
            self.locks.pop(entry.lock_token, None)
            entry.lock_token = None
        entry.delivery_count += 1
        self._touch(entry)
        if entry.delivery_count >= self.settings.max_delivery_count and self.dlq is not None:
            self.dead_letter(
                entry,
                now,
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {self.settings.max_delivery_count} delivery attempts.",
            )
            return
        if not entry.deferred:
            self._make_ready(entry)
        self.dispatch(now)

    def dead_letter(self, entry: Entry, now: float, reason: str, description: str) -> None:
        self._remove(entry)
        if self.dlq is None:
            return
        copy = Entry(
            msg=entry.msg,
            seq=entry.seq,
            expires_at=float("inf"),
            delivery_count=entry.delivery_count,
            user_overrides=dict(entry.user_overrides or {}),
            dead_letter=(reason, description),
            dead_letter_source=self.path,
        )
        self.dlq.add(copy, now)

    def _expire(self, entry: Entry, now: float) -> None:
        if self.settings.dead_lettering_on_expiration and self.dlq is not None:
            self.dead_letter(entry, now, "TTLExpiredException", "The message expired and was dead lettered.")
        else:
            self._remove(entry)

    # -- time -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Expire locks and messages whose time has come."""
        while self._lock_heap and self._lock_heap[0][0] <= now:
            until, _, token = heapq.heappop(self._lock_heap)
            entry = self.locks.get(token)
            if entry is not None and entry.locked_until <= now:
                self._failed_attempt(entry, now)
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            _, seq = heapq.heappop(self._expiry_heap)
            entry = self.entries.get(seq)
            if entry is not None and entry.lock_token is None and entry.expires_at <= now:
                self._expire(entry, now)
        if self.consumers:
            self.last_activity = now
        self.dispatch(now)

    def purge(self) -> None:
        """Forget everything (entity deleted)."""
        self.deleted = True
        self.entries.clear()
        self.ready.clear()
        self.locks.clear()
        self._lock_heap.clear()
        self._expiry_heap.clear()
        self.size_bytes = 0
        if self.journal is not None:
            self.journal.store_purged(self)


def new_entry(msg: Message, default_ttl: float, now: float) -> Entry:
    ttl = default_ttl if msg.ttl is None else min(msg.ttl, default_ttl)
    return Entry(msg=msg, seq=msg.seq, expires_at=now + ttl if ttl < 1e12 else float("inf"))


__all__ = [
    "ACTIVE",
    "DEFERRED",
    "SCHEDULED",
    "Consumer",
    "Entry",
    "Journal",
    "Message",
    "MessageStore",
    "StoreSettings",
    "new_entry",
]
