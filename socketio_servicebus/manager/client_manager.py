"""``ServiceBusManager``: a python-socketio client manager over one Azure Service Bus topic.

It subclasses :class:`socketio.AsyncPubSubManager`, which owns emit / rooms / callbacks and
the pub/sub message dicts; this module adds what python-socketio asks of a backend
(``_publish`` and ``_listen``), the public cluster calls, lifecycle and health. The work is
done by parts that never call back into it (``docs/architecture.md``):

* :mod:`socketio_servicebus.manager.outbox` - adaptive outbound batching over a bounded buffer;
* :mod:`socketio_servicebus.servicebus.transport` - the sender, the receiver, settlement and
  link health;
* :mod:`socketio_servicebus.wire.dispatch` - decode, dedupe and route what was received (pure);
* :mod:`socketio_servicebus.manager.inbound` - the receive pipeline: decode, verify, trace and
  route one message, returning the steps the manager acts on;
* :mod:`socketio_servicebus.manager.cluster` - heartbeats, the node registry, request/reply;
* :mod:`socketio_servicebus.manager.lifecycle`, :mod:`socketio_servicebus.manager.readiness` -
  the two explicit states;
* :mod:`socketio_servicebus.manager.supervisor` - background tasks whose end is always observed;
* :mod:`socketio_servicebus.manager.options` - the four option groups, built into the parts by
  :mod:`socketio_servicebus.manager.wiring`;
* :mod:`socketio_servicebus.manager.credits` - credit-aware batching (the ``credit-budget`` task);
* :mod:`socketio_servicebus.manager.local_rooms` - what python-socketio holds on this node.

One emit: ``_publish`` → :meth:`Outbox.put` → (outbox task) :meth:`Transport.send` → Service
Bus. One receive: :meth:`Transport.receive` → ``_listen`` → :meth:`Inbound.message` →
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
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from socketio.async_pubsub_manager import AsyncPubSubManager  # type: ignore[import-untyped]

from socketio_servicebus.errors import ManagerClosed
from socketio_servicebus.manager import credits, wiring
from socketio_servicebus.manager.cluster import ServerEventHandler
from socketio_servicebus.manager.inbound import Inbound
from socketio_servicebus.manager.lifecycle import Lifecycle, State
from socketio_servicebus.manager.local_rooms import client_count, local_sockets
from socketio_servicebus.manager.options import (
    BatchingOptions,
    ClusterOptions,
    ConnectionOptions,
    Limits,
    from_legacy,
)
from socketio_servicebus.manager.outbox import Outbox, SendFn
from socketio_servicebus.manager.readiness import ReadinessState, health_report, readiness
from socketio_servicebus.manager.requests import PendingRequest
from socketio_servicebus.manager.results import ClusterResult
from socketio_servicebus.manager.supervisor import Supervisor
from socketio_servicebus.manager.trust import Trust
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.transport import RECEIVE_WAIT, Burst
from socketio_servicebus.tracing import MessagingSpans, Tracing
from socketio_servicebus.wire.dispatch import Route
from socketio_servicebus.wire.envelope import Envelope, Kind
from socketio_servicebus.zones import ZoneSet

__all__ = ["ManagerClosed", "ServiceBusManager", "ServerEventHandler"]

default_logger = logging.getLogger("socketio.servicebus")

#: Seconds close() waits for the outbound buffer to drain.
_CLOSE_FLUSH_TIMEOUT = 5.0

_PERSIST: contextvars.ContextVar[bool] = contextvars.ContextVar("sio_persist", default=False)
_NO_SPAN = contextlib.nullcontext(None)


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


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
        self._transport, self._cluster, self._dispatcher = wiring.parts(self.node_id, region, conn, self.batching,
                                                                        cl, self.limits, self.metrics, self._log)
        self.subscription_name: str = self._transport.subscription_name
        #: OpenTelemetry spans (emit, send, receive, deliver); nothing until an SDK is configured
        self._spans = MessagingSpans(tracing if isinstance(tracing, Tracing) else Tracing(enabled=tracing),
                                     topic=self.topic, subscription=self.subscription_name)
        #: trust zones: sign on send, verify/police/bound on receive (``zones=None``: bounds only)
        self.zones = zones
        self._trust = Trust(zones, self.metrics, max_nodes=self.limits.max_nodes,
                            heartbeat_interval=cl.heartbeat_interval, logger=self._log)
        self._transport.signer = self._trust.signer
        self._inbound = Inbound(transport=self._transport, dispatcher=self._dispatcher, trust=self._trust,
                                cluster=self._cluster, spans=self._spans, rooms=self, metrics=self.metrics,
                                logger=self._log)
        #: what the outbox sends with (a seam: instrumentation may wrap it before start())
        self._send: SendFn = wiring.traced_send(self._spans, self._transport)
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._life.stopping:
                    changed.clear()
                    if self.readiness().ready:
                        return True
                    await changed.wait()
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
        self._supervisor, self._outbox = sup, outbox = wiring.running(
            self.node_id, self.connection, self.batching, self.limits, self._send, self._transport.changed.set,
            self.metrics, self._log)
        self._life.to(State.RUNNING)
        self.metrics.nodes = self._cluster.server_count()
        sup.spawn("outbox", outbox.run, restart=True)
        sup.spawn("warm-sender", self._transport.warm_sender, restart=False)
        if self.batching.credit_budget is not None:
            sup.spawn("credit-budget", lambda: credits.steer(self.batching, self.cluster_options, outbox,
                                                             self._cluster, self.metrics), restart=True)
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
        if lost := await outbox.drain(_CLOSE_FLUSH_TIMEOUT):  # counted in close_dropped
            self._log.warning("servicebus manager %s closing with %d unsent envelope(s) lost", self.node_id, lost)
        left = await sup.cancel(None, 5.0)
        if left:
            self._log.warning("close: tasks still running: %s", left)
        await self._transport.close()
        self._life.to(State.CLOSED)

    shutdown = close

    # ================================================================== status
    def readiness(self) -> ReadinessState:
        """Ready, or the one reason why not (:class:`~socketio_servicebus.manager.readiness.Readiness`)."""
        failed = self._supervisor.failures if self._supervisor is not None else {}
        return readiness(self._life.state, failed, self._transport.link, write_only=self.write_only)

    def health(self) -> dict[str, Any]:
        """``ready`` and, when not ready, ``reason``: the first of closing/closed, a background
        task that died (``failed_tasks``: name -> error; it is restarted), not connected, no
        subscription."""
        return health_report(self._life.state, self._supervisor.failures if self._supervisor is not None else {},
                             self._transport.link, write_only=self.write_only,
                             buffered=len(self._outbox) if self._outbox is not None else 0)

    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes from heartbeats, this one first."""
        return self._cluster.nodes(client_count(self))

    def server_count(self) -> int:
        return self._cluster.server_count()

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
        span = (self._spans.emit({"method": "emit", "event": event, "room": to or room}, namespace or "/")
                if self._spans.tracing.on else _NO_SPAN)  # off: not even the span's attributes are built
        try:
            with span:
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
            if not isinstance(item, Burst):  # the receiver (re)opened: retry waiting sends now, announce this node
                if self._outbox is not None:
                    self._outbox.retry_now()
                self._put(self._heartbeat_envelope(hello=True))
                continue
            for msg in item.messages:
                steps = self._inbound.message(msg)  # settles msg once its steps are done
                for route, env in steps:
                    if route is Route.SOCKETIO:
                        yield env.body  # python-socketio handles it before the next step
                        continue
                    try:
                        if route is Route.HEARTBEAT:
                            self._on_heartbeat(env)
                        else:
                            self._accept_request(env)
                    except Exception as exc:  # noqa: BLE001 - handed back: the pipeline counts, logs, abandons
                        Inbound.failed(steps, exc)
                        break
        raise asyncio.CancelledError

    # ================================================================== cluster
    def _heartbeat_envelope(self, *, hello: bool = False, bye: bool = False, to: str | None = None) -> Envelope:
        return self._cluster.heartbeat(client_count(self), hello=hello, bye=bye, to=to)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cluster.heartbeat_interval)
            self._cluster.prune()
            if self._transport.link.subscription_ready:
                self._put(self._heartbeat_envelope())

    def _on_heartbeat(self, env: Envelope) -> None:
        if self._cluster.on_heartbeat(env) and self._life.running and self._trust.answer_hello(env):
            self._put(self._heartbeat_envelope(to=env.origin_node))  # let the newcomer know us now

    def on_server_event(
        self, event: str, handler: ServerEventHandler | None = None, *, namespace: str = "/"
    ) -> Any:
        """Register ``handler(*args)`` for :meth:`server_side_emit` from *other* nodes.

        Its return value (or awaited result) is this node's ack; it must be JSON-serialisable
        (bytes allowed).  Usable as a decorator: ``@mgr.on_server_event("reload")``.
        """
        return self._cluster.register(namespace, event, handler)

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
        out = local_sockets(self, self.node_id, namespace, room)
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
        for reply in await self._cluster.answer(env, self):
            self._put(reply)
