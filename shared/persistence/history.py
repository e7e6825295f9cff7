"""Persisted events in Azure Table Storage: the persist function's writes and the history API.

Layout of the table (``SIO_HISTORY_TABLE``, default ``sioevents``):

* ``PartitionKey`` = ``"<ns>|<room>"`` with the characters Table Storage forbids in keys
  (``/ \\ # ?``, control characters) and the separator itself escaped as ``~XX`` (``~`` too), so
  the mapping is injective. A broadcast to the whole namespace has room ``""``.
* ``RowKey`` = ``"<ts in ms, 13 digits>-<envelope id>"``: sorts by time within the partition and
  is stable across redeliveries, so a retry upserts the same row (idempotent).
* columns ``event``, ``data`` (JSON of the socket.io argument list), ``sid`` (the emitting socket
  as given by ``skip_sid``, if any), ``node``, ``region``, ``ts``, ``ns``, ``room``, ``id``.
  A ``data`` JSON longer than one string property (32K UTF-16 units) is split over
  ``data``, ``data_1``, ``data_2``... (an entity holds 1 MiB, a message at most 256 KB).

Ordering is by the origin node's clock (``Envelope.ts``): events from nodes with skewed clocks
interleave accordingly; within one node it is the send order.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from typing import Any

from shared.persistence.hooks import StoredEvent
from socketio_servicebus.wire.envelope import Batch, Envelope, EnvelopeError, Kind

__all__ = [
    "escape_key",
    "unescape_key",
    "partition_key",
    "row_key",
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
CURSOR_RE = re.compile(r"^\d{13}-[^/\\#?\x00-\x1f\x7f-\x9f]{1,128}$")
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
    return f"{int(round(ts * 1000)):013d}-{escape_key(envelope_id)}"


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
        cursor=row_key(env.ts, env.id),
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
        "RowKey": ev.cursor or row_key(ev.ts, ev.id),
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


async def store_events(table: Any, events: list[StoredEvent]) -> None:
    """Upsert (replace) the rows; one transaction per partition and 100 rows."""
    from azure.core.exceptions import HttpResponseError

    by_pk: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        entity = to_entity(ev)
        by_pk[entity["PartitionKey"]].append(entity)
    for rows in by_pk.values():
        # Several envelopes can share a RowKey only if they share id and ms: keep the last.
        unique = list({r["RowKey"]: r for r in rows}.values())
        for i in range(0, len(unique), 100):
            ops = [("upsert", r, {"mode": "replace"}) for r in unique[i : i + 100]]
            try:
                await table.submit_transaction(ops)
            except HttpResponseError as exc:
                if not _table_missing(exc):
                    raise
                await ensure_table(table)  # first write ever (Azure: infra creates the table)
                await table.submit_transaction(ops)


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
    """Events of one room after ``after`` (a RowKey cursor), oldest first, at most ``limit``.

    ``since`` > 0 leaves out every event older than that time (its ``ts``), in the query itself:
    a history token opens a room only from the time its socket joined (``docs/security.md``).
    """
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    params: dict[str, Any] = {"pk": partition_key(ns, room), "after": after or ""}
    query = "PartitionKey eq @pk and RowKey gt @after"
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
