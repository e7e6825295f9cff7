"""The history's order and cursor against Azurite: commit order allocated under the counter's
ETag, exactly once for a reader that pages with its last cursor, whatever arrives late."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from azure.data.tables.aio import TableClient

from shared.persistence import history as hist
from shared.persistence.hooks import StoredEvent

from .helpers import emit_envelope


def table_of(azurite: Any) -> TableClient:
    return TableClient.from_connection_string(azurite.connection_string, "t" + uuid.uuid4().hex[:12])


def events(node: str, n: int, room: str = "r", start: int = 0) -> list[StoredEvent]:
    out = []
    for i in range(start, start + n):
        ev = hist.stored_event(emit_envelope("eu", room=room, data=f"{node}:{i}", persist=True, node=node))
        assert ev is not None
        out.append(ev)
    return out


async def read_all(table: TableClient, after: str | None = None, limit: int = 7) -> tuple[list[StoredEvent], str | None]:
    """Page with the cursor of the last event seen (not ``next``), as a resuming reader does."""
    seen: list[StoredEvent] = []
    while True:
        page = await hist.query_history(table, ns="/", room="r", after=after, limit=limit)
        seen += page.events
        if page.events:
            after = page.events[-1].cursor
        if page.next is None:
            return seen, after


async def test_late_arrival_is_appended_once_and_a_reader_past_it_still_gets_it(azurite) -> None:  # type: ignore[no-untyped-def]
    async with table_of(azurite) as table:
        first, second = events("n1", 3), events("n1", 2, start=3)
        await hist.store_events(table, second)  # the first message failed and is redelivered later
        seen, cursor = await read_all(table)
        assert [e.data for e in seen] == ["n1:3", "n1:4"]
        stored = await hist.store_events(table, first + second)  # redelivery of both: only `first` is new
        assert [e.cursor for e in stored[3:]] == [e.cursor for e in seen]
        late, _ = await read_all(table, after=cursor)
        assert [e.data for e in late] == ["n1:0", "n1:1", "n1:2"]
        everything, _ = await read_all(table)
        assert [e.data for e in everything] == ["n1:3", "n1:4", "n1:0", "n1:1", "n1:2"]
        assert [e.cursor for e in everything] == [hist.seq_key(i) for i in range(1, 6)]


async def test_concurrent_writers_and_a_paging_reader_see_every_event_once_in_writer_order(azurite) -> None:  # type: ignore[no-untyped-def]
    """Four writers with their own clients (as four Function instances or regions would be) race
    for the counter; no in-process queue orders them. A reader pages all along with its last cursor."""
    writers = [f"w{i}" for i in range(4)]
    per_writer = 60
    tables = [table_of(azurite) for _ in writers]
    name = tables[0].table_name
    tables = [tables[0]] + [TableClient.from_connection_string(azurite.connection_string, name) for _ in writers[1:]]
    await hist.ensure_table(tables[0])
    done = asyncio.Event()
    seen: list[StoredEvent] = []

    async def write(table: TableClient, node: str) -> None:
        pk = hist.partition_key("/", "r")
        evs = events(node, per_writer)
        for i in range(0, per_writer, 3):  # messages of 3 events, each its own transaction
            await hist._append(table, pk, evs[i:i + 3])

    async def read() -> None:
        async with TableClient.from_connection_string(azurite.connection_string, name) as reader:
            after = None
            while True:
                finished = done.is_set()
                got, after = await read_all(reader, after=after, limit=13)
                seen.extend(got)
                if finished:
                    return
                await asyncio.sleep(0.01)

    reader = asyncio.create_task(read())
    try:
        await asyncio.gather(*(write(t, n) for t, n in zip(tables, writers, strict=True)))
    finally:
        done.set()
        await reader
        for t in tables:
            await t.close()
    data = [e.data for e in seen]
    assert len(data) == len(set(data)) == per_writer * len(writers)
    for node in writers:
        assert [d for d in data if d.startswith(node + ":")] == [f"{node}:{i}" for i in range(per_writer)]
    assert [e.cursor for e in seen] == [hist.seq_key(i) for i in range(1, len(seen) + 1)]


async def test_rows_written_before_sequences_stay_readable_and_come_first(azurite) -> None:  # type: ignore[no-untyped-def]
    async with table_of(azurite) as table:
        await hist.ensure_table(table)
        old = events("old", 2)
        for i, ev in enumerate(old):  # the former layout: "<ms>-<id>" row keys, no counter
            key = hist.row_key(time.time() + i, ev.id)
            await table.upsert_entity(hist.to_entity(StoredEvent(**{**ev.__dict__, "cursor": key})))
        await hist.store_events(table, events("new", 2))
        everything, _ = await read_all(table, limit=1)
        assert [e.data for e in everything] == ["old:0", "old:1", "new:0", "new:1"]
        assert hist.CURSOR_RE.match(everything[0].cursor) and hist.CURSOR_RE.match(everything[2].cursor)
        rest, _ = await read_all(table, after=everything[1].cursor)
        assert [e.data for e in rest] == ["new:0", "new:1"]
