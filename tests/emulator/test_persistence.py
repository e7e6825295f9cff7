"""``--data-dir``: emulator state survives a SIGKILL and a clean restart (real processes, real SDK).

Each test runs the emulator as a subprocess, drives it with the aio ``azure-servicebus`` SDK,
kills or stops it, starts a new process on the same port with the same data dir, and checks
what the SDK receives. Without ``--data-dir`` the state is gone (documented behaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.management import SqlRuleFilter

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import ROOT, EmulatorProcess

LOCK = 3.0  # LockDuration of queue q (seconds)
SCHEDULE_AHEAD = 10.0  # the scheduled message is still pending at the kill

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "persist",
                "Queues": [{"Name": "q", "Properties": {"LockDuration": "PT3S", "MaxDeliveryCount": 5}},
                           {"Name": "sq", "Properties": {"RequiresSession": True, "LockDuration": "PT30S"}}],
                "Topics": [{"Name": "t", "Subscriptions": [
                    {"Name": "s"}, {"Name": "ss", "Properties": {"RequiresSession": True}}]}],
            }
        ]
    }
}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(CONFIG))
    return path


class Restartable:
    """The emulator with one data dir (or none), restarted on the port it first got."""

    def __init__(self, config: Path, data_dir: Path | None):
        self.config, self.data_dir = config, data_dir
        self.port = 0
        self.proc: EmulatorProcess | None = None

    def start(self) -> EmulatorProcess:
        args = ["--data-dir", str(self.data_dir)] if self.data_dir is not None else []
        deadline = time.monotonic() + 15
        while True:
            proc = EmulatorProcess(self.config, port=self.port, extra_args=args)
            try:
                proc.start()
                break
            except RuntimeError:  # the port of the killed process may be held a moment
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.proc = proc
        self.port = proc.port_of("persist")
        return proc

    @property
    def conn(self) -> str:
        assert self.proc is not None
        return self.proc.connection_string("persist")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL)

    def stop(self) -> int | None:
        assert self.proc is not None
        return self.proc.stop(signal.SIGTERM)


@pytest.fixture
def emulator(config_path: Path, tmp_path: Path) -> Iterator[Restartable]:
    em = Restartable(config_path, tmp_path / "data")
    em.start()
    try:
        yield em
    finally:
        if em.proc is not None:
            em.proc.stop()


def _message(i: int, **extra: Any) -> ServiceBusMessage:
    return ServiceBusMessage(
        f"body-{i}".encode(), application_properties={"i": i, "color": "red" if i % 2 else "blue", "f": 1.5},
        message_id=f"m-{i}", subject=f"subject-{i}", correlation_id=f"c-{i}", content_type="text/plain",
        **extra,
    )


def _snapshot(msg: ServiceBusReceivedMessage) -> dict[str, Any]:
    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in (msg.application_properties or {}).items()}
    return {
        "body": b"".join(msg.body), "seq": msg.sequence_number, "message_id": msg.message_id,
        "subject": msg.subject, "correlation_id": msg.correlation_id, "content_type": msg.content_type,
        "props": props, "enqueued": msg.enqueued_time_utc, "state": msg.state,
        "scheduled": msg.scheduled_enqueue_time_utc,
    }


async def _receive_all(conn: str, queue: str | None = None, *, topic: str | None = None, sub: str | None = None,
                       sub_queue: ServiceBusSubQueue | None = None, expect: int, within: float = 15.0,
                       complete: bool = True) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + within
    async with servicebus_client(connection_string=conn) as client:
        if queue is not None:
            receiver = client.get_queue_receiver(queue, sub_queue=sub_queue)
        else:
            assert topic is not None and sub is not None
            receiver = client.get_subscription_receiver(topic, sub, sub_queue=sub_queue)
        async with receiver:
            while len(got) < expect and time.monotonic() < deadline:
                batch = await receiver.receive_messages(max_message_count=50, max_wait_time=1)
                for msg in batch:
                    got.append(msg)
                    if complete:
                        await receiver.complete_message(msg)
    return got


@pytest.mark.slow
async def test_sigkill_keeps_messages_locks_schedules_deferrals_dead_letters_and_admin_entities(
    emulator: Restartable,
) -> None:
    conn = emulator.conn
    async with admin_client(connection_string=conn) as admin:
        await admin.create_queue("admin-q", lock_duration=dt.timedelta(seconds=7), max_delivery_count=4,
                                 user_metadata="kept across restarts")
        await admin.create_topic("admin-t")
        await admin.create_subscription("admin-t", "reds")
        await admin.delete_rule("admin-t", "reds", "$Default")
        await admin.create_rule("admin-t", "reds", "only-red", filter=SqlRuleFilter("color = 'red'"))

    n = 12
    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_sender("q") as sender:
            await sender.send_messages([_message(i) for i in range(n)])
            scheduled_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=SCHEDULE_AHEAD)
            (scheduled_seq,) = await sender.schedule_messages(_message(100), scheduled_at)
        async with client.get_topic_sender("admin-t") as sender:
            await sender.send_messages([_message(i) for i in range(4)])  # 2 red
        async with client.get_queue_sender("admin-q") as sender:
            await sender.send_messages(_message(200))
    # settle four of them in four ways; the fifth stays locked by a receiver that is open at the kill
    holder_client = servicebus_client(connection_string=conn)
    receiver = holder_client.get_queue_receiver("q", prefetch_count=0)
    await receiver.__aenter__()
    first: list[ServiceBusReceivedMessage] = []
    while len(first) < 5:
        first += await receiver.receive_messages(max_message_count=5 - len(first), max_wait_time=2)
    by_i = {m.application_properties[b"i"]: m for m in first}
    assert sorted(by_i) == [0, 1, 2, 3, 4]
    await receiver.complete_message(by_i[0])
    await receiver.defer_message(by_i[1])
    await receiver.dead_letter_message(by_i[2], reason="bad-input", error_description="no good")
    await receiver.abandon_message(by_i[3])
    locked = by_i[4]  # not settled: locked when the emulator dies
    deferred_seq = by_i[1].sequence_number
    async with servicebus_client(connection_string=conn) as client, client.get_queue_receiver("q") as peeker:
        before = {m.message_id: _snapshot(m) for m in await peeker.peek_messages(50, sequence_number=1)}
    async with admin_client(connection_string=conn) as admin:
        assert (await admin.get_queue_runtime_properties("q")).scheduled_message_count == 1

    # m-0 completed, m-2 dead-lettered; the others active, deferred or locked, and m-100 scheduled
    assert sorted(before) == sorted(f"m-{i}" for i in (1, 3, 4, *range(5, n), 100))
    states = {mid: snap["state"] for mid, snap in before.items()}
    assert states.pop("m-100") == ServiceBusMessageState.SCHEDULED and states.pop("m-1") == ServiceBusMessageState.DEFERRED
    assert set(states.values()) == {ServiceBusMessageState.ACTIVE}
    assert before["m-100"]["seq"] == scheduled_seq
    assert before["m-100"]["scheduled"] == scheduled_at.replace(microsecond=scheduled_at.microsecond // 1000 * 1000)
    last_seq = max(s["seq"] for s in before.values())
    emulator.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(holder_client.close(), 10)
    emulator.start()
    conn = emulator.conn

    async with admin_client(connection_string=conn) as admin:
        queue = await admin.get_queue("admin-q")
        assert queue.lock_duration == dt.timedelta(seconds=7) and queue.max_delivery_count == 4
        assert queue.user_metadata == "kept across restarts"
        rules = [r async for r in admin.list_rules("admin-t", "reds")]
        assert [r.name for r in rules] == ["only-red"]
        assert isinstance(rules[0].filter, SqlRuleFilter) and rules[0].filter.sql_expression == "color = 'red'"
        runtime = await admin.get_queue_runtime_properties("q")
        assert runtime.scheduled_message_count == 1

    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_receiver("q") as receiver:
            after_peek = {m.message_id: _snapshot(m) for m in await receiver.peek_messages(50, sequence_number=1)}
    # bodies, properties, sequence numbers, enqueued times, states (the scheduled one still scheduled)
    assert after_peek == before

    # the active ones (5..11 untouched, 3 abandoned once), 4 once its lock (taken before the kill)
    # expires, and the scheduled one when it comes due
    got = await _receive_all(conn, "q", expect=n - 2, within=SCHEDULE_AHEAD + 10)
    counts = {m.message_id: m.delivery_count for m in got}
    assert sorted(counts) == sorted(f"m-{i}" for i in (3, 4, *range(5, n), 100))
    assert counts["m-3"] == 1  # abandoned before the kill
    assert counts["m-4"] == 1  # locked at the kill: the lock was lost when it expired
    assert all(counts[f"m-{i}"] == 0 for i in (*range(5, n), 100))
    for m in got:
        if m.message_id == "m-100":
            assert m.sequence_number == scheduled_seq and b"".join(m.body) == b"body-100"
            continue
        snap = _snapshot(m)
        assert snap["seq"] == before[m.message_id]["seq"] and snap["body"] == before[m.message_id]["body"]
        assert snap["props"] == before[m.message_id]["props"] and snap["subject"] == before[m.message_id]["subject"]
    assert locked.sequence_number == {m.message_id: m for m in got}["m-4"].sequence_number

    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_receiver("q") as receiver:
            (deferred,) = await receiver.receive_deferred_messages([deferred_seq])
            assert deferred.message_id == "m-1" and b"".join(deferred.body) == b"body-1"
            await receiver.complete_message(deferred)
    (dead,) = await _receive_all(conn, "q", sub_queue=ServiceBusSubQueue.DEAD_LETTER, expect=1)
    assert (dead.message_id, dead.dead_letter_reason, dead.dead_letter_error_description) == (
        "m-2", "bad-input", "no good")

    reds = await _receive_all(conn, topic="admin-t", sub="reds", expect=2)
    assert sorted(m.message_id for m in reds) == ["m-1", "m-3"]
    (in_admin_q,) = await _receive_all(conn, "admin-q", expect=1)
    assert in_admin_q.message_id == "m-200"

    # new sends continue the numbering
    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_sender("q") as sender:
            await sender.send_messages(_message(300))
    (fresh,) = await _receive_all(conn, "q", expect=1)
    assert fresh.sequence_number > max(last_seq, scheduled_seq)


async def test_sigkill_keeps_session_state_and_session_messages_in_order(emulator: Restartable) -> None:
    conn = emulator.conn
    async with admin_client(connection_string=conn) as admin:
        await admin.create_queue("admin-sq", requires_session=True)
    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_sender("sq") as sender:
            await sender.send_messages([ServiceBusMessage(f"a{i}", session_id="a") for i in range(5)]
                                       + [ServiceBusMessage(f"b{i}", session_id="b") for i in range(3)])
        async with client.get_topic_sender("t") as sender:
            await sender.send_messages(ServiceBusMessage("t0", session_id="ts"))
        async with client.get_queue_sender("admin-sq") as sender:
            await sender.send_messages(ServiceBusMessage("x0", session_id="x"))
        async with client.get_queue_receiver("sq", session_id="b") as receiver:
            await receiver.session.set_state(b"b-state")
        async with client.get_subscription_receiver("t", "ss", session_id="ts") as receiver:
            await receiver.session.set_state("ts-state")
        async with client.get_queue_receiver("admin-sq", session_id="x") as receiver:
            await receiver.session.set_state(b"x-state")
    # session a: a0 completed, a1 received and locked (under the session lock) when the emulator dies
    holder_client = servicebus_client(connection_string=conn)
    holder = holder_client.get_queue_receiver("sq", session_id="a", prefetch_count=0)
    await holder.__aenter__()
    first = await holder.receive_messages(max_message_count=1, max_wait_time=5)
    await holder.complete_message(first[0])
    second = await holder.receive_messages(max_message_count=1, max_wait_time=5)
    assert [str(m) for m in first + second] == ["a0", "a1"]
    await holder.session.set_state(b"a: done up to a0")
    emulator.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(holder_client.close(), 10)
    emulator.start()
    conn = emulator.conn

    async with servicebus_client(connection_string=conn) as client:
        async with client.get_queue_receiver("sq", session_id="a") as receiver:  # at once: no lock outlives the kill
            assert await receiver.session.get_state() == b"a: done up to a0"
            got = []
            while len(got) < 4:
                got += await receiver.receive_messages(max_message_count=4 - len(got), max_wait_time=2)
            assert [str(m) for m in got] == ["a1", "a2", "a3", "a4"]
            assert [m.delivery_count for m in got] == [1, 0, 0, 0]  # a1's lock was lost with the process
            for msg in got:
                await receiver.complete_message(msg)
        async with client.get_queue_receiver("sq", session_id="b") as receiver:
            assert await receiver.session.get_state() == b"b-state"
            got = []
            while len(got) < 3:
                got += await receiver.receive_messages(max_message_count=3 - len(got), max_wait_time=2)
            assert [str(m) for m in got] == ["b0", "b1", "b2"]
        async with client.get_subscription_receiver("t", "ss", session_id="ts") as receiver:
            assert await receiver.session.get_state() == b"ts-state"
            assert [str(m) for m in await receiver.receive_messages(max_wait_time=2)] == ["t0"]
        async with client.get_queue_receiver("admin-sq", session_id="x") as receiver:  # created via the admin API
            assert await receiver.session.get_state() == b"x-state"
            assert [str(m) for m in await receiver.receive_messages(max_wait_time=2)] == ["x0"]
    async with admin_client(connection_string=conn) as admin:
        assert (await admin.get_queue("admin-sq")).requires_session is True


@pytest.mark.slow
async def test_clean_restart_keeps_state_and_consumed_messages_stay_consumed(emulator: Restartable) -> None:
    conn = emulator.conn
    async with servicebus_client(connection_string=conn) as client:
        async with client.get_topic_sender("t") as sender:
            await sender.send_messages([_message(i) for i in range(10)])
        async with client.get_subscription_receiver("t", "s", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
                                                    prefetch_count=0) as receiver:
            taken: list[ServiceBusReceivedMessage] = []
            while len(taken) < 4:
                taken += await receiver.receive_messages(max_message_count=4 - len(taken), max_wait_time=2)
    assert emulator.stop() == 0
    emulator.start()
    got = await _receive_all(emulator.conn, topic="t", sub="s", expect=6)
    assert sorted(m.message_id for m in got) == sorted(f"m-{i}" for i in range(10) if f"m-{i}" not in
                                                       {t.message_id for t in taken})
    assert all(m.delivery_count == 0 for m in got)
    await asyncio.sleep(0.5)
    assert await _receive_all(emulator.conn, topic="t", sub="s", expect=1, within=2) == []


@pytest.mark.slow
async def test_without_data_dir_state_is_gone_after_a_restart(config_path: Path) -> None:
    em = Restartable(config_path, None)
    em.start()
    try:
        async with admin_client(connection_string=em.conn) as admin:
            await admin.create_queue("admin-q")
        async with servicebus_client(connection_string=em.conn) as client:
            async with client.get_queue_sender("q") as sender:
                await sender.send_messages([_message(i) for i in range(3)])
        em.kill()
        em.start()
        async with admin_client(connection_string=em.conn) as admin:
            with pytest.raises(ResourceNotFoundError):
                await admin.get_queue("admin-q")
        assert await _receive_all(em.conn, "q", expect=1, within=2) == []
        async with servicebus_client(connection_string=em.conn) as client:
            async with client.get_queue_sender("q") as sender:
                await sender.send_messages(_message(9))
        (fresh,) = await _receive_all(em.conn, "q", expect=1)
        assert fresh.sequence_number == 1  # numbering starts again
    finally:
        if em.proc is not None:
            em.proc.stop()


def _run_emulator(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servicebus_emulator", "--port", "0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_corrupt_data_dir_exits_2_with_what_to_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "emulator.sqlite3").write_bytes(b"this is not a database" * 200)
    result = _run_emulator("--data-dir", str(data))
    assert result.returncode == 2, result
    assert "not a usable SQLite database" in result.stderr and "move it away" in result.stderr


def test_data_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = _run_emulator("--data-dir", str(target))
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr, result


def test_data_dir_in_use_by_another_emulator_exits_2(tmp_path: Path, config_path: Path) -> None:
    first = EmulatorProcess(config_path, extra_args=["--data-dir", str(tmp_path / "data")])
    first.start()
    try:
        result = _run_emulator("--config", str(config_path), "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 2 and "in use by another emulator" in result.stderr, result
    finally:
        first.stop()


def test_data_dir_that_cannot_be_created_exits_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = _run_emulator("--data-dir", str(tmp_path / "file" / "data"))
    assert result.returncode == 2 and "cannot create --data-dir" in result.stderr, result


def test_a_new_data_dir_is_private_to_its_user(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It holds the keys of the entities and every message body: mode 0700, whatever the umask."""
    import os

    from servicebus_emulator.persistence import DataDir

    old = os.umask(0o002)
    try:
        data = DataDir(tmp_path / "new" / "data")
        data.open()
        data.close()
    finally:
        os.umask(old)
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    existing = DataDir(shared)
    with caplog.at_level("WARNING", logger="servicebus_emulator.persistence"):
        existing.open()
    existing.close()
    assert "can be read by other users (mode 755)" in caplog.text and "chmod 700" in caplog.text


def test_database_is_wal_sqlite_with_schema_version(tmp_path: Path, config_path: Path) -> None:
    proc = EmulatorProcess(config_path, extra_args=["--data-dir", str(tmp_path / "data")])
    proc.start()
    assert proc.stop() == 0, proc.output
    db = sqlite3.connect(tmp_path / "data" / "emulator.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "2"
        kinds = sorted(r[0] for r in db.execute("SELECT kind FROM entities WHERE ns='persist'"))
        assert kinds == ["queue", "queue", "subscription", "subscription", "topic"]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"entities", "messages", "entries", "session_states"} <= tables
    finally:
        db.close()
