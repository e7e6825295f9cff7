"""State that survives a restart: ``--data-dir DIR`` keeps the namespaces in ``DIR/emulator.sqlite3``.

The entity engine stays I/O-free: its stores and namespaces report every change to a
``store.Journal`` (entry added/changed/removed, store purged, message accepted or scheduled,
entities changed). :class:`NamespaceJournal` only records those reports (a dict of dirty keys);
:meth:`DataDir.commit` writes them all in one SQLite transaction.

When is a change durable? The emulator commits

- before the AMQP adapter writes any byte to a client (``AmqpConnection.flush``): a send is
  settled ``accepted``, a message is transferred to a receiver (locked, or deleted in
  receive-and-delete mode) and a complete/abandon/defer/dead-letter is confirmed only after the
  change it reports is committed;
- before the admin API answers a write (create/update/delete of an entity or rule);
- after each clock tick (50 ms) that changed something (lock expiry, TTL, scheduled messages
  coming due, AutoDeleteOnIdle);
- on a clean stop.

Commits are grouped: one transaction holds every change made since the last one, across
connections and namespaces. With ``--fsync on`` (the default) SQLite runs in WAL mode with
``synchronous=FULL``, so a commit returns only after the WAL is fsynced: what a client was told
survives a SIGKILL, an OS crash and a power loss. With ``--fsync off`` (``synchronous=NORMAL``)
a commit is handed to the OS without fsync: it survives a SIGKILL of the emulator, not an OS
crash or power loss (the database stays consistent, the last commits may be missing).

If a commit fails (disk full, file removed, permissions), the emulator stops at once with exit
code 3 rather than acknowledge what it could not store.

What is kept: entities (topics, subscriptions with their rules, queues: the engine's settings),
messages (all AMQP sections as sent, with size, enqueued time and sequence number), each copy's
state (delivery count, lock token and ``locked_until``, deferred, dead-letter reason and source,
properties set by rule actions or abandon), scheduled messages, the state of each session of a
session-enabled queue or subscription, and the last sequence number. Session locks are not
kept: a message locked under a session lock at the stop counts a failed delivery and is ready
again in its session's order.
Admin-only fields (``UserMetadata``, ``Status``, ``ForwardTo`` ...) are kept
with their entity. Not kept: duplicate-detection history, SQL rule parameters as written (the
substituted expression is kept).

On start, entities of the config file are built from the config (its settings and rules win
over what the data dir holds for them); entities only in the data dir (created through the
admin API) are restored as they were; then messages are put back. A message that was locked at
a crash keeps its lock until ``locked_until``; then the lock counts as lost (delivery count
+1) and the message is available again, as when a receiver disappears on Azure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import IO, Any

from proton import Data, Described, ulong

from .codec import HEADER, MESSAGE_ANN, Sections, parse_message, to_stored
from .config import PolicyConfig, QueueConfig, RuleConfig, SubscriptionConfig, TopicConfig
from .entities import Namespace
from .errors import DataDirError, EmulatorError
from .sessions import SessionStore
from .store import Entry, Message, MessageStore

log = logging.getLogger("servicebus_emulator.persistence")

DB_NAME = "emulator.sqlite3"
LOCK_NAME = "emulator.lock"
SCHEMA_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces(ns TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities(
    ns TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY(ns, kind, path));
CREATE TABLE IF NOT EXISTS messages(
    ns TEXT NOT NULL, seq INTEGER NOT NULL, owner TEXT NOT NULL, enqueued_at REAL NOT NULL,
    size INTEGER NOT NULL, pending INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY(ns, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries(
    ns TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, expires_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL, lock_token BLOB, locked_until REAL NOT NULL,
    deferred INTEGER NOT NULL, overrides BLOB, dl_reason TEXT, dl_description TEXT, dl_source TEXT,
    PRIMARY KEY(ns, store, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_seq ON entries(ns, seq);
CREATE TABLE IF NOT EXISTS session_states(
    ns TEXT NOT NULL, store TEXT NOT NULL, session_id TEXT NOT NULL, state BLOB NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY(ns, store, session_id)) WITHOUT ROWID;
"""

_KIND_ORDER = {"topic": 0, "queue": 1, "subscription": 2}


# -- values -----------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": value.total_seconds()}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    raise TypeError(f"cannot persist a {type(value).__name__} in an entity's settings")


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return dt.datetime.fromisoformat(obj["$datetime"])
        if "$timedelta" in obj:
            return dt.timedelta(seconds=obj["$timedelta"])
        if "$uuid" in obj:
            return uuid.UUID(obj["$uuid"])
    return obj


def _dump(value: Any) -> str:
    return json.dumps(value, default=_json_default, allow_nan=True)


def _load(text: str) -> Any:
    return json.loads(text, object_hook=_json_hook)


def _amqp_encode(value: Any) -> bytes:
    data = Data()
    data.put_object(value)
    return bytes(data.encode())


def _amqp_decode(raw: bytes) -> Any:
    data = Data()
    data.decode(raw)
    data.rewind()
    data.next()
    value = data.get_object()
    if isinstance(value, dict):
        return {(bytes(k) if isinstance(k, memoryview) else k): (bytes(v) if isinstance(v, memoryview) else v)
                for k, v in value.items()}
    return value


def encode_payload(sections: Sections) -> bytes:
    """The message as one AMQP byte string: header and message annotations re-encoded, the bare
    message (properties, application properties, body, footer) exactly as the sender sent it."""
    return b"".join((
        _amqp_encode(Described(ulong(HEADER), list(sections.header))),
        _amqp_encode(Described(ulong(MESSAGE_ANN), dict(sections.annotations))),
        sections.properties_raw,
        sections.app_props_raw,
        sections.body_raw,
    ))


def decode_message(payload: bytes, seq: int, enqueued_at: float, size: int) -> Message:
    msg = to_stored(parse_message(payload))
    msg.seq = seq
    msg.enqueued_at = enqueued_at
    msg.size = size
    msg.system["sequencenumber"] = seq
    return msg


def _policies(items: list[dict[str, Any]]) -> list[PolicyConfig]:
    return [PolicyConfig(p["name"], p["key"], frozenset(p["rights"])) for p in items]


def _topic_config(data: dict[str, Any]) -> TopicConfig:
    data = dict(data)
    data["policies"] = _policies(data.get("policies", []))
    data["subscriptions"] = []
    return TopicConfig(**data)


def _subscription_config(data: dict[str, Any]) -> SubscriptionConfig:
    data = dict(data)
    data["rules"] = [RuleConfig(**r) for r in data.get("rules", [])]
    return SubscriptionConfig(**data)


# -- the journal of one namespace --------------------------------------------------------------
class NamespaceJournal:
    """Records what the engine of one namespace reports (``store.Journal``); no I/O."""

    def __init__(self, owner: DataDir, ns_name: str):
        self.owner = owner
        self.ns_name = ns_name
        self.namespace: Namespace | None = None
        self.entries: dict[tuple[str, int], tuple[MessageStore, Entry]] = {}
        self.messages: dict[int, tuple[str, Message, bool]] = {}
        self.purged: list[str] = []
        self.session_states: dict[tuple[str, str], tuple[bytes | None, float]] = {}
        self.entities_dirty = False

    @property
    def dirty(self) -> bool:
        return bool(self.entries or self.messages or self.purged or self.session_states or self.entities_dirty)

    def entry_changed(self, store: MessageStore, entry: Entry) -> None:
        self.entries[(store.path, entry.seq)] = (store, entry)
        self.owner.dirty = True

    def store_purged(self, store: MessageStore) -> None:
        self.entries = {k: v for k, v in self.entries.items() if v[0] is not store}
        self.session_states = {k: v for k, v in self.session_states.items() if k[0] != store.path}
        self.purged.append(store.path)
        self.owner.dirty = True

    def message_changed(self, owner_name: str, msg: Message, pending: bool) -> None:
        self.messages[msg.seq] = (owner_name, msg, pending)
        self.owner.dirty = True

    def entities_changed(self) -> None:
        self.entities_dirty = True
        self.owner.dirty = True

    def session_state_changed(self, store: MessageStore, session_id: str, state: bytes | None,
                              updated_at: float) -> None:
        self.session_states[(store.path, session_id)] = (state, updated_at)
        self.owner.dirty = True

    def commit(self) -> None:
        """Write everything recorded since the last commit (durable on return)."""
        self.owner.commit()

    # -- writing (inside DataDir.commit's transaction) -------------------------------------
    def write(self, db: sqlite3.Connection) -> None:
        ns = self.ns_name
        namespace = self.namespace
        if self.entities_dirty and namespace is not None:
            self._write_entities(db, namespace)
        for path in self.purged:
            db.execute("DELETE FROM entries WHERE ns=? AND store=?", (ns, path))
            db.execute("DELETE FROM session_states WHERE ns=? AND store=?", (ns, path))
        for (path, session_id), (state, updated_at) in self.session_states.items():
            if state is None:
                db.execute("DELETE FROM session_states WHERE ns=? AND store=? AND session_id=?", (ns, path, session_id))
            else:
                db.execute("INSERT OR REPLACE INTO session_states VALUES (?,?,?,?,?)",
                           (ns, path, session_id, state, updated_at))
        gc: set[int] = set()
        if self.messages:
            rows = []
            for seq, (owner_name, msg, pending) in self.messages.items():
                rows.append((ns, seq, owner_name, msg.enqueued_at, msg.size, int(pending),
                             encode_payload(msg.payload)))
                if not pending:
                    gc.add(seq)
            db.executemany("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?)", rows)
        if self.entries:
            upserts, deletes = [], []
            for (path, seq), (store, entry) in self.entries.items():
                if not store.deleted and store.entries.get(seq) is entry:
                    upserts.append(_entry_row(ns, path, entry))
                else:
                    deletes.append((ns, path, seq))
                    gc.add(seq)
            if upserts:
                db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", upserts)
            if deletes:
                db.executemany("DELETE FROM entries WHERE ns=? AND store=? AND seq=?", deletes)
        if gc:
            db.executemany(
                "DELETE FROM messages WHERE ns=? AND seq=? AND pending=0 "
                "AND NOT EXISTS (SELECT 1 FROM entries WHERE ns=? AND seq=?)",
                [(ns, seq, ns, seq) for seq in gc],
            )
        if self.purged:
            db.execute("DELETE FROM messages WHERE ns=? AND pending=0 "
                       "AND seq NOT IN (SELECT seq FROM entries WHERE ns=?)", (ns, ns))
        if namespace is not None:
            db.execute("INSERT OR REPLACE INTO namespaces VALUES (?,?)", (ns, namespace.last_seq))
        self.entries.clear()
        self.messages.clear()
        self.purged.clear()
        self.session_states.clear()
        self.entities_dirty = False

    def _write_entities(self, db: sqlite3.Connection, namespace: Namespace) -> None:
        ns = self.ns_name
        rows = []
        for topic in namespace.topics.values():
            cfg = dataclasses.asdict(topic.config)
            cfg["subscriptions"] = []
            rows.append((ns, "topic", topic.name, topic.created_at, topic.updated_at,
                         _dump({"config": cfg, "extras": topic.admin_extras})))
            for sub in topic.subscriptions.values():
                scfg = dataclasses.asdict(sub.config)
                scfg["rules"] = [dataclasses.asdict(rule.config) for rule in sub.rules.values()]
                rows.append((ns, "subscription", f"{topic.name}/{sub.name}", sub.created_at, sub.updated_at,
                             _dump({"config": scfg, "extras": sub.admin_extras})))
        for queue in namespace.queues.values():
            rows.append((ns, "queue", queue.name, queue.created_at, queue.updated_at,
                         _dump({"config": dataclasses.asdict(queue.config), "extras": queue.admin_extras})))
        db.execute("DELETE FROM entities WHERE ns=?", (ns,))
        db.executemany("INSERT INTO entities VALUES (?,?,?,?,?,?)", rows)
        # scheduled messages of a deleted topic or queue go with it
        live = [t.name for t in namespace.topics.values()] + [q.name for q in namespace.queues.values()]
        marks = ",".join("?" * len(live)) or "NULL"
        db.execute(f"DELETE FROM messages WHERE ns=? AND pending=1 AND owner NOT IN ({marks})",  # noqa: S608 - placeholders only
                   (ns, *live))

    # -- reading ---------------------------------------------------------------------------
    def restore(self, db: sqlite3.Connection, namespace: Namespace) -> dict[str, int]:
        """Put the persisted state of this namespace into ``namespace`` (built from the config)."""
        ns = self.ns_name
        counts = {"entities": 0, "messages": 0, "entries": 0, "scheduled": 0, "dropped": 0, "session_states": 0}
        rows = db.execute("SELECT kind, path, created_at, updated_at, config FROM entities WHERE ns=?",
                          (ns,)).fetchall()
        rows.sort(key=lambda r: _KIND_ORDER.get(r[0], 9))
        for kind, path, created, updated, raw in rows:
            stored = _load(raw)
            data, extras = stored["config"], stored.get("extras") or {}
            obj: Any
            declared: Any
            if kind == "topic":
                declared = namespace.topics.get(path.lower())
                if declared is not None:  # declared in the config file: the config wins
                    declared.admin_extras.update(extras)
                    continue
                obj = namespace.create_topic(_topic_config(data))
            elif kind == "queue":
                # before sessions, a queue's RequiresSession was kept with its admin-only fields
                data.setdefault("requires_session", bool(extras.pop("RequiresSession", False)))
                declared = namespace.queues.get(path.lower())
                if declared is not None:
                    declared.admin_extras.update(extras)
                    continue
                obj = namespace.create_queue(QueueConfig(**data))
            elif kind == "subscription":
                topic_name, sub_name = path.split("/", 1)
                topic = namespace.topics.get(topic_name.lower())
                if topic is None:
                    continue
                declared = topic.subscriptions.get(sub_name.lower())
                if declared is not None:
                    declared.admin_extras.update(extras)
                    continue
                obj = namespace.create_subscription(topic.name, _subscription_config(data))
                if not data.get("rules"):
                    obj.rules.clear()  # every rule had been removed through the admin API
            else:
                continue
            obj.created_at, obj.updated_at = created, updated
            obj.admin_extras.update(extras)
            counts["entities"] += 1
        (last,) = db.execute("SELECT COALESCE(MAX(last_seq), 0) FROM namespaces WHERE ns=?", (ns,)).fetchone()
        messages: dict[int, Message] = {}
        for seq, owner_name, enqueued_at, size, pending, payload in db.execute(
            "SELECT seq, owner, enqueued_at, size, pending, payload FROM messages WHERE ns=? ORDER BY seq", (ns,)
        ):
            last = max(last, seq)
            msg = decode_message(bytes(payload), seq, enqueued_at, size)
            if pending:
                try:
                    owner = namespace.sender_for(owner_name)
                except EmulatorError:
                    counts["dropped"] += 1
                    log.warning("scheduled message %d of %s dropped: the entity no longer exists", seq, owner_name)
                    continue
                owner.intake.restore_scheduled(msg)
                counts["scheduled"] += 1
            else:
                messages[seq] = msg
        stores: dict[str, MessageStore | None] = {}
        for (path, seq, expires_at, delivery_count, token, locked_until, deferred, overrides, reason,
             description, source) in db.execute(
            "SELECT store, seq, expires_at, delivery_count, lock_token, locked_until, deferred, overrides, "
            "dl_reason, dl_description, dl_source FROM entries WHERE ns=? ORDER BY seq", (ns,)
        ):
            if path not in stores:
                try:
                    stores[path] = namespace.store_for(path)
                except EmulatorError:
                    stores[path] = None
                    log.warning("messages of %s dropped: the entity no longer exists", path)
            store = stores[path]
            shared = messages.get(seq)
            if store is None or shared is None:
                counts["dropped"] += 1
                continue
            store.restore(Entry(
                msg=shared,
                seq=seq,
                expires_at=expires_at,
                delivery_count=delivery_count,
                lock_token=None if token is None else uuid.UUID(bytes=bytes(token)),
                locked_until=locked_until,
                deferred=bool(deferred),
                user_overrides=None if overrides is None else _amqp_decode(bytes(overrides)),
                dead_letter=None if reason is None else (reason, description or ""),
                dead_letter_source=source,
            ))
            counts["entries"] += 1
        for path, session_id, state, updated_at in db.execute(
            "SELECT store, session_id, state, updated_at FROM session_states WHERE ns=?", (ns,)
        ):
            try:
                store = namespace.store_for(path)
            except EmulatorError:
                store = None
            if isinstance(store, SessionStore):
                store.restore_state(session_id, bytes(state), updated_at)
                counts["session_states"] += 1
            else:
                counts["dropped"] += 1
                log.warning("state of session %r of %s dropped: the entity no longer requires sessions", session_id, path)
        counts["messages"] = len(messages)
        namespace.restore_last_seq(last)
        self.namespace = namespace
        self.entities_dirty = True  # the config may have added or changed entities
        return counts


def _entry_row(ns: str, path: str, entry: Entry) -> tuple[Any, ...]:
    dead = entry.dead_letter
    return (
        ns, path, entry.seq, entry.expires_at, entry.delivery_count,
        None if entry.lock_token is None else entry.lock_token.bytes, entry.locked_until, int(entry.deferred),
        _amqp_encode(entry.user_overrides) if entry.user_overrides else None,
        None if dead is None else dead[0], None if dead is None else dead[1], entry.dead_letter_source,
    )


# -- the data dir ------------------------------------------------------------------------------
class DataDir:
    """One SQLite database (WAL) for every namespace of an emulator process, and a lock file
    so that two emulators never share it."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.dirty = False
        self.journals: dict[str, NamespaceJournal] = {}
        self.commits = 0
        self._lock_file: IO[str] | None = None
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Create or open the data dir; raises DataDirError with what to fix."""
        where = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"--data-dir {where} is a file, not a directory: give a directory path")
        created = not self.path.exists()
        try:
            # it holds the keys of the entities and every message body: this user only
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if created:
                os.chmod(self.path, 0o700)  # whatever the umask
        except OSError as exc:
            raise DataDirError(f"cannot create --data-dir {where}: {exc.strerror}; create it or pick another path") from exc
        if not created and self.path.stat().st_mode & 0o077:
            log.warning("--data-dir %s can be read by other users (mode %o): it holds keys and message bodies; "
                        "chmod 700 it", where, self.path.stat().st_mode & 0o777)
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise DataDirError(f"--data-dir {where} is not writable by this user: fix its permissions or pick another")
        try:
            self._lock_file = open(self.path / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DataDirError(
                f"--data-dir {where} is in use by another emulator process: stop it or pick another directory"
            ) from exc
        except OSError as exc:
            raise DataDirError(f"cannot lock {self.path / LOCK_NAME}: {exc.strerror}") from exc
        db_path = self.path / DB_NAME
        try:
            db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=True)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataDirError(f"{db_path}: SQLite refused WAL mode ({mode}); put the data dir on a local disk")
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise DataDirError(
                    f"{db_path} is corrupt ({check}): move it away (or delete the data dir) to start empty"
                )
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise DataDirError(
                    f"{db_path} has schema version {row[0]}, this emulator writes {SCHEMA_VERSION}: "
                    "use a new --data-dir (or delete this one to start empty)"
                )
        except sqlite3.DatabaseError as exc:
            raise DataDirError(
                f"{db_path} is not a usable SQLite database ({exc}): if it is corrupt, move it away or delete "
                "the data dir to start empty; if it is read-only, fix the permissions"
            ) from exc
        self._db = db

    def journal(self, ns_name: str) -> NamespaceJournal:
        journal = self.journals.get(ns_name)
        if journal is None:
            journal = self.journals[ns_name] = NamespaceJournal(self, ns_name)
        return journal

    def restore(self, namespace: Namespace) -> dict[str, int]:
        assert self._db is not None, "open() first"
        journal = self.journal(namespace.name)
        try:
            counts = journal.restore(self._db, namespace)
        except (sqlite3.DatabaseError, EmulatorError, ValueError, TypeError, KeyError) as exc:
            self._db.close()  # never write back a half-read state
            self._db = None
            raise DataDirError(
                f"cannot read the state of namespace {namespace.name} from {self.path / DB_NAME} ({exc!r}): "
                "move the data dir away to start empty"
            ) from exc
        self.dirty = True
        return counts

    def commit(self) -> None:
        """Write what every namespace recorded, in one transaction (fsynced with ``--fsync on``)."""
        if not self.dirty or self._db is None:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            for journal in self.journals.values():
                if journal.dirty:
                    journal.write(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.dirty = False
        self.commits += 1

    def commit_or_exit(self) -> None:
        """Commit; if that fails, stop the process at once (exit code 3) so that nothing that
        could not be stored is ever acknowledged to a client."""
        try:
            self.commit()
        except (sqlite3.Error, OSError) as exc:
            message = (f"servicebus-emulator: cannot write to --data-dir {self.path} ({exc}); stopping so that "
                       "nothing unsaved is acknowledged. Free disk space or fix permissions, then restart.")
            log.critical(message)
            print(message, file=sys.stderr, flush=True)
            os._exit(3)

    def close(self) -> None:
        if self._db is not None:
            try:
                self.commit()
            finally:
                self._db.close()
                self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


__all__ = ["DataDir", "DataDirError", "NamespaceJournal", "decode_message", "encode_payload"]
