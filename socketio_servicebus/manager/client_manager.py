"""``ServiceBusManager``: a python-socketio client manager over one Azure Service Bus topic.

It subclasses :class:`socketio.AsyncPubSubManager`, which owns emit / rooms / callbacks and
the pub/sub message dicts; this module adds the Service Bus transport (``_publish`` and
``_listen``) and what python-socketio lacks: a node registry from heartbeats,
``fetch_sockets``, ``server_side_emit`` with acks, health and metrics.

Pieces, each in its own module:

* :mod:`socketio_servicebus.wire.envelope` - wire format (one Service Bus message = one batch of envelopes);
* :mod:`socketio_servicebus.manager.outbox` - adaptive outbound batching over a bounded buffer;
* :mod:`socketio_servicebus.servicebus.subscription` - the per-node subscription (name, SQL rule, admin calls);
* :mod:`socketio_servicebus.manager.lifecycle` - the one state field (new/running/closing/closed);
* :mod:`socketio_servicebus.manager.supervisor` - background tasks whose end is always observed;
* :mod:`socketio_servicebus.manager.registry`, :mod:`socketio_servicebus.manager.requests`, :mod:`socketio_servicebus.manager.dedupe`, :mod:`socketio_servicebus.manager.metrics`,
  :mod:`socketio_servicebus.servicebus.retry` - pure bookkeeping.

Task layout once running (all on the server's event loop, all supervised: a task that dies is
logged, makes ``health()`` not ready with the reason, and is restarted):

* ``outbox`` - sends batches; one send in flight at a time, under ``_sender_lock`` (the SDK
  sender is not safe for concurrent sends, nor for a close during a send);
* ``listener`` - python-socketio's ``_thread`` iterating :meth:`ServiceBusManager._listen`,
  which reconnects with backoff and settles each received burst between receive calls; it
  ends only when close() begins;
* ``heartbeat`` - announces this node and expires silent ones;
* ``subscription-watch`` - re-asserts the own subscription's rule;
* ``request`` - one per request served for another node (at most ``max_concurrent_requests``).

See ``docs/manager.md`` for usage and guarantees.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.exceptions import MessageSizeExceededError
from socketio.async_pubsub_manager import AsyncPubSubManager  # type: ignore[import-untyped]

from socketio_servicebus.manager.dedupe import SeenIds
from socketio_servicebus.manager.lifecycle import Lifecycle, ManagerClosed, State
from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.manager.outbox import Outbox, PartialSendError
from socketio_servicebus.manager.registry import NodeRegistry
from socketio_servicebus.manager.requests import PendingRequest, Reply, RequestTracker
from socketio_servicebus.manager.results import ClusterResult, IncompleteResult
from socketio_servicebus.manager.supervisor import Supervisor
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from socketio_servicebus.servicebus.retry import backoff, is_entity_gone, is_fatal
from socketio_servicebus.servicebus.sdk_internals import PrefetchProbe
from socketio_servicebus.servicebus.subscription import (
    NodeSubscriptionSpec,
    check_node_subscription,
    delete_node_subscription,
    ensure_node_subscription,
    node_subscription_spec,
)
from socketio_servicebus.wire.envelope import (
    MAX_BATCH_BYTES,
    SOCKETIO_KINDS,
    Batch,
    Envelope,
    EnvelopeError,
    EnvelopeTooLarge,
    Kind,
)

__all__ = ["ManagerClosed", "ServiceBusManager", "ServerEventHandler"]

default_logger = logging.getLogger("socketio.servicebus")

#: ``handler(*args)`` -> ack value (or an awaitable of it).
ServerEventHandler = Callable[..., Any]

_RECEIVE_MODES = {
    "peek_lock": ServiceBusReceiveMode.PEEK_LOCK,
    "receive_and_delete": ServiceBusReceiveMode.RECEIVE_AND_DELETE,
}
#: Sockets per fetch_sockets reply envelope (halved again while a part is too large).
_SOCKETS_PER_PART = 500
#: Seconds close() waits for the outbound buffer to drain.
_CLOSE_FLUSH_TIMEOUT = 5.0
#: Seconds close() waits for the settlement of what was received before closing the link.
_CLOSE_SETTLE_TIMEOUT = 5.0
#: ServiceBusClient options unless ``client_options`` says otherwise: one quick SDK retry, then
#: the manager's own backoff (which keeps health() truthful meanwhile).
_CLIENT_DEFAULTS: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}


#: max_wait_time of one receive call; also the longest a detached SDK link can stall the loop.
_RECEIVE_WAIT = 1.0
#: most messages taken from the SDK's prefetch buffer in one receive call
_RECEIVE_BATCH = 256


_PERSIST: contextvars.ContextVar[bool] = contextvars.ContextVar("sio_persist", default=False)

class _ReceiverStalled(Exception):
    """The SDK receiver stopped doing I/O (its link detached without an error)."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _body_bytes(msg: Any) -> bytes:
    body = msg.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    try:
        parts = list(body)
    except TypeError:
        raise EnvelopeError("not-bytes", f"message body is {type(body).__name__}, not data") from None
    if not all(isinstance(p, (bytes, bytearray, memoryview)) for p in parts):
        raise EnvelopeError("not-bytes", "message body is an AMQP value/sequence, not data")
    return b"".join(bytes(p) for p in parts)


class ServiceBusManager(AsyncPubSubManager):  # type: ignore[misc]
    """Client manager (a :class:`socketio.async_pubsub_manager.AsyncPubSubManager`) sharing one Service Bus topic between python-socketio servers.

    ::

        mgr = ServiceBusManager(connection_string=conn, region="eu")
        sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr)
        await mgr.start()            # optional: joins now instead of at the first connection

    All arguments are keyword-only; nothing is read from the environment.

    :param connection_string: Service Bus (or emulator) connection string.
    :param fully_qualified_namespace: ``<ns>.servicebus.windows.net``, with ``credential``
        (an azure-identity async credential), instead of a connection string.
    :param topic: the shared topic.
    :param node_id: this node's id (default ``<hostname>-<8 hex>``); also python-socketio's
        ``host_id``.
    :param region: this node's region (``origin_region`` of its envelopes).
    :param subscription: a pre-provisioned subscription to receive from (nodes holding only a
        Listen+Send key); the admin API is then never called.  ``None``: create, keep and
        delete ``node-<node_id>`` with the rule from ``topology.json``.
    :param receive_mode: ``"receive_and_delete"`` (default: no settlement frames; at-most-once,
        poison messages are counted and logged with the reason but cannot be dead-lettered) or
        ``"peek_lock"`` (every message completed between receive calls, poison messages
        dead-lettered; one disposition per message).  See ``docs/manager.md``.
    :param buffer_size: envelopes kept for sending while Service Bus is unreachable; beyond it
        the oldest waiting one is dropped (``buffer_dropped``).
    :param max_message_bytes: Service Bus message size limit; batches stay below it and a single
        envelope that cannot fit raises :class:`~socketio_servicebus.wire.envelope.EnvelopeTooLarge` to the caller.
    :param heartbeat_interval: seconds between heartbeats.
    :param node_timeout: a node without heartbeat for this long is considered gone.
    :param request_timeout: default timeout of ``fetch_sockets`` / ``server_side_emit``.
    :param subscription_ttl: message TTL of the own subscription (default from topology.json).
    :param auto_delete_on_idle: AutoDeleteOnIdle of the own subscription, seconds (Azure's
        minimum is 300).
    :param write_only: only emit (external emitters, Functions): no subscription, no listener,
        no heartbeats; ``fetch_sockets`` / ``server_side_emit`` are unavailable.
    :param logger: logger (default ``socketio.servicebus``).
    :param json: passed to python-socketio (packet encoding); the wire always uses
        :mod:`socketio_servicebus.wire.codec`.
    :param backoff_initial: first reconnect delay (doubles up to ``backoff_max``, with jitter).
    :param backoff_max: reconnect delay cap.
    :param dedupe_size: envelope ids remembered for duplicate suppression.
    :param prefetch_count: messages the receiver link holds ahead.
    :param subscription_check_interval: seconds between checks that the own subscription still
        has exactly its node rule (repaired if changed from outside); ``0`` disables.
    :param send_interval: latency budget of the adaptive batch window: the longest an envelope
        waits for companions.  Below ~800 envelopes/s, on a link that is not saturated, nothing
        waits (an envelope leaves as soon as the sender is free; what arrives during a send
        shares the next message); above that rate, or while sends are in flight >= 80 % of the
        time, the window is the time ~12 envelopes take to arrive, at most ``send_interval``
        (:class:`~socketio_servicebus.manager.linger.Linger`).  ``0``: never wait.
    :param client_options: extra keyword arguments for the SDK's ``ServiceBusClient`` (e.g.
        ``transport_type``, ``http_proxy``, ``retry_total``); they override the manager's
        defaults (``retry_total=1, retry_backoff_factor=0.5, retry_backoff_max=2``: the manager
        retries with its own backoff).
    :param admin_options: extra keyword arguments for the SDK's
        ``ServiceBusAdministrationClient`` (e.g. ``proxies``, ``transport``).
    :param max_concurrent_requests: ``fetch_sockets`` / ``server_side_emit`` requests from
        other nodes served at once; beyond it a request is answered at once with the error
        ``busy`` (counted in ``requests_refused``).

    Lifecycle: ``new`` → ``running`` (:meth:`start`, or python-socketio's first connection) →
    ``closing`` → ``closed`` (:meth:`close`).  Emitting once closing raises
    :class:`~socketio_servicebus.manager.lifecycle.ManagerClosed`.
    """

    name = "servicebus"

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        fully_qualified_namespace: str | None = None,
        credential: Any = None,
        topic: str = "socketio",
        node_id: str | None = None,
        region: str = "local",
        subscription: str | None = None,
        receive_mode: str = "receive_and_delete",
        buffer_size: int = 10_000,
        max_message_bytes: int = 256 * 1024,
        heartbeat_interval: float = 5.0,
        node_timeout: float = 15.0,
        request_timeout: float = 10.0,
        subscription_ttl: float | None = None,
        auto_delete_on_idle: float = 300.0,
        write_only: bool = False,
        logger: logging.Logger | None = None,
        json: Any = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        dedupe_size: int = 50_000,
        prefetch_count: int = 256,
        subscription_check_interval: float = 60.0,
        send_interval: float = 0.015,
        client_options: Mapping[str, Any] | None = None,
        admin_options: Mapping[str, Any] | None = None,
        max_concurrent_requests: int = 64,
    ) -> None:
        if not connection_string and not (fully_qualified_namespace and credential is not None):
            raise ValueError("give connection_string, or fully_qualified_namespace and credential")
        if receive_mode not in _RECEIVE_MODES:
            raise ValueError(f"receive_mode must be one of {sorted(_RECEIVE_MODES)}, not {receive_mode!r}")
        if max_message_bytes < 4096:
            raise ValueError("max_message_bytes must be at least 4096")
        if region and "," in region:
            raise ValueError("region must not contain ','")
        super().__init__(channel=topic, write_only=write_only, logger=logger, json=json)
        self.node_id: str = node_id or _default_node_id()
        self.host_id = self.node_id  # python-socketio addresses callbacks by host_id
        self.region = region
        self.topic = topic
        self._conn = {
            "connection_string": connection_string,
            "fully_qualified_namespace": fully_qualified_namespace,
            "credential": credential,
        }
        self._owns_subscription = subscription is None
        self._spec: NodeSubscriptionSpec = node_subscription_spec(
            topic=topic, node_id=self.node_id, ttl=subscription_ttl, auto_delete_on_idle=auto_delete_on_idle
        )
        self.subscription_name: str = subscription or self._spec.name
        self.receive_mode = receive_mode
        self.buffer_size = buffer_size
        self.max_message_bytes = max_message_bytes
        # headroom for AMQP header, properties and application properties
        self._body_limit = max_message_bytes - min(8192, max_message_bytes // 8)
        self._decode_limit = max(MAX_BATCH_BYTES, max_message_bytes)
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout
        self.request_timeout = request_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.prefetch_count = prefetch_count
        self.send_interval = send_interval
        self.subscription_check_interval = subscription_check_interval
        self.client_options: dict[str, Any] = {**_CLIENT_DEFAULTS, **(client_options or {})}
        self.admin_options: dict[str, Any] = dict(admin_options or {})
        self.max_concurrent_requests = max(1, max_concurrent_requests)

        self.metrics = ManagerMetrics()
        self._registry = NodeRegistry(node_timeout, heartbeat_interval)
        self._requests = RequestTracker()
        self._seen = SeenIds(dedupe_size)
        self._prefetched = PrefetchProbe(self.metrics, self.logger or default_logger, _RECEIVE_BATCH)
        self._server_handlers: dict[tuple[str, str], ServerEventHandler] = {}

        self._client: Any = None
        self._sender: Any = None
        self._sender_lock: asyncio.Lock | None = None
        self._receiver: Any = None
        self._outbox: Outbox | None = None
        self._life = Lifecycle()
        self._supervisor: Supervisor | None = None
        #: set when close() begins: cuts the listener's backoff waits short
        self._closing_event: asyncio.Event | None = None
        self._requests_active = 0
        #: settlements of the burst being delivered; sent between receive calls (see _settle_burst)
        self._to_settle: list[tuple[Any, Any, str, str, str]] = []
        self._ready_event: asyncio.Event | None = None
        # health conditions (the lifecycle is self._life)
        self._send_ok = False
        self._recv_ok = False
        self._subscription_ready = False
        self._subscription_created = False
        self._last_error: str | None = None

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
        assert self._ready_event is not None
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
        except TimeoutError:
            return False
        return self._life.running

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
        self._client = servicebus_client(**self._conn, **self.client_options)
        self._sender_lock = asyncio.Lock()
        self._ready_event = asyncio.Event()
        self._closing_event = asyncio.Event()
        self._supervisor = sup = Supervisor(
            prefix=f"sbmanager-{self.node_id}", logger=self._log, metrics=self.metrics,
            on_change=self._update_ready, backoff_initial=self.backoff_initial, backoff_max=self.backoff_max,
        )
        self._outbox = outbox = Outbox(
            self._send,
            body_limit=self._body_limit,
            max_items=self.buffer_size,
            metrics=self.metrics,
            logger=self._log,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            on_error=self._on_send_error,
            on_success=self._on_send_ok,
            linger=self.send_interval,
        )
        self._life.to(State.RUNNING)
        sup.spawn("outbox", outbox.run, restart=True)
        sup.spawn("warm-sender", self._warm_sender, restart=False)
        if not self.write_only:
            self.thread = sup.spawn("listener", self._thread, restart=True)
            sup.spawn("heartbeat", self._heartbeat_loop, restart=True)
            if self._owns_subscription and self.subscription_check_interval > 0:
                sup.spawn("subscription-watch", self._subscription_watch, restart=True)
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
        assert sup is not None and outbox is not None and self._closing_event is not None
        self._closing_event.set()
        sup.stop_supervising()
        self._update_ready()
        assert self._ready_event is not None
        self._ready_event.set()  # wake wait_ready() callers: they return False (not running)
        if not self.write_only:
            await self._stop_receiving(sup)
            try:
                self._put(self._heartbeat_envelope(bye=True))
            except EnvelopeError:  # pragma: no cover - a heartbeat always fits
                self._log.warning("close: goodbye heartbeat did not fit")
        if not await outbox.flush(_CLOSE_FLUSH_TIMEOUT):
            lost = len(outbox)
            self.metrics.close_dropped += lost
            self._log.warning("servicebus manager %s closing with %d unsent envelope(s) lost",
                              self.node_id, lost)
        left = await sup.cancel(None, 5.0)
        if left:
            self._log.warning("close: tasks still running: %s", left)
        # SDK link closes take ~0.5-1 s each (keep-alive task): run them side by side
        await asyncio.gather(self._close_receiver(), self._close_sender(), self._delete_own_subscription())
        if self._client is not None:
            try:
                await self._client.close()
            except Exception as exc:  # noqa: BLE001 - closing anyway; said in the log
                self._log.warning("close: SDK client close failed: %s: %s", type(exc).__name__, exc)
        self._send_ok = self._recv_ok = self._subscription_ready = False
        self._life.to(State.CLOSED)

    async def _stop_receiving(self, sup: Supervisor) -> None:
        """End the listener after its current receive call (it settles that burst itself), then
        settle anything still unsettled: one settler at a time on the link."""
        listener = sup.task("listener")
        if listener is not None and not listener.done():
            _, pending = await asyncio.wait({listener}, timeout=_RECEIVE_WAIT + 2.0)
            if pending:
                self._log.warning("close: listener did not stop after its receive call; cancelling it")
                left = await sup.cancel(("listener",), 5.0)
                if left:
                    self._log.warning("close: listener still running: %s", left)
        if self._to_settle:
            try:
                await asyncio.wait_for(self._settle_burst(), _CLOSE_SETTLE_TIMEOUT)
            except TimeoutError:
                self._log.warning("close: settling %d received message(s) timed out; they will be "
                                  "redelivered", len(self._to_settle))

    shutdown = close

    async def _delete_own_subscription(self) -> None:
        if not (self._owns_subscription and self._subscription_created and not self.write_only):
            return
        try:
            async with self._admin() as admin:
                await asyncio.wait_for(delete_node_subscription(admin, self._spec), 10.0)
        except Exception as exc:  # noqa: BLE001 - logged; closing goes on
            self._log.warning("could not delete subscription %s: %s (AutoDeleteOnIdle will)",
                              self.subscription_name, exc)

    # ================================================================== status
    def health(self) -> dict[str, Any]:
        """``ready`` and, when not ready, ``reason``: the first of closing/closed, a background
        task that died (``failed_tasks``: name -> error; it is restarted), not connected, no
        subscription."""
        connected = self._send_ok and (self.write_only or self._recv_ok)
        sub_ready = self._subscription_ready or self.write_only
        failed = dict(self._supervisor.failures) if self._supervisor is not None else {}
        state = self._life.state
        reason: str | None = None
        if state is not State.RUNNING:
            reason = f"manager {state.value}"
        elif failed:
            reason = "background task died: " + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        elif not connected or not sub_ready:
            reason = "servicebus not connected" if not connected else "subscription not ready"
            if self._last_error:
                reason += f": {self._last_error}"
        return {
            "state": state.value,
            "connected": connected,
            "subscription_ready": self._subscription_ready,
            "last_error": self._last_error,
            "failed_tasks": failed,
            "ready": reason is None,
            "reason": reason,
            "buffered": len(self._outbox) if self._outbox is not None else 0,
        }

    def _update_ready(self) -> None:
        if self._ready_event is None or self._life.stopping:
            return  # close() has set the event for good: waiters return False
        self.metrics.nodes = self.server_count()
        if self.health()["ready"]:
            self._ready_event.set()
        else:
            self._ready_event.clear()

    def _set_error(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"[:500]

    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes from heartbeats, this one first."""
        me = {"node_id": self.node_id, "region": self.region, "clients": self._client_count(),
              "last_seen": time.time()}
        mono = time.monotonic()
        return [me] + [i.as_dict(mono) for i in self._registry.live(mono)]

    def server_count(self) -> int:
        return 1 + len(self._registry.live(time.monotonic()))

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

    def _envelope(
        self, kind: Kind, body: dict[str, Any], ns: str = "/", target: str | None = None, persist: bool = False,
        target_region: str | None = None,
    ) -> Envelope:
        if target is not None and target_region is None:
            target_region = self._registry.region_of(target)
        return Envelope(kind=kind, origin_node=self.node_id, origin_region=self.region, ns=ns or "/",
                        target_node=target, target_region=target_region, body=body, persist=persist)

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
            await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
        finally:
            _PERSIST.reset(token)

    async def _publish(self, data: dict[str, Any]) -> None:
        """Queue a python-socketio pub/sub message; it leaves in the next batch.

        Returns at once (never waits for Service Bus).  Raises
        :class:`~socketio_servicebus.wire.envelope.EnvelopeTooLarge` if it can never fit in one message,
        :class:`ManagerClosed` once :meth:`close` has begun.
        """
        self._life.check_open(f"publish {data.get('method')!r}")
        method = data.get("method")
        kind = Kind(str(method))
        target = data.get("host_id") if kind is Kind.CALLBACK else None
        persist = kind is Kind.EMIT and _PERSIST.get()
        self._put(self._envelope(kind, data, data.get("namespace") or "/", target, persist))

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - public API
        """Wait until every envelope queued so far has been sent; ``False`` on timeout."""
        if self._outbox is None:
            return True
        return await self._outbox.flush(timeout)

    async def _open_sender_locked(self) -> Any:
        """The sender, opened if needed; the caller holds ``_sender_lock``."""
        if self._sender is None:
            sender = self._client.get_topic_sender(self.topic)
            try:
                await sender.__aenter__()
            except BaseException:
                await self._close_link(sender, "sender")
                raise
            self._sender = sender
        return self._sender

    async def _close_link(self, link: Any, what: str) -> None:
        try:
            await link.close()
        except Exception as exc:  # noqa: BLE001 - a link being dropped anyway; logged
            self._log.warning("servicebus: closing the %s failed: %s: %s", what, type(exc).__name__, exc)

    async def _close_sender(self) -> None:
        """Close the sender; waits for a send in flight (both hold ``_sender_lock``)."""
        assert self._sender_lock is not None
        async with self._sender_lock:
            sender, self._sender = self._sender, None
            if sender is not None:
                await self._close_link(sender, "sender")

    async def _warm_sender(self) -> None:
        """Open the sender before the first emit (it costs ~0.5 s)."""
        assert self._sender_lock is not None
        delays = backoff(self.backoff_initial, self.backoff_max)
        while self._life.running:
            try:
                async with self._sender_lock:
                    await self._open_sender_locked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported through health(); the outbox retries too
                self._on_send_error(exc)
                self._log.warning("servicebus sender for %s not open (%s); retrying", self.topic, self._last_error)
                await asyncio.sleep(next(delays))
                continue
            self._on_send_ok()
            return

    async def _send(self, messages: list[tuple[Batch, bytes]]) -> list[str | None] | None:
        """The outbox's transport (see :mod:`socketio_servicebus.manager.outbox` for the contract).

        Holds ``_sender_lock`` for the whole send, so nobody closes the link under it.
        """
        assert self._sender_lock is not None
        sb = [
            ServiceBusMessage(body, application_properties=batch.application_properties(),
                              message_id=batch.envelopes[0].id, content_type="application/json")
            for batch, body in messages
        ]
        async with self._sender_lock:
            sender = await self._open_sender_locked()
            if len(sb) > 1:
                try:
                    await sender.send_messages(sb)
                    return None
                except (MessageSizeExceededError, ValueError):
                    pass  # the list did not fit in one AMQP batch (nothing was sent): one by one
                except Exception:
                    await self._close_sender_locked()
                    raise
            done: list[str | None] = []
            for m in sb:
                try:
                    await sender.send_messages(m)
                except (MessageSizeExceededError, ValueError) as exc:
                    # the broker's limit is below max_message_bytes: retrying cannot help
                    done.append(f"{type(exc).__name__}: {exc} (lower max_message_bytes)"[:500])
                except Exception as exc:
                    await self._close_sender_locked()
                    if not done:
                        raise
                    raise PartialSendError(done, exc) from exc
                else:
                    done.append(None)
            return done

    async def _close_sender_locked(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            await self._close_link(sender, "sender")

    def _on_send_error(self, exc: BaseException) -> None:
        self._send_ok = False
        self._set_error(exc)
        self._update_ready()

    def _on_send_ok(self) -> None:
        if not self._send_ok:
            self._send_ok = True
            self._update_ready()

    # ================================================================== receiving
    def _admin(self) -> Any:
        return admin_client(**self._conn, **self.admin_options)

    async def _open_receiver(self) -> Any:
        if self._owns_subscription:
            async with self._admin() as admin:
                created = await ensure_node_subscription(admin, self._spec)
            if created and self._subscription_created:
                self.metrics.subscription_recreated += 1
                self._log.warning("subscription %s was gone; recreated it", self.subscription_name)
            self._subscription_created = True
        receiver = self._client.get_subscription_receiver(
            self.topic, self.subscription_name,
            receive_mode=_RECEIVE_MODES[self.receive_mode], prefetch_count=self.prefetch_count,
        )
        try:
            await receiver.__aenter__()
        except BaseException:
            await self._close_link(receiver, "receiver")
            raise
        self._receiver = receiver
        self._recv_ok = True
        self._subscription_ready = True
        self._update_ready()
        if self._outbox is not None:
            self._outbox.retry_now()
        # announce ourselves at once; nodes that did not know us answer with their heartbeat
        self._put(self._heartbeat_envelope(hello=True))
        return receiver

    async def _close_receiver(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is None:
            return
        if self.receive_mode == "receive_and_delete":
            # the broker deleted these when it transferred them: closing the link loses them
            lost = self._prefetched(receiver, capped=False)
            if lost:
                self.metrics.prefetch_dropped += lost
                self._log.warning("servicebus: %d prefetched message(s) on %s dropped with the closed "
                                  "receiver (receive_and_delete)", lost, self.subscription_name)
        await self._close_link(receiver, "receiver")

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        """Yield python-socketio message dicts until close(); reconnects with backoff.

        It never returns: it ends by raising ``CancelledError`` (python-socketio's ``_thread``
        then ends quietly), either from close() or by itself once close() has begun and the
        burst of its last receive call is delivered and settled.
        """
        assert self._closing_event is not None
        if self._receiver is not None:  # restarted after the previous run died: its link first
            if self._to_settle:
                await self._settle_burst()
            await self._close_receiver()
        delays = None
        while True:
            if not self._life.running:
                raise asyncio.CancelledError
            try:
                receiver = await self._open_receiver()
                if delays is not None:
                    self._log.info("servicebus receiver for %s reconnected", self.subscription_name)
                delays = None
                loop = asyncio.get_running_loop()
                while True:
                    # The SDK's receive loop busy-waits without ever suspending when its link
                    # is no longer attached (pyamqp do_work returns at once); detect a call
                    # that never yielded to the event loop and reconnect instead of spinning.
                    ticks = [0]
                    handle = loop.call_soon(ticks.__setitem__, 0, 1)
                    # one SDK call per prefetched burst instead of one per message
                    msgs = await receiver.receive_messages(max_message_count=max(1, self._prefetched(receiver)),
                                                           max_wait_time=_RECEIVE_WAIT)
                    handle.cancel()
                    if not msgs and not ticks[0]:
                        self.metrics.receiver_stalls += 1
                        raise _ReceiverStalled("receiver link is no longer attached")
                    for msg in msgs:
                        async for data in self._process(receiver, msg):
                            yield data
                    if self._to_settle:
                        await self._settle_burst()
                    if not self._life.running:
                        raise asyncio.CancelledError  # close() began: stop after this burst
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged below; the listener reconnects
                if not self._life.running:
                    raise asyncio.CancelledError from exc
                self._recv_ok = False
                self._set_error(exc)
                if is_entity_gone(exc):
                    self._subscription_ready = False
                    # the topic may be gone (and recreated) too: a sender link that outlived it
                    # would not be detached by every broker, so open a fresh one
                    await self._close_sender()
                self._update_ready()
                self.metrics.reconnects += 1
                if self._to_settle:
                    self._log.warning("servicebus: %d settlement(s) of %s lost with its link; those "
                                      "messages will be redelivered", len(self._to_settle), self.subscription_name)
                    self.metrics.settle_errors += len(self._to_settle)
                    self._to_settle = []
                await self._close_receiver()
                if delays is None:
                    delays = backoff(self.backoff_initial, self.backoff_max)
                delay = next(delays)
                log = self._log.error if is_fatal(exc) else self._log.warning
                log("servicebus receiver for %s failed (%s); retrying in %.1fs",
                    self.subscription_name, self._last_error, delay)
                try:  # close() cuts the wait short
                    await asyncio.wait_for(self._closing_event.wait(), delay)
                except TimeoutError:
                    pass

    async def _process(self, receiver: Any, msg: Any) -> AsyncIterator[dict[str, Any]]:
        """Deliver one message's envelopes and queue its settlement.

        An envelope id is remembered (dedupe) only once it was handled, so a message abandoned
        after a failure is processed again on redelivery, except for the envelopes it had
        already handled.
        """
        self.metrics.messages_received += 1
        try:
            batch = Batch.decode(_body_bytes(msg), max_bytes=self._decode_limit)
            for env in batch.envelopes:
                if env.kind in SOCKETIO_KINDS and env.body.get("method") != env.kind.value:
                    raise EnvelopeError("bad-body", f"envelope {env.id}: body.method does not match kind")
        except EnvelopeError as exc:
            self._poison(receiver, msg, exc)
            return
        try:
            now_wall = time.time()
            for env in batch.envelopes:
                if env.id in self._seen:
                    self.metrics.duplicates_dropped += 1
                    continue
                if env.origin_node == self.node_id or env.target_node not in (None, self.node_id):
                    # the subscription rule should have kept it away
                    self.metrics.misaddressed_dropped += 1
                    self._log.debug("servicebus: envelope %s (from %s, to %s) is not for this node",
                                    env.id, env.origin_node, env.target_node)
                    continue
                self.metrics.envelopes_received += 1
                self.metrics.observe_lag(now_wall - env.ts)
                kind = env.kind
                if kind in SOCKETIO_KINDS:
                    yield env.body
                elif kind is Kind.HEARTBEAT:
                    self._on_heartbeat(env)
                elif kind is Kind.REQUEST:
                    self._accept_request(env)
                elif kind is Kind.RESPONSE:
                    self._on_response(env)
                self._seen.add(env.id)
        except Exception:  # noqa: BLE001 - logged with traceback and counted; abandoned with peek_lock
            self.metrics.processing_failures += 1
            self._log.exception(
                "servicebus: failed to process message %s; %s", msg.message_id,
                "dropped (receive_and_delete: the broker already deleted it)"
                if self.receive_mode == "receive_and_delete" else "abandoning it for redelivery")
            self._settle(receiver, msg, "abandon")
            return
        self._settle(receiver, msg, "complete")

    def _poison(self, receiver: Any, msg: Any, exc: EnvelopeError) -> None:
        self.metrics.poison_received += 1
        self._log.warning("servicebus: poison message %s on %s: %s%s", msg.message_id, self.subscription_name, exc,
                          " (receive_and_delete: dropped, cannot be dead-lettered)"
                          if self.receive_mode == "receive_and_delete" else " (dead-lettered)")
        self._settle(receiver, msg, "dead_letter", exc.reason, exc.description)

    def _settle(self, receiver: Any, msg: Any, op: str, reason: str = "", description: str = "") -> None:
        if self.receive_mode == "receive_and_delete":
            return
        self._to_settle.append((receiver, msg, op, reason, description))

    async def _settle_burst(self) -> None:
        """Settle the burst just delivered, all at once, before the next receive call.

        Clients already have these messages: settlement never delays delivery. It runs between
        receive calls rather than beside them because the SDK serves a receive call and a
        concurrent settlement on the same link badly: the receive then waits for the SDK's
        0.2 s socket timeout (measured: send-to-receive median 85 ms at 25 msgs/s, against
        1.6 ms when settling between receives).

        Failures are counted (``settle_errors``) and logged at warning once per burst. If
        cancelled, what it had not settled yet goes back to ``_to_settle`` for close().
        """
        items, self._to_settle = self._to_settle, []
        failed: list[tuple[str, BaseException]] = []
        for start in range(0, len(items), 64):
            chunk = items[start : start + 64]
            try:
                results = await asyncio.gather(*(self._settle_one(*it) for it in chunk), return_exceptions=True)
            except asyncio.CancelledError:
                self._to_settle = items[start:] + self._to_settle
                raise
            for (_, msg, op, _, _), res in zip(chunk, results, strict=True):
                if isinstance(res, BaseException):
                    self.metrics.settle_errors += 1
                    failed.append((f"{op} of {msg.message_id}", res))
                elif op == "complete":
                    self.metrics.settled += 1
                elif op == "abandon":
                    self.metrics.abandoned += 1
                else:
                    self.metrics.dead_lettered += 1
        if failed:
            what, exc = failed[0]
            self._log.warning("servicebus: %d settlement(s) on %s failed (first: %s: %s: %s); those messages "
                              "will be redelivered", len(failed), self.subscription_name, what,
                              type(exc).__name__, exc)

    @staticmethod
    async def _settle_one(receiver: Any, msg: Any, op: str, reason: str, description: str) -> None:
        if op == "complete":
            await receiver.complete_message(msg)
        elif op == "abandon":
            await receiver.abandon_message(msg)
        else:
            await receiver.dead_letter_message(msg, reason=reason, error_description=description[:1000])

    async def _subscription_watch(self) -> None:
        """Every ``subscription_check_interval`` s, re-assert the own subscription's rule.

        A rule deleted or replaced from outside (portal, script, a ``$Default`` TrueFilter
        added) would otherwise silently stop delivery, or deliver other nodes' replies here,
        until the node restarts.
        """
        while True:
            await asyncio.sleep(self.subscription_check_interval)
            if not self._subscription_ready or not self._life.running:
                continue
            try:
                async with self._admin() as admin:
                    repaired = await asyncio.wait_for(check_node_subscription(admin, self._spec), 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and logged; checked again next interval
                self.metrics.subscription_check_errors += 1
                self._log.warning("subscription check of %s failed (%s: %s); retrying in %.0fs",
                                  self.subscription_name, type(exc).__name__, exc, self.subscription_check_interval)
                continue
            if repaired:
                self.metrics.subscription_repaired += 1
                self._log.warning("subscription %s: its rules were changed from outside; restored rule %s",
                                  self.subscription_name, self._spec.rule)

    # ================================================================== heartbeats / registry
    def _heartbeat_envelope(self, *, hello: bool = False, bye: bool = False, to: str | None = None) -> Envelope:
        body = {"clients": self._client_count(), "interval": self.heartbeat_interval}
        if hello:
            body["hello"] = True
        if bye:
            body["bye"] = True
        return self._envelope(Kind.HEARTBEAT, body, "/", to)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for gone in self._registry.prune(time.monotonic()):
                self._log.info("node %s timed out (no heartbeat for %.1fs)", gone, self.node_timeout)
                self._requests.forget_node(gone)
            self.metrics.nodes = self.server_count()
            if self._subscription_ready:
                self._put(self._heartbeat_envelope())

    def _on_heartbeat(self, env: Envelope) -> None:
        b = env.body
        node = env.origin_node
        if b.get("bye"):
            if self._registry.remove(node):
                self._log.info("node %s left", node)
            self._requests.forget_node(node)
        else:
            clients = b.get("clients")
            clients = clients if type(clients) is int else 0
            interval = b.get("interval")
            joined = self._registry.seen(node, env.origin_region, clients, time.time(), time.monotonic(),
                                         float(interval) if isinstance(interval, int | float) else None)
            if joined:
                self._log.info("node %s (region %s) joined", node, env.origin_region)
            if (joined or b.get("hello")) and self._life.running:
                self._put(self._heartbeat_envelope(to=node))  # let the newcomer know us now
        self.metrics.nodes = self.server_count()

    # ================================================================== request / reply
    def on_server_event(
        self, event: str, handler: ServerEventHandler | None = None, *, namespace: str = "/"
    ) -> Any:
        """Register ``handler(*args)`` for :meth:`server_side_emit` from *other* nodes.

        Its return value (or awaited result) is this node's ack; it must be JSON-serialisable
        (bytes allowed).  Usable as a decorator: ``@mgr.on_server_event("reload")``.
        """
        def register(fn: ServerEventHandler) -> ServerEventHandler:
            self._server_handlers[(namespace, event)] = fn
            return fn

        return register(handler) if handler is not None else register

    def _local_sockets(self, namespace: str, room: Any) -> list[dict[str, Any]]:
        if namespace not in self.rooms:
            return []
        return [
            {"sid": sid, "namespace": namespace, "rooms": self.get_rooms(sid, namespace), "node": self.node_id}
            for sid, _ in self.get_participants(namespace, room)
        ]

    def _require_listener(self, what: str) -> None:
        if self.write_only:
            raise RuntimeError(f"{what} needs a listening manager (write_only=False)")
        self._ensure_started()

    async def _request(self, op: str, ns: str, body: dict[str, Any], timeout: float | None) -> PendingRequest:  # noqa: ASYNC109 - public API
        self._life.check_open(op)
        mono = time.monotonic()
        req = self._requests.open(op, self._registry.live_ids(mono), self._registry.awaited_ids(mono))
        if not req.asked:
            await self._requests.wait(req, 0)
            return req
        self.metrics.requests_sent += 1
        self._put(self._envelope(Kind.REQUEST, {"rid": req.rid, "op": op, **body}, ns))
        await self._requests.wait(req, self.request_timeout if timeout is None else timeout)
        if req.overdue:
            self.metrics.requests_timed_out += 1
            self._registry.mark_unresponsive(req.overdue)
            self._log.warning("%s: no reply from node(s) %s within %.1fs; not waited for until their next heartbeat",
                              op, ", ".join(sorted(req.overdue)), req.elapsed)
        elif req.missing:
            self._log.info("%s: node(s) %s not waited for (missed heartbeats or a request) and did not answer",
                           op, ", ".join(sorted(req.missing)))
        return req

    async def fetch_sockets(
        self, namespace: str = "/", room: Any = None, timeout: float | None = None,  # noqa: ASYNC109 - public API
        *, raise_on_missing: bool = False,
    ) -> ClusterResult[dict[str, Any]]:
        """Sockets of ``namespace`` (optionally in ``room``) on every node, this one included.

        Each item: ``{"sid", "namespace", "rooms", "node"}``.  Returns as soon as every live
        node has answered, at the latest after ``timeout`` (default ``request_timeout``) seconds,
        with the sockets that arrived; ``result.missing`` names the nodes whose sockets are not
        in it. With ``raise_on_missing=True`` that case raises :class:`IncompleteResult` instead
        (the partial result attached).
        """
        self._require_listener("fetch_sockets")
        out = self._local_sockets(namespace, room)
        req = await self._request("fetch_sockets", namespace, {"room": room}, timeout)
        errors: dict[str, str] = {}
        for r in sorted(req.replies.values(), key=lambda r: r.node):
            if r.ok and isinstance(r.data, list):
                out.extend(s for s in r.data if isinstance(s, dict))
            elif not r.ok:
                errors[r.node] = str(r.error)
        return self._result("fetch_sockets", out, req, errors, raise_on_missing)

    def _result(self, op: str, items: list[Any], req: PendingRequest, errors: dict[str, str],
                raise_on_missing: bool) -> ClusterResult[Any]:
        result: ClusterResult[Any] = ClusterResult(items, missing=req.missing, errors=errors, elapsed=req.elapsed)
        if raise_on_missing and result.missing:
            raise IncompleteResult(op, result)
        return result

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
        in neither). ``raise_on_missing=True`` raises :class:`IncompleteResult` when some node
        did not answer.
        """
        self._require_listener("server_side_emit")
        req = await self._request("server_side_emit", namespace, {"event": event, "args": list(args)}, timeout)
        acks = []
        errors: dict[str, str] = {}
        for r in sorted(req.replies.values(), key=lambda r: r.node):
            if r.ok:
                acks.append(r.data)
            elif r.error != "no-handler":
                errors[r.node] = str(r.error)
                self._log.warning("server_side_emit %r: node %s failed: %s", event, r.node, r.error)
        return self._result("server_side_emit", acks, req, errors, raise_on_missing)

    def _accept_request(self, env: Envelope) -> None:
        """Serve a request from another node in a task, at most ``max_concurrent_requests`` at
        once; beyond that it is answered ``busy`` at once (counted, logged)."""
        assert self._supervisor is not None
        if self._requests_active >= self.max_concurrent_requests:
            self.metrics.requests_refused += 1
            self._log.warning("request %s from node %s refused: %d requests already being served",
                              env.body.get("op"), env.origin_node, self._requests_active)
            rid = env.body.get("rid")
            if isinstance(rid, str):
                self._put(self._envelope(Kind.RESPONSE, {"rid": rid, "ok": False, "data": None, "error": "busy"},
                                         env.ns, env.origin_node, target_region=env.origin_region))
            return
        self._requests_active += 1
        task = self._supervisor.spawn("request", lambda: self._serve_request(env), restart=False)
        task.add_done_callback(self._request_done)

    def _request_done(self, _: asyncio.Task[Any]) -> None:
        self._requests_active -= 1

    async def _serve_request(self, env: Envelope) -> None:
        b = env.body
        rid, op = b.get("rid"), b.get("op")
        if not isinstance(rid, str):
            return
        ok, data, error = True, None, None
        try:
            if op == "fetch_sockets":
                self._reply_sockets(env, rid, self._local_sockets(env.ns, b.get("room")))
                return
            if op == "server_side_emit":
                handler = self._server_handlers.get((env.ns, str(b.get("event"))))
                if handler is None:
                    ok, error = False, "no-handler"
                else:
                    args = b.get("args") or []
                    data = handler(*args)
                    if inspect.isawaitable(data):
                        data = await data
            else:
                ok, error = False, f"unknown op {op!r}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the handler's error is the reply; the requester logs it
            ok, data, error = False, None, f"{type(exc).__name__}: {exc}"[:500]
        body = {"rid": rid, "ok": ok, "data": data, "error": error}
        try:
            self._put(self._envelope(Kind.RESPONSE, body, env.ns, env.origin_node, target_region=env.origin_region))
        except EnvelopeError as exc:  # unserialisable or too large ack
            self._put(self._envelope(Kind.RESPONSE, {"rid": rid, "ok": False, "data": None, "error": str(exc)},
                                     env.ns, env.origin_node, target_region=env.origin_region))

    def _reply_sockets(self, env: Envelope, rid: str, sockets: list[dict[str, Any]]) -> None:
        per = _SOCKETS_PER_PART
        while True:
            chunks = [sockets[i:i + per] for i in range(0, len(sockets), per)] or [[]]
            envs = [
                self._envelope(Kind.RESPONSE, {"rid": rid, "ok": True, "data": c, "part": i, "parts": len(chunks)},
                               env.ns, env.origin_node, target_region=env.origin_region)
                for i, c in enumerate(chunks)
            ]
            try:
                for e in envs:  # size check before queueing anything
                    if self._outbox is not None:
                        self._outbox.check(e)
            except EnvelopeTooLarge:
                if per == 1:
                    raise
                per = max(1, per // 2)
                continue
            for e in envs:
                self._put(e)
            return

    def _on_response(self, env: Envelope) -> None:
        b = env.body
        rid = b.get("rid")
        if not isinstance(rid, str):
            return
        part, parts = b.get("part", 0), b.get("parts", 1)
        if type(part) is not int or type(parts) is not int or not 0 <= part < parts:
            return
        reply = Reply(env.origin_node, bool(b.get("ok")), b.get("data"), b.get("error"))
        self._requests.deliver(rid, reply, part, parts)
