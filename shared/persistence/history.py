"""Persisted events in Azure Table Storage: the persist function's writes and the history API.

Layout of the table (``SIO_HISTORY_TABLE``, default ``sioevents``):

* ``PartitionKey`` = ``"<ns>|<room>"`` with the characters Table Storage forbids in keys
  (``/ \\ # ?``, control characters) and the separator itself escaped as ``~XX`` (``~`` too), so
  the mapping is injective. A broadcast to the whole namespace has room ``""``.
* ``RowKey`` of an event = ``"s<sequence, 16 digits>"``: the room's **commit order**. The
  sequence is allocated by the write itself: one entity group transaction replaces the room's
  counter row (``RowKey "~seq"``, column ``seq``) *if its ETag is unchanged* and creates the
  event rows ``s<n+1>``... plus one marker row per event (``RowKey "~id-<envelope id>"``, column
  ``seq``). Two writers that read the same counter cannot both commit (the loser gets 412 and
  retries on the new counter), so sequence ``n`` is visible only after every ``m < n`` is: rows
  appear in key order and a reader paging with ``RowKey gt <last cursor>`` can never be passed
  by a later write. A redelivered event finds its marker (the transaction fails with
  ``EntityAlreadyExists``) and is skipped: one row per envelope id, whatever the retries.
* rows written before sequences (``"<ts ms, 13 digits>-<envelope id>"``) stay readable: digits
  sort before ``s``, so they come first and their cursors still work.
* columns ``event``, ``data`` (JSON of the socket.io argument list), ``sid`` (the emitting socket
  as given by ``skip_sid``, if any), ``node``, ``region``, ``ts``, ``ns``, ``room``, ``id``,
  ``seq``. A ``data`` JSON longer than one string property (32K UTF-16 units) is split over
  ``data``, ``data_1``, ``data_2``... (an entity holds 1 MiB, a message at most 256 KB).

A query first reads the counter (the watermark) and asks only for ``RowKey le s<counter>``: all
of those are committed, so a page never has a hole, even if the store gave no snapshot isolation.

Order within one origin node: a persist message is written in its envelope order, and the
messages of one partition are written one after the other in the order this process received
them (:func:`store_events` queues per partition, first come first served), which is the order
Service Bus delivers them. An event that arrives *late* (its message failed and was redelivered
after a later one was stored) is appended after what is already visible: a reader never misses it,
at the price of that one event being out of its node's order. See docs/functions.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
from collections import OrderedDict
from typing import Any

from shared.persistence.hooks import StoredEvent
from socketio_servicebus.wire.envelope import Batch, Envelope, EnvelopeError, Kind

__all__ = [
    "escape_key",
    "unescape_key",
    "partition_key",
    "row_key",
    "seq_key",
    "stored_event",
    "to_entity",
    "from_entity",
    "store_events",
    "query_history",
    "HistoryPage",
    "CURSOR_RE",
    "MAX_LIMIT",
]

log = logging.getLogger("socketio_servicebus.history")

_ILLEGAL = re.compile(r"[/\\#?|~\x00-\x1f\x7f-\x9f]")
_ESCAPED = re.compile(r"~([0-9A-F]{2})")
#: Max string property length in UTF-16 code units (64 KiB).
_MAX_STR_UNITS = 32_000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
#: a cursor: a sequence row key, or one of the time-based keys written before sequences
CURSOR_RE = re.compile(r"^(?:s\d{16}|\d{13}-[^/\\#?\x00-\x1f\x7f-\x9f]{1,128})$")
#: RowKey of a room's sequence counter, and prefix of the per-event markers (both sort after events)
COUNTER_KEY = "~seq"
MARKER_PREFIX = "~id-"
#: events per transaction: counter + 2 rows per event <= 100 operations
_EVENTS_PER_TX = 49
#: stay under the 4 MiB payload limit of one entity group transaction
_TX_BYTES = 3_000_000
_MAX_ATTEMPTS = 200
_KEY_MAX = 1024


def escape_key(text: str) -> str:
    return _ILLEGAL.sub(lambda m: f"~{ord(m.group()):02X}", text)


def unescape_key(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


def partition_key(ns: str, room: str | None) -> str:
    key = f"{escape_key(ns)}|{escape_key(room or '')}"
    if len(key.encode("utf-16-le")) > _KEY_MAX:
        import hashlib

        key = key[:200] + "~~" + hashlib.sha256(key.encode()).hexdigest()
    return key


def row_key(ts: float, envelope_id: str) -> str:
    """The time-based RowKey of rows written before sequences (kept for reading them)."""
    return f"{int(round(ts * 1000)):013d}-{escape_key(envelope_id)}"


def seq_key(seq: int) -> str:
    """The RowKey (and cursor) of the room's ``seq``-th event."""
    return f"s{seq:016d}"


def marker_key(envelope_id: str) -> str:
    return MARKER_PREFIX + escape_key(envelope_id)[:900]


def stored_event(env: Envelope, region: str | None = None) -> StoredEvent | None:
    """The :class:`StoredEvent` for a persisted emit envelope (``None`` for other kinds)."""
    if env.kind is not Kind.EMIT:
        return None
    body = env.body
    args = body.get("data")
    if not isinstance(args, list):
        args = [args]
    room = body.get("room")
    if isinstance(room, list):  # python-socketio accepts a list of rooms; store under the first
        room = room[0] if room else None
    skip = body.get("skip_sid")
    sid = skip if isinstance(skip, str) else None
    return StoredEvent(
        id=env.id,
        ns=env.ns,
        room=str(room) if room is not None else None,
        event=str(body.get("event")),
        args=args,
        sid=sid,
        node=env.origin_node,
        region=env.origin_region or region or "",
        ts=env.ts,
    )


def _dumps(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, (bytes, bytearray, memoryview)):
            import base64

            return {"_b64": base64.b64encode(bytes(o)).decode("ascii")}
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)


def to_entity(ev: StoredEvent) -> dict[str, Any]:
    data = _dumps(ev.args)
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(ev.ns, ev.room),
        "RowKey": ev.cursor,
        "id": ev.id,
        "ns": ev.ns,
        "room": ev.room if ev.room is not None else "",
        "event": ev.event,
        "sid": ev.sid or "",
        "node": ev.node,
        "region": ev.region,
        "ts": float(ev.ts),
    }
    chunks = [data[i : i + _MAX_STR_UNITS // 2] for i in range(0, len(data), _MAX_STR_UNITS // 2)] or [""]
    entity["data"] = chunks[0]
    for i, chunk in enumerate(chunks[1:], start=1):
        entity[f"data_{i}"] = chunk
    return entity


def from_entity(entity: dict[str, Any]) -> StoredEvent:
    parts = [entity.get("data", "")]
    i = 1
    while f"data_{i}" in entity:
        parts.append(entity[f"data_{i}"])
        i += 1
    try:
        args = json.loads("".join(parts)) if parts[0] else []
    except ValueError:
        args = []
    room = entity.get("room") or None
    return StoredEvent(
        id=str(entity.get("id", "")),
        ns=str(entity.get("ns", "/")),
        room=room,
        event=str(entity.get("event", "")),
        args=args if isinstance(args, list) else [args],
        sid=entity.get("sid") or None,
        node=str(entity.get("node", "")),
        region=str(entity.get("region", "")),
        ts=float(entity.get("ts", 0.0)),
        cursor=str(entity["RowKey"]),
    )


async def ensure_table(table: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        await table.create_table()
    except ResourceExistsError:
        pass


class _PartitionQueues:
    """One FIFO lock per partition: messages of a room are written in the order they came in."""

    def __init__(self, keep: int = 4096) -> None:
        self._locks: OrderedDict[str, asyncio.Lock] = OrderedDict()
        self._keep = keep

    def lock(self, table: Any, pk: str) -> asyncio.Lock:
        # per event loop (an asyncio.Lock belongs to one) and per table
        key = f"{id(asyncio.get_running_loop())}|{getattr(table, 'table_name', '')}|{pk}"
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
            while len(self._locks) > self._keep:  # forget idle partitions (never a held one)
                old_key, old = next(iter(self._locks.items()))
                if old.locked():
                    break
                del self._locks[old_key]
        else:
            self._locks.move_to_end(key)
        return lock


_queues = _PartitionQueues()


async def store_events(table: Any, events: list[StoredEvent]) -> list[StoredEvent]:
    """Append the events to their rooms in this order; returns them with their cursors.

    Idempotent: an event whose envelope id is already stored is not written again (it comes back
    with its stored cursor). Safe with any number of concurrent writers (other instances, other
    regions): sequences are allocated under the counter row's ETag.
    """
    by_pk: dict[str, list[StoredEvent]] = {}
    seen: set[tuple[str, str]] = set()
    for ev in events:
        pk = partition_key(ev.ns, ev.room)
        if (pk, ev.id) in seen:  # the same envelope twice in one message: one row
            continue
        seen.add((pk, ev.id))
        by_pk.setdefault(pk, []).append(ev)
    stored: dict[tuple[str, str], StoredEvent] = {}
    for pk, evs in by_pk.items():
        # the lock is taken before this coroutine's first await in the common case, so concurrent
        # invocations of one process write a partition in the order they were started
        async with _queues.lock(table, pk):
            for chunk in _chunks(evs):
                for ev in await _append(table, pk, chunk):
                    stored[(pk, ev.id)] = ev
    return [stored[key] for ev in events if (key := (partition_key(ev.ns, ev.room), ev.id)) in stored]


def _chunks(evs: list[StoredEvent]) -> list[list[StoredEvent]]:
    out: list[list[StoredEvent]] = [[]]
    size = 0
    for ev in evs:
        n = len(_dumps(ev.args)) * 2 + 1024
        if out[-1] and (len(out[-1]) >= _EVENTS_PER_TX or size + n > _TX_BYTES):
            out.append([])
            size = 0
        out[-1].append(ev)
        size += n
    return [c for c in out if c]


async def _read_counter(table: Any, pk: str) -> tuple[int, str | None]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        entity = await table.get_entity(pk, COUNTER_KEY)
    except ResourceNotFoundError:
        return 0, None
    return int(entity.get("seq", 0)), str(entity.metadata["etag"])


async def _stored_cursor(table: Any, pk: str, envelope_id: str) -> str | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        entity = await table.get_entity(pk, marker_key(envelope_id))
    except ResourceNotFoundError:
        return None
    return seq_key(int(entity["seq"]))


async def _append(table: Any, pk: str, chunk: list[StoredEvent]) -> list[StoredEvent]:
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError
    from azure.data.tables import TableTransactionError

    done: list[StoredEvent] = []
    pending = list(chunk)
    for attempt in range(_MAX_ATTEMPTS):
        seq, etag = await _read_counter(table, pk)
        rows = [dataclasses.replace(ev, cursor=seq_key(seq + 1 + i)) for i, ev in enumerate(pending)]
        counter = {"PartitionKey": pk, "RowKey": COUNTER_KEY, "seq": seq + len(rows)}
        ops: list[Any] = [("create", counter) if etag is None else
                          ("update", counter, {"mode": "replace", "etag": etag,
                                               "match_condition": MatchConditions.IfNotModified})]
        for ev in rows:
            ops.append(("create", {**to_entity(ev), "seq": int(ev.cursor[1:])}))
            ops.append(("create", {"PartitionKey": pk, "RowKey": marker_key(ev.id), "seq": int(ev.cursor[1:])}))
        try:
            await table.submit_transaction(ops)
        except TableTransactionError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if _table_missing(exc):
                await ensure_table(table)  # first write ever (Azure: infra creates the table)
                continue
            if exc.status_code == 412 or (etag is None and exc.index in (0, None) and exc.status_code == 409):
                # another writer moved the counter (412) or created it (409) first: retry on the new one
                # (markers exist only next to a counter, so with no counter a 409 is the counter's)
                await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * (attempt + 1))))
                continue
            if "AlreadyExists" in code or exc.status_code == 409:
                # a redelivery: drop the events already stored (they keep their first cursor)
                still: list[StoredEvent] = []
                for ev in pending:
                    cursor = await _stored_cursor(table, pk, ev.id)
                    if cursor is None:
                        still.append(ev)
                    else:
                        done.append(dataclasses.replace(ev, cursor=cursor))
                if len(still) == len(pending):
                    raise  # a conflict no marker explains: not ours to guess
                pending = still
                if not pending:
                    return done
                continue
            raise
        except HttpResponseError as exc:
            if not _table_missing(exc):
                raise
            await ensure_table(table)
            continue
        return done + rows
    raise RuntimeError(f"history: no sequence for partition {pk!r} after {_MAX_ATTEMPTS} attempts (contention)")


def _table_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "error_code", "") or "")
    return code == "TableNotFound" or "TableNotFound" in str(exc)[:2000]


def events_of(body: bytes) -> tuple[Batch, list[StoredEvent]]:
    """Decode a persist message; raises :class:`EnvelopeError` for malformed bodies."""
    batch = Batch.decode(body)
    out = [ev for env in batch.envelopes if env.persist and (ev := stored_event(env)) is not None]
    return batch, out


class HistoryPage:
    def __init__(self, events: list[StoredEvent], next_cursor: str | None) -> None:
        self.events = events
        self.next = next_cursor

    def to_json(self) -> dict[str, Any]:
        return {"events": [e.to_json() for e in self.events], "next": self.next}


async def query_history(
    table: Any, *, ns: str, room: str | None, after: str | None = None, limit: int = DEFAULT_LIMIT,
    since: float = 0.0,
) -> HistoryPage:
    """Events of one room after ``after`` (a cursor), in commit order, at most ``limit``.

    The counter is read first and only rows up to it are asked for: every one of them is
    committed, so a page never skips an event that a later page could not return. ``since`` > 0
    leaves out every event older than that time (its ``ts``), in the query itself: a history
    token opens a room only from the time its socket joined (``docs/security.md``).
    """
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    pk = partition_key(ns, room)
    try:
        seq, _ = await _read_counter(table, pk)
    except ResourceNotFoundError:
        return HistoryPage([], None)
    except HttpResponseError as exc:
        if _table_missing(exc):
            return HistoryPage([], None)
        raise
    params: dict[str, Any] = {"pk": pk, "after": after or "", "upto": seq_key(seq)}
    query = "PartitionKey eq @pk and RowKey gt @after and RowKey le @upto"
    if since > 0:
        params["since"] = float(since)
        query += " and ts ge @since"
    events: list[StoredEvent] = []
    more = False
    try:
        async for entity in table.query_entities(query, parameters=params, results_per_page=min(limit + 1, 1000)):
            if len(events) == limit:
                more = True
                break
            events.append(from_entity(entity))
    except ResourceNotFoundError:  # no event persisted yet: the table does not exist
        return HistoryPage([], None)
    except HttpResponseError as exc:
        if _table_missing(exc):
            return HistoryPage([], None)
        raise
    return HistoryPage(events, events[-1].cursor if more and events else None)


__all__ += ["events_of", "ensure_table", "EnvelopeError"]
