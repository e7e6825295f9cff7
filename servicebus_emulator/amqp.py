"""The AMQP 1.0 adapter: python-qpid-proton's protocol engine driven by asyncio.

Proton's ``Transport``/``Connection``/``Collector`` are sans-I/O: bytes go in with ``push``,
events come out of the collector, bytes to send come out with ``peek``/``pop``. Each TCP
connection gets one :class:`AmqpConnection`; it turns link attaches, transfers and
dispositions into calls on the entity engine and answers the two request/response nodes the
SDK uses: ``$cbs`` (put-token) and ``<entity>/$management``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Disposition,
    Endpoint,
    Event,
    Link,
    Message,
    Terminus,
    Transport,
    symbol,
    ulong,
)

from .amqp_frames import FrameFixer
from .amqp_management import ManagementContext, charge_send, management_op
from .codec import encode_entry, parse_transfer, to_stored
from .entities import Namespace, split_path
from .errors import (
    BadRequest,
    EmulatorError,
    InternalError,
    InvalidOperation,
    MessageTooLarge,
    OperationTimeout,
    QuotaExceeded,
    SessionLockLost,
    Unauthorized,
)
from .meter import Op
from .runtime import Runtime
from .sas import Grant, verify_token
from .sessions import LOCK_LOST_TEXT, Session, SessionStore
from .store import Entry, MessageStore
from .token_expiry import ExpiryWatch, remember, uncovered

log = logging.getLogger("servicebus_emulator.amqp")

INCOMING_CREDIT = 500
MAX_FRAME = 256 * 1024
VENDOR = "com.microsoft:"
DEAD_LETTER_CONDITION = "com.microsoft:dead-letter"


def _condition(exc: EmulatorError) -> Condition:
    # Always with an info map: the SDK reads an error as ``[condition, description, info]`` by
    # index, and proton leaves out a trailing null info, which made the SDK's send callback fail
    # with IndexError and the send hang forever.
    tracking = str(uuid.uuid4())
    return Condition(
        exc.condition,
        f"{exc} TrackingId:{tracking}",
        {symbol("com.microsoft:tracking-id"): tracking},
    )


SESSION_FILTER = symbol(VENDOR + "session-filter")
SESSION_LOCKED_UNTIL = symbol(VENDOR + "locked-until-utc")
OPERATION_TIMEOUT = symbol(VENDOR + "timeout")
#: how long a receiver for the next available session waits when it does not say (ms)
DEFAULT_SESSION_WAIT_MS = 60_000
#: .NET ticks (100 ns) at the Unix epoch: ``com.microsoft:locked-until-utc`` is in ticks
DOTNET_EPOCH_TICKS = 621_355_968_000_000_000


class SessionAsk:
    """What a receiver link's source asks for: ``com.microsoft:session-filter`` absent (a plain
    receiver), present with a session id, or present and null (the next available session)."""

    def __init__(self, link: Link):
        data = link.remote_source.filter
        data.rewind()
        filters = data.get_object() if data.next() is not None else None
        self.wanted = isinstance(filters, dict) and SESSION_FILTER in filters
        value = filters.get(SESSION_FILTER) if isinstance(filters, dict) else None
        self.session_id: str | None = None if value is None else str(value)
        props = link.remote_properties or {}
        wait = props.get(OPERATION_TIMEOUT) if isinstance(props, dict) else None
        self.wait_seconds = (DEFAULT_SESSION_WAIT_MS if wait is None else int(wait)) / 1000.0


class EntitySender:
    """Our sending end of a receiver link: a consumer of one message store."""

    def __init__(self, conn: AmqpConnection, link: Link, store: MessageStore, receive_and_delete: bool):
        self.conn = conn
        self.link = link
        self.store = store
        self.receive_and_delete = receive_and_delete
        self.unsettled: dict[uuid.UUID, Delivery] = {}

    def credit(self) -> int:
        return self.link.credit if self.link.state & Endpoint.LOCAL_ACTIVE else 0

    def deliver(self, entry: Entry, store: MessageStore) -> None:
        # charged, never withheld (see meter.py)
        self.conn.namespace.meter.charge(store.path, {Op.RECEIVE: 1}, refusable=False)
        payload = encode_entry(entry)
        token = entry.lock_token if entry.lock_token is not None else uuid.uuid4()
        delivery = self.link.delivery(token.bytes_le)  # type: ignore[arg-type]  # proton hints str; tags are bytes
        delivery.ctx = ("entity", self, token)
        self.link.send(payload)
        self.link.advance()
        if self.receive_and_delete:
            delivery.settle()
        else:
            self.unsettled[token] = delivery
        self.conn.schedule_flush()

    def closed(self) -> None:
        """The link (or its connection) went away. As Service Bus does, the messages it holds
        stay locked until their ``locked_until``; then the lock expires, the delivery count goes
        up by one, and they are delivered again (or dead-lettered at MaxDeliveryCount). Messages
        the SDK did not hand out it releases itself before closing (AMQP released: unlocked at
        once, not a delivery attempt). A session receiver's session lock is released at once."""
        self.store.detach(self, time.time())
        self.unsettled.clear()


class SessionSender(EntitySender):
    """Our sending end of a session receiver's link (a ``sessions.SessionConsumer``). Its attach
    is answered once it holds a session: at once for a named session, or when one becomes
    available for the next available session (or, at the receiver's timeout, refused)."""

    store: SessionStore

    def session_granted(self, session: Session) -> None:
        self.conn.open_session_link(self, session)

    def session_wait_timed_out(self) -> None:
        self.conn.refuse_link(self.link, OperationTimeout(
            f"The operation did not complete within the allotted timeout: no session of "
            f"'{self.store.path}' became available."))
        self.conn.drop_sender(self)

    def session_lost(self, session: Session) -> None:
        self.conn.refuse_link(self.link, SessionLockLost(
            f"{LOCK_LOST_TEXT} ({self.store.path}, session '{session.session_id}')"))
        self.conn.drop_sender(self)


class AmqpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.namespace: Namespace = runtime.namespace
        self.connection = Connection()
        self.transport = Transport(Transport.SERVER)
        self.transport.max_frame_size = MAX_FRAME
        sasl = self.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        sasl.done(sasl.OK)  # type: ignore[no-untyped-call]
        self.transport.bind(self.connection)
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.frames = FrameFixer(max_frame=MAX_FRAME)
        self.io: asyncio.Transport | None = None
        self.grants: list[Grant] = []
        self.expiry = ExpiryWatch(self._on_token_expiry)
        self.senders: list[EntitySender] = []
        self._flush_scheduled = False
        self._closed = False
        self._admitted = False  # counted against the namespace's connection quota

    # -- asyncio plumbing ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.io = transport  # type: ignore[assignment]
        self.runtime.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        # the SDK reuses delivery-ids under concurrency; see amqp_frames.py
        view = memoryview(self.frames.incoming(data))
        while view and not self._closed:
            capacity = self.transport.capacity()
            if capacity < 0:
                self.close()
                return
            if capacity == 0:
                self.process()
                capacity = self.transport.capacity()
                if capacity <= 0:
                    self.close()
                    return
            chunk = view[:capacity]
            self.transport.push(bytes(chunk))
            view = view[capacity:]
            self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.expiry.cancel()
        self.runtime.connection_closed(self)
        if self._admitted:
            self._admitted = False
            self.namespace.meter.connection_closed()
        for sender in self.senders:
            sender.closed()
        self.senders.clear()
        try:
            self.transport.close_tail()
        except Exception:  # noqa: BLE001 - engine already torn down
            pass

    def close(self) -> None:
        """Flush what the engine has to send, then close the socket."""
        self.flush()
        self._closed = True
        if self.io is not None:
            self.io.close()

    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.io is None or self._closed:
            return
        self.runtime.persist()  # --data-dir: durable before any byte that reveals a change leaves
        while True:
            pending = self.transport.pending()
            if pending < 0:
                self._closed = True
                self.io.close()
                return
            if pending == 0:
                return
            self.io.write(self.frames.outgoing(bytes(self.transport.peek(pending) or b"")))
            self.transport.pop(pending)

    # -- events ----------------------------------------------------------------------------
    def process(self) -> None:
        while True:
            event = self.collector.peek()
            if event is None:
                break
            try:
                self._dispatch(event)
            except Exception:  # one bad frame must not take the broker down
                log.exception("error handling %s", event.type)
            self.collector.pop()
        self.flush()

    def _dispatch(self, event: Event) -> None:
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            self.connection.container = "servicebus-emulator"
            try:
                self.namespace.meter.connection_opened()
                self._admitted = True
            except QuotaExceeded as exc:
                # as Service Bus does at its connection quota: open, then close with the error
                self.connection.open()
                self.connection.condition = _condition(exc)
                self.connection.close()
                return
            self.connection.open()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            self.connection.close()
        elif kind == Event.SESSION_REMOTE_OPEN and event.session is not None:
            event.session.incoming_capacity = 64 * MAX_FRAME
            event.session.open()
        elif kind == Event.SESSION_REMOTE_CLOSE and event.session is not None:
            event.session.close()
        elif kind == Event.LINK_REMOTE_OPEN and event.link is not None:
            self._on_attach(event.link)
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH) and event.link is not None:
            self._on_detach(event.link)
        elif kind == Event.LINK_FLOW and event.link is not None:
            link = event.link
            ctx = getattr(link, "ctx", None)
            if ctx is not None and ctx[0] == "entity-out":
                ctx[1].store.dispatch(time.time())
                if link.drain_mode and link.credit > 0:
                    link.drained()
        elif kind == Event.DELIVERY and event.delivery is not None:
            self._on_delivery(event.delivery)
        elif kind == Event.TRANSPORT_CLOSED:
            self.close()

    # -- attach / detach -------------------------------------------------------------------
    def _on_attach(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.max_message_size = self.namespace.config.max_message_bytes
        address = (link.remote_target.address if link.is_receiver else link.remote_source.address) or ""
        parts = split_path(address)
        try:
            if parts and parts[0] == "$cbs":
                link.ctx = ("cbs",)
            elif parts and parts[-1].lower() == "$management":
                self._authorize(parts[:-1], "Listen" if link.is_sender else None)
                remember(link, parts[:-1], "Listen" if link.is_sender else None)
                link.ctx = ("mgmt", parts[:-1])
            elif link.is_receiver:
                self._authorize(parts, "Send")
                remember(link, parts, "Send")
                entity = self.namespace.sender_for(address)
                link.ctx = ("entity-in", entity)
            else:
                self._authorize(parts, "Listen")
                remember(link, parts, "Listen")
                store = self.namespace.store_for(address)
                rad = link.remote_snd_settle_mode == Link.SND_SETTLED
                ask = SessionAsk(link)
                if isinstance(store, SessionStore) != ask.wanted:
                    raise InvalidOperation(
                        f"It is not possible for an entity that requires sessions to create a non-sessionful "
                        f"message receiver ('{'/'.join(parts)}')." if not ask.wanted else
                        f"A sessionful message receiver cannot be created on an entity that does not require "
                        f"sessions ('{'/'.join(parts)}'). Ensure RequiresSession is set to true when creating "
                        f"a Queue or Subscription to enable sessionful behavior.")
                if isinstance(store, SessionStore):
                    self._attach_session_receiver(link, store, ask, rad)
                    return
                sender = EntitySender(self, link, store, rad)
                self.senders.append(sender)
                link.ctx = ("entity-out", sender)
        except EmulatorError as exc:
            self.refuse_link(link, exc)
            return
        self.expiry.watch(self.grants, time.time())
        if link.is_receiver and link.ctx[0] == "entity-in":
            # the SDK sizes a ServiceBusMessageBatch by this vendor property
            link.properties = {symbol(VENDOR + "max-message-batch-size"): self.namespace.config.max_message_bytes}
        link.open()
        if link.is_receiver:
            link.flow(INCOMING_CREDIT)
        elif link.ctx[0] == "entity-out":
            link.ctx[1].store.attach(link.ctx[1], time.time())

    def refuse_link(self, link: Link, exc: EmulatorError) -> None:
        """Answer an attach with an error, or end an attached link with one.

        As Service Bus does: answer the attach with a null terminus on our side, then detach
        with the error. The SDK turns that into the matching exception
        (MessagingEntityNotFoundError, ServiceBusAuthorizationError, SessionCannotBeLockedError,
        OperationTimeoutError ...) instead of a retryable "link detached" connection error."""
        link.ctx = ("refused",)
        if link.state & Endpoint.LOCAL_UNINIT:
            if link.is_receiver:
                link.target.type = Terminus.UNSPECIFIED
            else:
                link.source.type = Terminus.UNSPECIFIED
            link.open()
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.condition = _condition(exc)
            link.close()
        self.schedule_flush()

    def drop_sender(self, sender: EntitySender) -> None:
        if sender in self.senders:
            self.senders.remove(sender)

    def _attach_session_receiver(self, link: Link, store: SessionStore, ask: SessionAsk, rad: bool) -> None:
        """A session receiver: its attach is answered once it holds a session's lock (see
        SessionSender); a named session locked elsewhere is refused (SessionCannotBeLocked)."""
        sender = SessionSender(self, link, store, rad)
        now = time.time()
        session = store.accept_session(sender, ask.session_id, now, now + ask.wait_seconds)
        self.senders.append(sender)
        link.ctx = ("entity-out", sender)
        store.attach(sender, now)
        if session is not None:
            self.open_session_link(sender, session)

    def open_session_link(self, sender: SessionSender, session: Session) -> None:
        """Answer a session receiver's attach: the session id in the source's session filter and
        the lock's expiry (in .NET ticks) in ``com.microsoft:locked-until-utc``, as the SDK reads
        them."""
        link = sender.link
        flt = link.source.filter
        flt.clear()
        flt.put_map()
        flt.enter()
        flt.put_symbol(SESSION_FILTER)
        flt.put_string(session.session_id)
        flt.exit()
        ticks = DOTNET_EPOCH_TICKS + int(session.locked_until * 10_000_000)
        link.properties = {SESSION_LOCKED_UNTIL: ticks}
        link.open()
        self.schedule_flush()

    def _on_detach(self, link: Link) -> None:
        ctx = getattr(link, "ctx", None)
        if ctx and ctx[0] == "entity-out":
            sender: EntitySender = ctx[1]
            sender.closed()
            if sender in self.senders:
                self.senders.remove(sender)
        if link.state & Endpoint.LOCAL_UNINIT:  # a session receiver that gave up waiting
            link.ctx = ("refused",)
            link.source.type = Terminus.UNSPECIFIED
            link.open()
        if link.state & Endpoint.LOCAL_ACTIVE:
            link.close()

    def detach_links_to(self, path: str, exc: EmulatorError) -> None:
        """An entity was deleted: detach the links to and from it (and what lies under it), as
        Service Bus does, so that clients notice (``amqp:not-found``) and reconnect."""
        path = path.lower()

        def gone(entity_path: str) -> bool:
            entity_path = entity_path.lower()
            return entity_path == path or entity_path.startswith(path + "/")

        for sender in list(self.senders):
            if gone(sender.store.path):
                sender.closed()
                self.senders.remove(sender)
                self.refuse_link(sender.link, exc)  # also a session receiver still waiting for its attach
        link = self.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            following = link.next(Endpoint.LOCAL_ACTIVE)
            ctx = getattr(link, "ctx", None)
            if link.is_receiver and ctx is not None and ctx[0] == "entity-in" and gone(ctx[1].name):
                link.ctx = ("refused",)
                link.condition = _condition(exc)
                link.close()
            link = following
        self.schedule_flush()

    def _on_token_expiry(self) -> None:
        """A token expired: detach every link no other unexpired token covers (token_expiry.py)."""
        if self._closed:
            return
        now = time.time()
        for link in list(uncovered(self.connection, self.grants, now)):
            ctx = getattr(link, "ctx", None)
            if ctx and ctx[0] == "entity-out" and ctx[1] in self.senders:
                ctx[1].closed()
                self.senders.remove(ctx[1])
            link.condition = _condition(Unauthorized(
                "ExpiredToken: the token this link was attached under has expired; put a new token on $cbs "
                "before it expires."))
            link.close()
        self.grants = [g for g in self.grants if g.expires_at > now]
        self.expiry.watch(self.grants, now)
        self.schedule_flush()

    def _authorize(self, parts: list[str], right: str | None) -> None:
        if right is None:
            return
        now = time.time()
        if any(grant.covers(parts, right, now) for grant in self.grants):
            return
        if any(grant.covers(parts, r, now) for grant in self.grants for r in ("Listen", "Send", "Manage")):
            raise Unauthorized(f"Unauthorized access. '{right}' claim(s) are required to perform this operation on '/{'/'.join(parts)}'.")
        raise Unauthorized(f"Unauthorized access: no valid token for '/{'/'.join(parts)}'; send a put-token on $cbs first.")

    # -- transfers and dispositions --------------------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        link = delivery.link
        ctx = getattr(link, "ctx", None)
        if link.is_sender:
            if delivery.updated:
                self._on_disposition(delivery)
            return
        if not delivery.readable or delivery.partial:
            return
        payload = link.recv(delivery.pending) or b""
        link.advance()
        if ctx is None or ctx[0] == "refused":
            delivery.settle()
            return
        try:
            if ctx[0] == "cbs":
                self._on_cbs(payload)
            elif ctx[0] == "mgmt":
                self._on_management(ctx[1], payload)
            else:
                self._on_publish(ctx[1], payload)
            delivery.update(Disposition.ACCEPTED)
        except EmulatorError as exc:
            delivery.local.condition = _condition(exc)
            delivery.update(Disposition.REJECTED)
        except Exception as exc:  # noqa: BLE001 - a transfer is always settled, never left hanging
            log.exception("could not handle a transfer on %s", link.name)
            delivery.local.condition = _condition(InternalError(f"the emulator could not process this message: {exc!r}"))
            delivery.update(Disposition.REJECTED)
        delivery.settle()
        if link.credit < INCOMING_CREDIT // 2:
            link.flow(INCOMING_CREDIT - link.credit)

    def _on_publish(self, entity: Any, payload: bytes) -> None:
        limit = self.namespace.config.max_message_bytes
        if len(payload) > limit:
            raise MessageTooLarge(
                f"The received message (size {len(payload)} bytes) exceeds the limit ({limit} bytes) "
                "currently allowed on the link."
            )
        messages = parse_transfer(payload)
        now = time.time()
        stored = [to_stored(m) for m in messages]
        charge_send(self.namespace, entity, len(stored))
        for msg in stored:
            entity.intake.check(msg)
        entity.check_quota(sum(m.size for m in stored))
        for msg in stored:
            entity.accept(msg, now)

    def _on_disposition(self, delivery: Delivery) -> None:
        ctx = getattr(delivery, "ctx", None)
        if ctx is None or ctx[0] != "entity":
            delivery.settle()
            return
        sender: EntitySender = ctx[1]
        token: uuid.UUID = ctx[2]
        state = delivery.remote_state
        sender.unsettled.pop(token, None)
        now = time.time()
        store = sender.store
        try:
            if state == Disposition.ACCEPTED:
                store.complete(token, now)
            elif state == Disposition.RELEASED:
                store.release(token, now)
            elif state == Disposition.MODIFIED:
                remote = delivery.remote
                props = {str(k): v for k, v in (remote.annotations or {}).items()}
                if remote.undeliverable:
                    store.defer(token, now)
                else:
                    store.abandon(token, now, props or None)
            elif state == Disposition.REJECTED:
                condition = delivery.remote.condition
                info: Any = (condition.info if condition else None) or {}
                reason = str(info.get(symbol("DeadLetterReason"), info.get("DeadLetterReason", "")) or "")
                description = str(
                    info.get(symbol("DeadLetterErrorDescription"), info.get("DeadLetterErrorDescription", "")) or ""
                )
                store.dead_letter_locked(token, now, reason, description)
            else:
                delivery.settle()
                return
            delivery.update(state)
        except EmulatorError as exc:  # LockLost above all
            delivery.local.condition = _condition(exc)
            delivery.update(Disposition.REJECTED)
        except Exception as exc:  # noqa: BLE001 - a settlement is always answered, never left hanging
            log.exception("could not apply a disposition on %s", store.path)
            delivery.local.condition = _condition(InternalError(f"the emulator could not settle this message: {exc!r}"))
            delivery.update(Disposition.REJECTED)
        delivery.settle()
        self.schedule_flush()

    # -- $cbs ------------------------------------------------------------------------------
    def _reply_link(self, address: str) -> Link | None:
        wanted = [p.lower() for p in split_path(address)]
        link = self.connection.link_head(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        found = None
        while link is not None:
            if link.is_sender and [p.lower() for p in split_path(link.source.address or "")] == wanted:
                found = link
            link = link.next(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
        return found

    def _send_reply(self, link: Link | None, reply: Message) -> None:
        if link is None:
            log.warning("no reply link for %s", reply.correlation_id)
            return
        delivery = link.delivery(uuid.uuid4().bytes)  # type: ignore[arg-type]  # proton hints str; tags are bytes
        delivery.ctx = ("reply",)
        link.send(reply.encode())
        link.advance()
        delivery.settle()
        self.schedule_flush()

    def _on_cbs(self, payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        props: dict[Any, Any] = request.properties or {}
        status, description = 200, "OK"
        try:
            if props.get("operation") != "put-token":
                raise BadRequest(f"unsupported $cbs operation {props.get('operation')!r}")
            grant = verify_token(
                str(request.body), self.namespace.config.policies, self.namespace.entity_policies()
            )
            self.grants = [g for g in self.grants if g.expires_at > time.time()]
            self.grants.append(grant)
            self.expiry.watch(self.grants, time.time())
        except EmulatorError as exc:
            status, description = exc.status, str(exc)
        reply = Message(
            correlation_id=request.id,
            properties={"status-code": status, "status-description": description},
        )
        self._send_reply(self._reply_link("$cbs"), reply)

    # -- $management -----------------------------------------------------------------------
    def _on_management(self, entity_parts: list[str], payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        props: dict[Any, Any] = request.properties or {}
        operation = str(props.get("operation", ""))
        body = request.body if isinstance(request.body, dict) else {}
        app_props: dict[str, Any] = {}
        value: Any = None
        try:
            value, status = management_op(
                ManagementContext(self.namespace, self._authorize,
                                  [s for s in self.senders if isinstance(s, SessionSender)]), entity_parts, operation, body)
            app_props = {"statusCode": status, "statusDescription": "OK" if status == 200 else "No Content"}
        except EmulatorError as exc:
            app_props = {
                "statusCode": exc.status,
                "statusDescription": str(exc),
                "errorCondition": symbol(exc.condition),
            }
        except Exception as exc:  # noqa: BLE001 - a request must always get an answer
            log.exception("management operation %s failed", operation)
            app_props = {
                "statusCode": 500,
                "statusDescription": f"internal error in the emulator: {exc!r}",
                "errorCondition": symbol("amqp:internal-error"),
            }
        reply = Message(correlation_id=request.id, properties=app_props, body=value)
        address = request.reply_to or "/".join(entity_parts + ["$management"])
        self._send_reply(self._reply_link(address) or self._reply_link("/".join(entity_parts + ["$management"])), reply)


__all__ = ["AmqpConnection", "ulong"]
