"""The persistence seam without processes: an engine with a journal, a data dir in tmp_path, a
fake clock. Commit, close, rebuild the namespace from the same config, restore, compare what a
receiver would get byte for byte (``encode_entry``)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from proton import Message as ProtonMessage
from proton import symbol, timestamp

from servicebus_emulator.codec import encode_entry, parse_transfer, to_stored
from servicebus_emulator.config import QueueConfig, RuleConfig, SubscriptionConfig, TopicConfig, parse_config
from servicebus_emulator.entities import Namespace
from servicebus_emulator.persistence import DataDir, DataDirError
from servicebus_emulator.store import Entry, MessageStore

CONFIG = parse_config({"UserConfig": {"Namespaces": [{
    "Name": "ns",
    "Queues": [{"Name": "q", "Properties": {"LockDuration": "PT10S", "MaxDeliveryCount": 3}}],
    "Topics": [{"Name": "t", "Subscriptions": [{"Name": "s"}]}],
}]}})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Consumer:
    receive_and_delete = False

    def __init__(self) -> None:
        self.got: list[Entry] = []
        self.credits = 0

    def credit(self) -> int:
        return self.credits

    def deliver(self, entry: Entry, store: MessageStore) -> None:
        self.credits -= 1
        self.got.append(entry)


def amqp(i: int, **annotations: object) -> bytes:
    msg = ProtonMessage(id=f"m-{i}", subject=f"s-{i}", body=f"body-{i}".encode(), content_type="text/plain",
                        properties={"i": i, "color": "red", "f": 2.5})
    if annotations:
        msg.annotations = {symbol(k): v for k, v in annotations.items()}
    return bytes(msg.encode())


def boot(path: Path, clock: Clock) -> tuple[DataDir, Namespace]:
    data = DataDir(path, fsync=False)
    data.open()
    ns = Namespace(CONFIG.namespaces[0], clock, data.journal("ns"))
    data.restore(ns)
    data.commit()
    return data, ns


def deliveries(ns: Namespace, path: str) -> dict[int, bytes]:
    store = ns.store_for(path)
    return {seq: encode_entry(e) for seq, e in store.entries.items()}


def test_everything_round_trips_through_the_data_dir(tmp_path: Path) -> None:
    clock = Clock()
    data, ns = boot(tmp_path, clock)
    ns.create_topic(TopicConfig("admin-t"))
    ns.create_subscription("admin-t", SubscriptionConfig(
        "reds", lock_duration=7, rules=[RuleConfig("red", sql="color = 'red'", action="SET tagged = 1")]))
    ns.create_queue(QueueConfig("admin-q", max_delivery_count=4)).admin_extras["UserMetadata"] = "note"
    queue = ns.sender_for("q")
    for i in range(6):
        for msg in parse_transfer(amqp(i)):
            queue.accept(to_stored(msg), clock.now)
    (sched,) = parse_transfer(amqp(99, **{"x-opt-scheduled-enqueue-time": timestamp(int((clock.now + 30) * 1000))}))
    sched_seq = queue.accept(to_stored(sched), clock.now)
    for msg in parse_transfer(amqp(50)):
        ns.sender_for("admin-t").accept(to_stored(msg), clock.now)
    store = ns.store_for("q")
    consumer = Consumer()
    store.attach(consumer, clock.now)
    consumer.credits = 4
    store.dispatch(clock.now)
    a, b, c, d = consumer.got
    store.complete(a.lock_token, clock.now)  # type: ignore[arg-type]
    store.defer(b.lock_token, clock.now)  # type: ignore[arg-type]
    store.dead_letter_locked(c.lock_token, clock.now, "why", "because")  # type: ignore[arg-type]
    held = d.lock_token
    store.detach(consumer, clock.now)
    clock.now += 1
    data.commit()
    before = {p: deliveries(ns, p) for p in ("q", "q/$DeadLetterQueue", "admin-t/Subscriptions/reds")}
    last = ns.last_seq
    data.close()

    data2, ns2 = boot(tmp_path, clock)
    try:
        after = {p: deliveries(ns2, p) for p in before}
        assert after == before  # what a receiver gets, byte for byte (delivery count, lock expiry, DLQ reason ...)
        assert ns2.last_seq == last and ns2.next_seq() == last + 1
        assert ns2.sender_for("q").intake.scheduled.keys() == {sched_seq}
        sub = ns2.subscription("admin-t", "reds")
        assert sub.config.lock_duration == 7 and [r.config.sql for r in sub.rules.values()] == ["color = 'red'"]
        overrides = ns2.store_for("admin-t/Subscriptions/reds").entries[last].user_overrides or {}
        assert overrides["tagged"] == 1 and overrides["i"] == 50  # set by the rule action before the restart
        assert ns2.queues["admin-q"].config.max_delivery_count == 4
        assert ns2.queues["admin-q"].admin_extras == {"UserMetadata": "note"}
        q2 = ns2.store_for("q")
        assert q2.entries[b.seq].deferred and held in q2.locks
        # the lock taken before the restart runs out: delivery count +1, available again
        clock.now = d.locked_until + 0.1
        ns2.tick()
        assert q2.entries[d.seq].delivery_count == 1 and q2.entries[d.seq].lock_token is None
        # and the scheduled message comes due with its sequence number
        clock.now += 60
        ns2.tick()
        assert sched_seq in q2.entries
        data2.commit()
    finally:
        data2.close()
    db = sqlite3.connect(tmp_path / "emulator.sqlite3")
    try:
        rows = dict(db.execute("SELECT seq, delivery_count FROM entries WHERE store='q'").fetchall())
        assert rows[d.seq] == 1 and sched_seq in rows
        # completed message rows are collected
        assert db.execute("SELECT COUNT(*) FROM messages WHERE seq=?", (a.seq,)).fetchone()[0] == 0
    finally:
        db.close()


def test_deleting_an_entity_deletes_its_messages(tmp_path: Path) -> None:
    clock = Clock()
    data, ns = boot(tmp_path, clock)
    ns.create_queue(QueueConfig("gone"))
    for msg in parse_transfer(amqp(1)):
        ns.sender_for("gone").accept(to_stored(msg), clock.now)
    data.commit()
    ns.delete_queue("gone")
    data.close()
    data2, ns2 = boot(tmp_path, clock)
    try:
        assert "gone" not in ns2.queues
        db = sqlite3.connect(tmp_path / "emulator.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        db.close()
    finally:
        data2.close()


def test_a_second_open_of_the_same_dir_is_refused(tmp_path: Path) -> None:
    first = DataDir(tmp_path)
    first.open()
    try:
        with pytest.raises(DataDirError, match="in use by another emulator"):
            DataDir(tmp_path).open()
    finally:
        first.close()


def test_a_failed_commit_stops_the_process_with_exit_code_3(tmp_path: Path) -> None:
    """Nothing may be acknowledged that could not be stored: the process exits at once."""
    code = (
        "from servicebus_emulator.persistence import DataDir\n"
        f"d = DataDir({str(tmp_path)!r}); d.open()\n"
        "d._db.close()  # the database went away under the emulator\n"
        "d.dirty = True\n"
        "d.commit_or_exit()\n"
        "print('still running')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3, result
    assert "still running" not in result.stdout
    assert "cannot write to --data-dir" in result.stderr and "nothing unsaved is acknowledged" in result.stderr


def _peeked(ns: Namespace, path: str) -> list[tuple[int, object, bytes]]:
    """(sequence number, x-opt-message-state, bytes) of what peek returns on ``path``."""
    out = []
    for entry in ns.store_for(path).peek(0, 100):
        raw = encode_entry(entry, peek=True)
        decoded = ProtonMessage()
        decoded.decode(raw)
        out.append((entry.seq, decoded.annotations[symbol("x-opt-message-state")], raw))
    return out


def test_peek_shows_scheduled_and_deferred_messages_the_same_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    data, ns = boot(tmp_path, clock)
    queue = ns.sender_for("q")
    at = timestamp(int((clock.now + 30) * 1000))
    seqs = []
    for i, extra in enumerate([{}, {"x-opt-scheduled-enqueue-time": at}, {"x-opt-scheduled-enqueue-time": at}, {}]):
        (parsed,) = parse_transfer(amqp(i, **extra))
        seqs.append(queue.accept(to_stored(parsed), clock.now))
    active, sched_a, sched_b, to_defer = seqs
    store = ns.store_for("q")
    consumer = Consumer()
    store.attach(consumer, clock.now)
    consumer.credits = 2
    store.dispatch(clock.now)
    assert [e.seq for e in consumer.got] == [active, to_defer]
    store.release(consumer.got[0].lock_token, clock.now)  # type: ignore[arg-type]
    store.defer(consumer.got[1].lock_token, clock.now)  # type: ignore[arg-type]
    store.detach(consumer, clock.now)
    data.commit()
    before = _peeked(ns, "q")
    assert [(seq, state) for seq, state, _ in before] == [(active, 0), (sched_a, 2), (sched_b, 2), (to_defer, 1)]
    decoded = ProtonMessage()
    decoded.decode(before[1][2])
    assert decoded.annotations[symbol("x-opt-scheduled-enqueue-time")] == at
    data.close()

    data2, ns2 = boot(tmp_path, clock)
    try:
        assert _peeked(ns2, "q") == before  # byte for byte, states included
        ns2.sender_for("q").cancel_scheduled(sched_b)
        data2.commit()
    finally:
        data2.close()
    data3, ns3 = boot(tmp_path, clock)
    try:
        assert [(seq, state) for seq, state, _ in _peeked(ns3, "q")] == [(active, 0), (sched_a, 2), (to_defer, 1)]
        clock.now += 31
        ns3.tick()
        assert [(seq, state) for seq, state, _ in _peeked(ns3, "q")] == [(active, 0), (sched_a, 0), (to_defer, 1)]
    finally:
        data3.close()
