"""``ServiceBusManager``: a python-socketio client manager over one Azure Service Bus topic.

It subclasses :class:`socketio.AsyncPubSubManager`, which owns emit / rooms / callbacks and
the pub/sub message dicts; this module adds what python-socketio asks of a backend
(``_publish`` and ``_listen``), the public cluster calls, lifecycle and health. The work is
done by parts that never call back into it (``docs/architecture.md``):

* :mod:`socketio_servicebus.manager.outbox` - adaptive outbound batching over a bounded buffer;
* :mod:`socketio_servicebus.servicebus.transport` - the sender, the receiver, settlement and
  link health;
* :mod:`socketio_servicebus.wire.dispatch` - decode, dedupe and route what was received (pure);
* :mod:`socketio_servicebus.manager.cluster` - heartbeats, the node registry, request/reply;
* :mod:`socketio_servicebus.manager.lifecycle`, :mod:`socketio_servicebus.manager.readiness` -
  the two explicit states;
* :mod:`socketio_servicebus.manager.supervisor` - background tasks whose end is always observed;
* :mod:`socketio_servicebus.manager.options` - the four option groups.

One emit: ``_publish`` → :meth:`Outbox.put` → (outbox task) :meth:`Transport.send` → Service
Bus. One receive: :meth:`Transport.receive` → ``_listen`` → :meth:`Dispatcher.route` →
python-socketio (or the cluster). With tracing on, :class:`~socketio_servicebus.tracing.MessagingSpans`
records ``emit``, ``send``, ``receive`` and ``deliver`` spans around these steps.

Task layout once running (all on the server's event loop, all supervised: a task that dies is
logged, makes ``health()`` not ready with the reason, and is restarted):

* ``outbox`` - sends batches, one send in flight at a time;
* ``listener`` - python-socketio's ``_thread`` iterating :meth:`ServiceBusManager._listen`,
  which settles each received burst between receive calls; it ends only when close() begins;
* ``heartbeat`` - announces this node and expires silent ones;
* ``subscription-watch`` - re-asserts the own subscription's rule;
* ``request`` - one per request served for another node (at most ``max_concurrent_requests``).

See ``docs/manager.md`` for usage and guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from socketio.async_pubsub_manager import AsyncPubSubManager  # type: ignore[import-untyped]

from socketio_servicebus.errors import EnvelopeError, ManagerClosed
from socketio_servicebus.manager.cluster import Cluster, ServerEventHandler
from socketio_servicebus.manager.credits import UPDATE_INTERVAL as CREDIT_UPDATE_INTERVAL
from socketio_servicebus.manager.credits import CreditGovernor
from socketio_servicebus.manager.lifecycle import Lifecycle, State
from socketio_servicebus.manager.options import (
    BatchingOptions,
    ClusterOptions,
    ConnectionOptions,
    Limits,
    from_legacy,
)
from socketio_servicebus.manager.outbox import Outbox, SendFn, fit
from socketio_servicebus.manager.readiness import ReadinessState, connected, readiness
from socketio_servicebus.manager.requests import PendingRequest
from socketio_servicebus.manager.results import ClusterResult
from socketio_servicebus.manager.supervisor import Supervisor
from socketio_servicebus.manager.trust import Trust
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from socketio_servicebus.servicebus.transport import RECEIVE_WAIT, Burst, SenderState, Transport, message_body
from socketio_servicebus.tracing import MessagingSpans, Tracing
from socketio_servicebus.wire.dispatch import Dispatcher, Route
from socketio_servicebus.wire.envelope import MAX_BATCH_BYTES, Batch, Envelope, Kind
from socketio_servicebus.zones import ZoneSet

__all__ = ["ManagerClosed", "ServiceBusManager", "ServerEventHandler"]

default_logger = logging.getLogger("socketio.servicebus")

#: Seconds close() waits for the outbound buffer to drain.
_CLOSE_FLUSH_TIMEOUT = 5.0
#: ServiceBusClient options unless ``client_options`` says otherwise: one quick SDK retry, then
#: the manager's own backoff (which keeps health() truthful meanwhile).
_CLIENT_DEFAULTS: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}

_PERSIST: contextvars.ContextVar[bool] = contextvars.ContextVar("sio_persist", default=False)
_NO_SPAN = contextlib.nullcontext(None)


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _body_limit(limits: Limits) -> int:
    """Body bytes per message: headroom for AMQP header, properties and application properties."""
    return limits.max_message_bytes - min(8192, limits.max_message_bytes // 8)


def _parts(node_id: str, region: str, conn: ConnectionOptions, batching: BatchingOptions, cl: ClusterOptions,
           limits: Limits, metrics: ManagerMetrics, log: logging.Logger) -> tuple[Transport, Cluster, Dispatcher]:
    """The manager's transport, cluster and dispatcher, built from its options."""
    spec = node_subscription_spec(topic=conn.topic, node_id=node_id, ttl=cl.subscription_ttl,
                                  auto_delete_on_idle=cl.auto_delete_on_idle)
    transport = Transport(
        conn={"connection_string": conn.connection_string,
              "fully_qualified_namespace": conn.fully_qualified_namespace, "credential": conn.credential},
        client_options={**_CLIENT_DEFAULTS, **conn.client_options}, admin_options=conn.admin_options,
        topic=conn.topic, subscription_name=conn.subscription or spec.name, spec=spec,
        owns_subscription=conn.subscription is None, receive_mode=conn.receive_mode,
        prefetch_count=batching.prefetch_count, backoff_initial=conn.backoff_initial,
        backoff_max=conn.backoff_max, metrics=metrics, logger=log)
    cluster = Cluster(
        node_id=node_id, region=region, heartbeat_interval=cl.heartbeat_interval,
        node_timeout=cl.node_timeout, request_timeout=cl.request_timeout,
        max_concurrent_requests=limits.max_concurrent_requests,
        check=functools.partial(fit, body_limit=_body_limit(limits)), metrics=metrics, logger=log)
    dispatcher = Dispatcher(node_id, dedupe_size=limits.dedupe_size,
                            max_bytes=max(MAX_BATCH_BYTES, limits.max_message_bytes))
    return transport, cluster, dispatcher


def _local_sockets(mgr: AsyncPubSubManager, node_id: str, namespace: str, room: Any) -> list[dict[str, Any]]:
    """This node's sockets of ``namespace`` (in ``room``), as a fetch_sockets reply lists them."""
    if namespace not in mgr.rooms:
        return []
    return [
        {"sid": sid, "namespace": namespace, "rooms": mgr.get_rooms(sid, namespace), "node": node_id}
        for sid, _ in mgr.get_participants(namespace, room)
    ]


async def _stop_listener(sup: Supervisor, log: logging.Logger) -> None:
    """Let the listener end after its current receive call (it settles that burst itself);
    cancel it if it does not."""
    listener = sup.task("listener")
    if listener is not None and not listener.done():
        _, pending = await asyncio.wait({listener}, timeout=RECEIVE_WAIT + 2.0)
        if pending:
            log.warning("close: listener did not stop after its receive call; cancelling it")
            left = await sup.cancel(("listener",), 5.0)
            if left:
                log.warning("close: listener still running: %s", left)


class ServiceBusManager(AsyncPubSubManager):  # type: ignore[misc]
    """Client manager (a :class:`socketio.async_pubsub_manager.AsyncPubSubManager`) sharing one Service Bus topic between python-socketio servers.

    ::

        mgr = ServiceBusManager(connection=ConnectionOptions(connection_string=conn), region="eu")
        sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr)
        await mgr.start()            # optional: joins now instead of at the first connection

    Keyword-only; nothing is read from the environment. ``connection`` (required),
    ``batching``, ``cluster`` and ``limits`` are the option groups of
    :mod:`socketio_servicebus.manager.options` (each field documented there). Besides:
    ``node_id`` (default ``<hostname>-<8 hex>``; also python-socketio's ``host_id``),
    ``region`` (``origin_region`` of its envelopes), ``write_only`` (only emit: no
    subscription, no listener, no heartbeats, no ``fetch_sockets`` / ``server_side_emit``),
    ``logger`` (default ``socketio.servicebus``), ``json`` (python-socketio's packet encoding;
    the wire always uses :mod:`socketio_servicebus.wire.codec`), ``tracing`` (``True``: OpenTelemetry
    spans once an SDK is configured, ``False``: none from this manager, or a
    :class:`~socketio_servicebus.tracing.Tracing`; ``docs/observability.md``), ``zones`` (trust zones,
    a :class:`~socketio_servicebus.zones.ZoneSet` with this node's zone key: every message sent is
    signed, every message received verified and policed; ``manager/trust.py``). The flat keywords of 0.x
    (``connection_string=``, ``heartbeat_interval=``, ...) still work for one release, with a
    :class:`DeprecationWarning`.

    Lifecycle: ``new`` → ``running`` (:meth:`start`, or python-socketio's first connection) →
    ``closing`` → ``closed`` (:meth:`close`).  Emitting once closing raises
    :class:`~socketio_servicebus.errors.ManagerClosed`.
    """

    name = "servicebus"

    def __init__(
        self,
        *,
        connection: ConnectionOptions | None = None,
        batching: BatchingOptions | None = None,
        cluster: ClusterOptions | None = None,
        limits: Limits | None = None,
        node_id: str | None = None,
        region: str = "local",
        write_only: bool = False,
        logger: logging.Logger | None = None,
        json: Any = None,
        tracing: bool | Tracing = True,
        zones: ZoneSet | None = None,
        **legacy: Any,
    ) -> None:
        conn, self.batching, cl, self.limits = from_legacy(connection, batching, cluster, limits, legacy)
        self.connection, self.cluster_options = conn, cl
        if region and "," in region:
            raise ValueError("region must not contain ','")
        super().__init__(channel=conn.topic, write_only=write_only, logger=logger, json=json)
        self.node_id: str = node_id or _default_node_id()
        self.host_id = self.node_id  # python-socketio addresses callbacks by host_id
        self.region = region
        self.topic = conn.topic
        self.receive_mode = conn.receive_mode
        self.metrics = ManagerMetrics()
        self._transport, self._cluster, self._dispatcher = _parts(self.node_id, region, conn, self.batching, cl,
                                                                  self.limits, self.metrics, self._log)
        self.subscription_name: str = self._transport.subscription_name
        #: OpenTelemetry spans (emit, send, receive, deliver); nothing until an SDK is configured
        self._spans = MessagingSpans(tracing if isinstance(tracing, Tracing) else Tracing(enabled=tracing),
                                     topic=self.topic, subscription=self.subscription_name)
        #: trust zones: sign on send, verify/police/bound on receive (``zones=None``: bounds only)
        self.zones = zones
        self._trust = Trust(zones, self.metrics, max_nodes=self.limits.max_nodes,
                            heartbeat_interval=cl.heartbeat_interval, logger=self._log)
        self._transport.signer = self._trust.signer
        #: what the outbox sends with (a seam: instrumentation may wrap it before start())
        self._send: SendFn = self._traced_send
        self._outbox: Outbox | None = None
        self._life = Lifecycle()
        self._supervisor: Supervisor | None = None

    # ================================================================== seams of the parts
    # (tests replace or inspect these; each is the part's own attribute)
    _settle_one = property(lambda self: self._transport.settle_one,
                           lambda self, fn: setattr(self._transport, "settle_one", fn))
    _admin = property(lambda self: self._transport.admin, lambda self, fn: setattr(self._transport, "admin", fn))
    _receiver = property(lambda self: self._transport.receiver,
                         lambda self, r: setattr(self._transport, "receiver", r))
    _to_settle = property(lambda self: self._transport.to_settle)
    _requests_active = property(lambda self: self._cluster.requests_active)
    _close_receiver = property(lambda self: self._transport.close_receiver)

    # ================================================================== lifecycle
    @property
    def _log(self) -> logging.Logger:
        return self.logger or default_logger

    def initialize(self) -> None:
        """Called by python-socketio at the first connection; idempotent."""
        self._ensure_started()

    async def start(self) -> None:
        """Connect and join the cluster now (idempotent).  Returns without waiting for Service
        Bus; use :meth:`wait_ready` for that."""
        self._ensure_started()

    async def wait_ready(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - public API
        """Wait until :meth:`health` says ``ready``; ``False`` on timeout or once closing."""
        if self._life.stopping:
            return False
        self._ensure_started()
        changed = self._transport.changed
        try:
            async with asyncio.timeout(timeout):
                while not self._life.stopping:
                    changed.clear()
                    if self.readiness().ready:
                        return True
                    await changed.wait()
        except TimeoutError:
            pass
        return False

    def _ensure_started(self) -> None:
        """``new`` → ``running``.  Builds the SDK client first: if that raises, the manager stays
        ``new`` (nothing half-started) and the caller sees the error."""
        if self._life.running:
            return
        self._life.check_open("start")
        asyncio.get_running_loop()  # raises while still new: the tasks need the server's loop
        if not self.write_only and self.server is None:
            raise RuntimeError(
                "attach the manager to a server first: socketio.AsyncServer(client_manager=manager)"
            )
        self._transport.open()
        conn = self.connection
        self._supervisor = sup = Supervisor(
            prefix=f"sbmanager-{self.node_id}", logger=self._log, metrics=self.metrics,
            on_change=self._transport.changed.set, backoff_initial=conn.backoff_initial,
            backoff_max=conn.backoff_max,
        )
        self._outbox = outbox = Outbox(
            self._send, body_limit=_body_limit(self.limits), max_items=self.limits.buffer_size, metrics=self.metrics,
            logger=self._log, backoff_initial=conn.backoff_initial, backoff_max=conn.backoff_max,
            linger=self.batching.send_interval, max_delay=self.limits.max_queue_delay,
        )
        self._life.to(State.RUNNING)
        self.metrics.nodes = self._cluster.server_count()
        sup.spawn("outbox", outbox.run, restart=True)
        sup.spawn("warm-sender", self._transport.warm_sender, restart=False)
        if self.batching.credit_budget is not None:
            sup.spawn("credit-budget", self._credit_loop, restart=True)
        if not self.write_only:
            self.thread = sup.spawn("listener", self._thread, restart=True)
            sup.spawn("heartbeat", self._heartbeat_loop, restart=True)
            interval = self.cluster_options.subscription_check_interval
            if self._transport.owns_subscription and interval > 0:
                sup.spawn("subscription-watch", lambda: self._transport.watch_subscription(interval), restart=True)
        self._log.info(
            "servicebus manager %s (region %s) started on topic %s%s",
            self.node_id, self.region, self.topic, " (write-only)" if self.write_only else "",
        )

    async def close(self) -> None:
        """Stop receiving, settle what was received, say goodbye, flush the outbound buffer (up
        to 5 s), delete the own subscription (if this manager created it) and close all links.

        Idempotent.  Once it has begun, emits raise :class:`ManagerClosed`.
        """
        if self._life.state is State.NEW:
            self._life.to(State.CLOSED)
            return
        if not self._life.running:
            return
        self._life.to(State.CLOSING)
        sup, outbox = self._supervisor, self._outbox
        assert sup is not None and outbox is not None
        self._transport.closing.set()
        sup.stop_supervising()
        self._transport.changed.set()  # wake wait_ready() callers: they return False (not running)
        if not self.write_only:
            await _stop_listener(sup, self._log)
            await self._transport.settle_rest()  # one settler at a time on the link: after the listener
            self._put(self._heartbeat_envelope(bye=True))  # a heartbeat always fits
        if not await outbox.flush(_CLOSE_FLUSH_TIMEOUT):
            lost = len(outbox)
            self.metrics.close_dropped += lost
            self._log.warning("servicebus manager %s closing with %d unsent envelope(s) lost",
                              self.node_id, lost)
        left = await sup.cancel(None, 5.0)
        if left:
            self._log.warning("close: tasks still running: %s", left)
        await self._transport.close()
        self._life.to(State.CLOSED)

    shutdown = close

    async def _credit_loop(self) -> None:
        """Credit-aware batching (``BatchingOptions.credit_budget``): keep the outbox's least
        window at what the fleet's estimated spend asks for (:mod:`.credits`)."""
        assert self.batching.credit_budget is not None and self._outbox is not None
        cl = self.cluster_options
        governor = CreditGovernor(self.batching.credit_budget, extra_subscriptions=self.batching.extra_subscriptions,
                                  cap=self.batching.send_interval, heartbeat_interval=cl.heartbeat_interval,
                                  subscription_check_interval=cl.subscription_check_interval)
        outbox = self._outbox
        while True:
            window = governor.update(time.monotonic(), outbox.queued_total, self._cluster.server_count())
            outbox.linger.floor = window
            self.metrics.credit_window_seconds_last = window
            await asyncio.sleep(CREDIT_UPDATE_INTERVAL)

    # ================================================================== status
    def readiness(self) -> ReadinessState:
        """Ready, or the one reason why not (:class:`~socketio_servicebus.manager.readiness.Readiness`)."""
        failed = self._supervisor.failures if self._supervisor is not None else {}
        return readiness(self._life.state, failed, self._transport.link, write_only=self.write_only)

    def health(self) -> dict[str, Any]:
        """``ready`` and, when not ready, ``reason``: the first of closing/closed, a background
        task that died (``failed_tasks``: name -> error; it is restarted), not connected, no
        subscription."""
        link = self._transport.link
        ready = self.readiness()
        return {
            "state": self._life.state.value,
            "readiness": ready.state.value,
            "connected": connected(link, self.write_only),
            "subscription_ready": link.subscription_ready,
            "last_error": link.error,
            "failed_tasks": dict(self._supervisor.failures) if self._supervisor is not None else {},
            "ready": ready.ready,
            "reason": ready.reason,
            "buffered": len(self._outbox) if self._outbox is not None else 0,
            "throttled": link.sender is SenderState.THROTTLED,
        }

    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes from heartbeats, this one first."""
        return self._cluster.nodes(self._client_count())

    def server_count(self) -> int:
        return self._cluster.server_count()

    def _room_size(self, env: Envelope) -> int | None:
        """This node's clients in the envelope's room (for the deliver span), when it names one."""
        room = env.body.get("room")
        if not isinstance(room, str):
            return None
        return len(self.rooms.get(env.ns, {}).get(room) or ())

    def _client_count(self) -> int:
        return sum(len(ns.get(None, ())) for ns in self.rooms.values())

    # ================================================================== sending
    def _put(self, env: Envelope) -> None:
        """Queue ``env``.  Allowed while closing (goodbye, replies) until close() has flushed;
        raises :class:`ManagerClosed` once closed."""
        if self._life.state is State.CLOSED:
            raise ManagerClosed(f"ServiceBusManager {self.node_id} is closed: {env.kind.value} not sent")
        if self._life.state is State.NEW:
            self._ensure_started()
        assert self._outbox is not None
        self._outbox.put(env)

    async def emit(self, event: str, data: Any, namespace: str | None = None, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None, persist: bool = False,
                   **kwargs: Any) -> None:
        """python-socketio's ``emit``, plus ``persist=True``: the event is also stored for history.

        Persisted emits carry the persist flag on the wire (``sio_persist``), so the Functions'
        ``persist`` subscription stores them in Table Storage for the history/replay API.
        """
        if not kwargs.get("ignore_queue"):
            self._life.check_open("emit")  # before the local delivery: all or nothing
        token = _PERSIST.set(bool(persist))
        try:
            if self._spans.tracing.on:
                with self._spans.emit({"method": "emit", "event": event, "room": to or room}, namespace or "/"):
                    await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                       callback=callback, to=to, **kwargs)
            else:
                await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                                   callback=callback, to=to, **kwargs)
        finally:
            _PERSIST.reset(token)

    async def _publish(self, data: dict[str, Any]) -> None:
        """Queue a python-socketio pub/sub message; it leaves in the next batch.

        Returns at once, unless Service Bus is reachable but not keeping up: then it waits
        (backpressure, at most half of ``Limits.max_queue_delay``) and, if the buffer is still
        that old, drops the envelope (counted in ``backpressure_dropped``).  Raises
        :class:`~socketio_servicebus.errors.EnvelopeTooLarge` if it can never fit in one message,
        :class:`ManagerClosed` once :meth:`close` has begun.
        """
        self._life.check_open(f"publish {data.get('method')!r}")
        kind = Kind(str(data.get("method")))
        target = data.get("host_id") if kind is Kind.CALLBACK else None
        persist = kind is Kind.EMIT and _PERSIST.get()
        if self._outbox is not None and not await self._outbox.admit():
            return  # counted and logged by the outbox
        env = self._cluster.envelope(kind, data, data.get("namespace") or "/", target, persist)
        trace = self._spans.envelope_context()  # None while tracing is off
        if trace is not None:
            env = dataclasses.replace(env, traceparent=trace[0], tracestate=trace[1])
        self._put(env)

    async def _traced_send(self, messages: list[tuple[Batch, bytes]]) -> list[str | None] | None:
        """The transport's send, in a ``send <topic>`` span linking the emits it carries."""
        if not self._spans.tracing.on:
            return await self._transport.send(messages)
        with self._spans.send([batch for batch, _ in messages]):
            return await self._transport.send(messages)

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - public API
        """Wait until every envelope queued so far has been sent; ``False`` on timeout."""
        if self._outbox is None:
            return True
        return await self._outbox.flush(timeout)

    # ================================================================== receiving
    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        """Yield python-socketio message dicts until close(); the transport reconnects.

        It never returns: it ends by raising ``CancelledError`` (python-socketio's ``_thread``
        then ends quietly), either from close() or by itself once close() has begun and the
        burst of its last receive call is delivered and settled.
        """
        async for item in self._transport.receive():
            if isinstance(item, Burst):
                for msg in item.messages:
                    async for data in self._process(msg):
                        yield data
            else:  # the receiver (re)opened: retry waiting sends now, announce this node
                if self._outbox is not None:
                    self._outbox.retry_now()
                self._put(self._heartbeat_envelope(hello=True))
        raise asyncio.CancelledError

    async def _process(self, msg: Any) -> AsyncIterator[dict[str, Any]]:
        """Deliver one message's envelopes and queue its settlement."""
        self.metrics.messages_received += 1
        transport, dispatcher = self._transport, self._dispatcher
        try:
            body = message_body(msg)
            batch = dispatcher.decode(body)
        except EnvelopeError as exc:
            transport.poison(msg, exc)
            return
        checked = self._trust.message(msg, body, batch)
        if checked is None:  # no proof of origin: dropped, counted (forged_dropped), logged
            transport.settle(msg, "complete")
            return
        try:
            routed = dispatcher.route(batch)
            self.metrics.duplicates_dropped += routed.duplicates
            self.metrics.misaddressed_dropped += len(routed.misaddressed)
            for env in routed.misaddressed:  # the subscription rule should have kept them away
                self._log.debug("servicebus: envelope %s (from %s, to %s) is not for this node",
                                env.id, env.origin_node, env.target_node)
            now_wall = time.time()
            spans = self._spans.receive(batch, msg.message_id) if self._spans.tracing.on else _NO_SPAN
            with spans as receive_span:
                for route, env in routed.envelopes:
                    if not self._trust.envelope(checked, env, self._touches_local):
                        dispatcher.handled(env)  # outside its zone's policy: dropped (counted if it mattered here)
                        continue
                    self.metrics.envelopes_received += 1
                    self.metrics.observe_lag(now_wall - env.ts)
                    if route is Route.SOCKETIO:
                        if receive_span is None:
                            yield env.body
                        else:
                            with self._spans.deliver(env, receive_span, self._room_size(env)):
                                yield env.body
                    elif route is Route.HEARTBEAT:
                        if env.body.get("bye") or self._trust.join(
                                checked, env, self._cluster.registry.live_ids(time.monotonic())):
                            self._on_heartbeat(env)  # else: not signed for, or over a cap: never registered
                    elif route is Route.REQUEST:
                        self._accept_request(env)
                    else:
                        self._cluster.on_response(env)
                    dispatcher.handled(env)
        except Exception:  # noqa: BLE001 - logged with traceback and counted; abandoned with peek_lock
            transport.failed(msg)
            return
        transport.settle(msg, "complete")

    # ================================================================== cluster
    def _heartbeat_envelope(self, *, hello: bool = False, bye: bool = False, to: str | None = None) -> Envelope:
        return self._cluster.heartbeat(self._client_count(), hello=hello, bye=bye, to=to)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cluster.heartbeat_interval)
            self._cluster.prune()
            if self._transport.link.subscription_ready:
                self._put(self._heartbeat_envelope())

    def _on_heartbeat(self, env: Envelope) -> None:
        if self._cluster.on_heartbeat(env) and self._life.running and self._trust.answer_hello(env):
            self._put(self._heartbeat_envelope(to=env.origin_node))  # let the newcomer know us now

    def _touches_local(self, env: Envelope) -> bool:
        """Would ``env`` act on a socket of this node? (A refused no-op is not a forgery.)"""
        b = env.body
        ns = b.get("namespace") or env.ns
        if ns not in self.rooms:
            return False
        if env.kind in (Kind.DISCONNECT, Kind.ENTER_ROOM, Kind.LEAVE_ROOM):
            sid = b.get("sid")
            return bool(self.is_connected(sid, ns) or self.is_pre_connected(sid, ns))
        rooms = b.get("room")
        for room in rooms if isinstance(rooms, list) else [rooms]:
            try:
                if room in self.rooms[ns] and self.rooms[ns][room]:
                    return True
            except TypeError:  # an unhashable room name: python-socketio would not find it either
                continue
        return False

    def on_server_event(
        self, event: str, handler: ServerEventHandler | None = None, *, namespace: str = "/"
    ) -> Any:
        """Register ``handler(*args)`` for :meth:`server_side_emit` from *other* nodes.

        Its return value (or awaited result) is this node's ack; it must be JSON-serialisable
        (bytes allowed).  Usable as a decorator: ``@mgr.on_server_event("reload")``.
        """
        def register(fn: ServerEventHandler) -> ServerEventHandler:
            self._cluster.handlers[(namespace, event)] = fn
            return fn

        return register(handler) if handler is not None else register

    def _require_listener(self, what: str) -> None:
        if self.write_only:
            raise RuntimeError(f"{what} needs a listening manager (write_only=False)")
        self._ensure_started()

    async def _request(self, op: str, ns: str, body: dict[str, Any], timeout: float | None) -> PendingRequest:  # noqa: ASYNC109 - public API
        self._life.check_open(op)
        req, env = self._cluster.open_request(op, ns, body)
        if env is not None:
            self._put(env)
        return await self._cluster.replies(req, timeout)

    async def fetch_sockets(
        self, namespace: str = "/", room: Any = None, timeout: float | None = None,  # noqa: ASYNC109 - public API
        *, raise_on_missing: bool = False,
    ) -> ClusterResult[dict[str, Any]]:
        """Sockets of ``namespace`` (optionally in ``room``) on every node, this one included.

        Each item: ``{"sid", "namespace", "rooms", "node"}``.  Returns as soon as every live
        node has answered, at the latest after ``timeout`` (default ``request_timeout``) seconds,
        with the sockets that arrived; ``result.missing`` names the nodes whose sockets are not
        in it. With ``raise_on_missing=True`` that case raises
        :class:`~socketio_servicebus.errors.IncompleteResult` instead (the partial result attached).
        """
        self._require_listener("fetch_sockets")
        out = _local_sockets(self, self.node_id, namespace, room)
        req = await self._request("fetch_sockets", namespace, {"room": room}, timeout)
        return self._cluster.sockets_result(out, req, raise_on_missing)

    async def room_members(self, namespace: str, room: Any, timeout: float | None = None) -> list[str]:  # noqa: ASYNC109 - public API
        """Sids in ``room`` across all nodes (sorted)."""
        return sorted(s["sid"] for s in await self.fetch_sockets(namespace, room, timeout))

    async def server_side_emit(
        self, event: str, *args: Any, namespace: str = "/", timeout: float | None = None,  # noqa: ASYNC109 - public API
        raise_on_missing: bool = False,
    ) -> ClusterResult[Any]:
        """Call the :meth:`on_server_event` handler for ``event`` on every *other* node.

        Returns the ack values (handler return values), one per node that has a handler and
        answered, ordered by node id, as soon as every live node has answered and at the latest
        after ``timeout``. ``result.missing``: nodes that did not answer in time;
        ``result.errors``: node -> error of handlers that raised (nodes without a handler are
        in neither). ``raise_on_missing=True`` raises
        :class:`~socketio_servicebus.errors.IncompleteResult` when some node did not answer.
        """
        self._require_listener("server_side_emit")
        req = await self._request("server_side_emit", namespace, {"event": event, "args": list(args)}, timeout)
        return self._cluster.acks_result(event, req, raise_on_missing)

    def _accept_request(self, env: Envelope) -> None:
        """Serve a request from another node in a task, or answer ``busy`` at once."""
        assert self._supervisor is not None
        refused = self._cluster.admit(env)
        if refused is not None:
            for reply in refused:
                self._put(reply)
            return
        task = self._supervisor.spawn("request", lambda: self._serve_request(env), restart=False)
        task.add_done_callback(self._cluster.served)

    async def _serve_request(self, env: Envelope) -> None:
        fetch = env.body.get("op") == "fetch_sockets"
        sockets = _local_sockets(self, self.node_id, env.ns, env.body.get("room")) if fetch else []
        for reply in await self._cluster.serve(env, sockets):
            self._put(reply)
