"""The operations of an entity's ``$management`` node: lock renewal, peek, deferred receive,
disposition by lock token, scheduling, and the session operations.

``amqp.py`` decodes the request and sends the reply; this module turns one request into engine
calls and returns the reply's body and status code, so the request/response node reads apart
from the link and delivery handling.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from proton import UNDESCRIBED, Array, Data, symbol, timestamp

from .codec import encode_entry, parse_transfer, to_stored
from .entities import Namespace, Queue, Topic
from .errors import BadRequest, InvalidOperation, NotImplementedOperation
from .meter import Op
from .sessions import SessionConsumer, SessionStore

VENDOR = "com.microsoft:"
#: ``last-updated-time`` of get-message-sessions that asks for every session (DateTime.MaxValue)
LIST_ALL_SESSIONS_MS = 253_402_300_800_000
SESSION_OPERATIONS = {VENDOR + op for op in (
    "renew-session-lock", "get-session-state", "set-session-state", "get-message-sessions")}


def charge_send(namespace: Namespace, entity: Topic | Queue, count: int) -> None:
    """A send of ``count`` messages on the meter: 1 credit each, and to a topic 1 per filter
    evaluation (every rule of every subscription); refused as a whole when throttled."""
    filters = entity.filter_count() * count if isinstance(entity, Topic) else 0
    counts = {Op.SEND: count, Op.FILTER: filters} if filters else {Op.SEND: count}
    namespace.meter.charge(entity.name, counts)


def _array_values(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


@dataclass(frozen=True)
class ManagementContext:
    """What an operation needs of the connection it arrived on."""

    namespace: Namespace
    #: raises Unauthorized unless the connection holds ``right`` on the entity at ``parts``
    authorize: Callable[[list[str], str | None], None]
    #: the connection's session receivers' links (an operation on a session needs its lock held
    #: by one of them)
    senders: Collection[SessionConsumer]


def management_op(ctx: ManagementContext, parts: list[str], operation: str, body: dict[Any, Any]) -> tuple[Any, int]:
    """Answer one request on ``<entity>/$management``: the value of the reply body and its status code."""
    path = "/".join(parts)
    now = time.time()
    get = {str(k): v for k, v in body.items()}
    if operation == VENDOR + "renew-lock":
        ctx.authorize(parts, "Listen")
        store = ctx.namespace.store_for(path)
        tokens = [uuid.UUID(str(t)) for t in _array_values(get.get("lock-tokens"))]
        expirations = [timestamp(int(store.renew(t, now) * 1000)) for t in tokens]
        return {symbol("expirations"): Array(UNDESCRIBED, Data.TIMESTAMP, *expirations)}, 200  # type: ignore[arg-type]
    if operation in SESSION_OPERATIONS:
        ctx.authorize(parts, "Listen")
        return _session_op(ctx, path, operation, get, now)
    if operation == VENDOR + "peek-message":
        ctx.authorize(parts, "Listen")
        store = ctx.namespace.store_for(path)
        from_seq, count = int(get.get("from-sequence-number", 0)), int(get.get("message-count", 1))
        session_id = get.get("session-id")
        if session_id is not None and isinstance(store, SessionStore):
            entries = store.peek_session(str(session_id), from_seq, count)
        else:
            entries = store.peek(from_seq, count)
        ctx.namespace.meter.charge(store.path, {Op.PEEK: max(len(entries), 1)})
        if not entries:
            return None, 204
        return {symbol("messages"): [{symbol("message"): encode_entry(e, peek=True)} for e in entries]}, 200
    if operation == VENDOR + "receive-by-sequence-number":
        ctx.authorize(parts, "Listen")
        store = ctx.namespace.store_for(path)
        seqs = [int(s) for s in _array_values(get.get("sequence-numbers"))]
        lock = int(get.get("receiver-settle-mode", 1)) != 0
        ctx.namespace.meter.charge(store.path, {Op.RECEIVE: max(len(seqs), 1)})
        entries = store.receive_deferred(seqs, now, lock)
        out = []
        for entry in entries:
            item: dict[Any, Any] = {symbol("message"): encode_entry(entry)}
            if lock and entry.lock_token is not None:
                item[symbol("lock-token")] = entry.lock_token
            out.append(item)
        return {symbol("messages"): out}, 200
    if operation == VENDOR + "update-disposition":
        ctx.authorize(parts, "Listen")
        store = ctx.namespace.store_for(path)
        status = str(get.get("disposition-status", ""))
        for raw in _array_values(get.get("lock-tokens")):
            token = uuid.UUID(str(raw))
            if status == "completed":
                store.complete(token, now)
            elif status == "abandoned":
                store.abandon(token, now)
            elif status == "defered":
                store.defer(token, now)
            elif status == "suspended":
                store.dead_letter_locked(
                    token, now, str(get.get("deadletter-reason", "")), str(get.get("deadletter-description", ""))
                )
            else:
                raise BadRequest(f"unknown disposition-status {status!r}")
        return {}, 200
    if operation == VENDOR + "schedule-message":
        ctx.authorize(parts, "Send")
        entity = ctx.namespace.sender_for(path)
        seqs = []
        items = _array_values(get.get("messages"))
        charge_send(ctx.namespace, entity, len(items))
        for item in items:
            fields = {str(k): v for k, v in item.items()}
            for parsed in parse_transfer(bytes(fields["message"])):
                msg = to_stored(parsed)
                entity.check_quota(msg.size)
                seqs.append(entity.accept(msg, now))
        return {symbol("sequence-numbers"): Array(UNDESCRIBED, Data.LONG, *seqs)}, 200  # type: ignore[arg-type]
    if operation == VENDOR + "cancel-scheduled-message":
        ctx.authorize(parts, "Send")
        entity = ctx.namespace.sender_for(path)
        for seq in _array_values(get.get("sequence-numbers")):
            entity.cancel_scheduled(int(seq))
        return {}, 200
    raise NotImplementedOperation(f"management operation {operation!r} is not supported by the emulator")

def _session_op(ctx: ManagementContext, path: str, operation: str, get: dict[str, Any], now: float) -> tuple[Any, int]:
    """The management operations on sessions; all but listing need the session's lock,
    held by a receiver of this connection."""
    store = ctx.namespace.store_for(path)
    if not isinstance(store, SessionStore):
        raise InvalidOperation(f"'{path}' does not require sessions: it has no session operations.")
    if operation == VENDOR + "get-message-sessions":
        skip, top = int(get.get("skip", 0)), int(get.get("top", 100))
        since = get.get("last-updated-time")  # the SDK's "no filter": .NET's DateTime.MaxValue
        after = None if since is None or int(since) >= LIST_ALL_SESSIONS_MS else int(since) / 1000.0
        ids = store.session_ids(after)[skip:skip + top]
        if not ids:
            return None, 204
        return {symbol("skip"): skip + len(ids), symbol("sessions-ids"): Array(UNDESCRIBED, Data.STRING, *ids)}, 200  # type: ignore[arg-type]
    session = store.held_session(str(get.get("session-id", "")), now, list(ctx.senders))
    if operation == VENDOR + "renew-session-lock":
        until = store.renew_session(session, now)
        return {symbol("expiration"): timestamp(int(until * 1000))}, 200
    if operation == VENDOR + "get-session-state":
        return {symbol("session-state"): session.state}, 200
    state = get.get("session-state")
    store.set_state(session, None if state is None else bytes(state), now)
    return {}, 200

