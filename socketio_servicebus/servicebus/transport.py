"""The Service Bus links of one node: the sender, the receiver, settlement and link health.

:class:`Transport` owns the SDK client and its two links. It never calls into the manager: it
answers through return values (:meth:`Transport.send` returns what the outbox needs), through
what :meth:`Transport.receive` yields (:class:`Burst` of messages, :class:`ReceiverOpened`),
and through :attr:`Transport.link`, its health as two explicit states plus the last error,
which sets :attr:`Transport.changed` on every change.

* sending: one send in flight at a time, under a lock (the SDK sender is not safe for
  concurrent sends, nor for a close during a send); a list of messages that does not fit one
  AMQP batch goes one by one; a message the broker refuses for good is reported, not retried.
  The sender has its own SDK client, so its own AMQP connection: a pending receive holds the
  SDK's connection lock for up to its 0.2 s socket timeout, and a send must never wait behind
  it. A throttled send (server-busy) keeps the link (state ``THROTTLED``).
* receiving: one receive call per prefetched burst; a receiver whose link detached without an
  error (the SDK then spins without suspending) is detected and reopened; reconnects back off.
* settlement (``peek_lock`` only): queued per message with :meth:`Transport.settle` while the
  burst is delivered, sent all at once before the next receive call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.exceptions import MessageSizeExceededError

from socketio_servicebus.errors import EnvelopeError, PartialSendError
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from socketio_servicebus.servicebus.retry import backoff, is_entity_gone, is_fatal, is_throttled
from socketio_servicebus.servicebus.sdk_internals import PrefetchProbe
from socketio_servicebus.servicebus.subscription import (
    NodeSubscriptionSpec,
    check_node_subscription,
    delete_node_subscription,
    ensure_node_subscription,
)
from socketio_servicebus.wire.envelope import AppProperties, Batch

__all__ = [
    "RECEIVE_MODES",
    "Burst",
    "LinkHealth",
    "ReceiverOpened",
    "ReceiverState",
    "SenderState",
    "Transport",
    "message_body",
]

RECEIVE_MODES = {
    "peek_lock": ServiceBusReceiveMode.PEEK_LOCK,
    "receive_and_delete": ServiceBusReceiveMode.RECEIVE_AND_DELETE,
}
#: max_wait_time of one receive call; also the longest a detached SDK link can stall the loop.
RECEIVE_WAIT = 1.0
#: most messages taken from the SDK's prefetch buffer in one receive call
RECEIVE_BATCH = 256
#: Seconds close() waits for the settlement of what was received before closing the link.
CLOSE_SETTLE_TIMEOUT = 5.0


class SenderState(enum.Enum):
    CLOSED = "closed"  # not opened yet, or closed
    UP = "up"  # opened, the last send worked
    FAILED = "failed"  # the last open or send failed (``LinkHealth.error`` says why)
    THROTTLED = "throttled"  # the link is up; the namespace refused the last send (out of credits)


class ReceiverState(enum.Enum):
    CLOSED = "closed"  # not opened yet, or closed
    UP = "up"  # receiving from the subscription
    FAILED = "failed"  # the link failed; the subscription is still there; reconnecting
    GONE = "gone"  # the subscription (or topic) is gone; recreating it on reconnect


@dataclass(slots=True)
class LinkHealth:
    """The links' health: one state per link and the last error of either."""

    sender: SenderState = SenderState.CLOSED
    receiver: ReceiverState = ReceiverState.CLOSED
    error: str | None = None

    @property
    def subscription_ready(self) -> bool:
        return self.receiver in (ReceiverState.UP, ReceiverState.FAILED)


@dataclass(slots=True)
class ReceiverOpened:
    """Yielded by :meth:`Transport.receive` each time the receiver (re)opens."""

    reconnected: bool


@dataclass(slots=True)
class Burst:
    """Messages of one receive call; they are settled when the consumer asks for the next item."""

    messages: list[Any]


class _ReceiverStalled(Exception):
    """The SDK receiver stopped doing I/O (its link detached without an error)."""


def message_body(msg: Any) -> bytes:
    """The data body of a received message; :class:`EnvelopeError` for an AMQP value/sequence."""
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


class Transport:
    def __init__(
        self,
        *,
        conn: Mapping[str, Any],
        client_options: Mapping[str, Any],
        admin_options: Mapping[str, Any],
        topic: str,
        subscription_name: str,
        spec: NodeSubscriptionSpec,
        owns_subscription: bool,
        receive_mode: str,
        prefetch_count: int,
        backoff_initial: float,
        backoff_max: float,
        metrics: ManagerMetrics,
        logger: logging.Logger,
    ) -> None:
        self._conn = dict(conn)
        self.client_options = dict(client_options)
        self.admin_options = dict(admin_options)
        self.topic = topic
        self.subscription_name = subscription_name
        self.spec = spec
        self.owns_subscription = owns_subscription
        self.receive_mode = receive_mode
        self.prefetch_count = prefetch_count
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.metrics = metrics
        self.log = logger
        self.link = LinkHealth()
        #: set on every change of :attr:`link`; whoever waits clears it
        self.changed = asyncio.Event()
        #: set once closing begins: the receive loop ends after its burst, backoff waits end
        self.closing = asyncio.Event()
        self.prefetched = PrefetchProbe(metrics, logger, RECEIVE_BATCH)
        self.client: Any = None
        #: the sender's own client (its own AMQP connection, see the module docstring)
        self.send_client: Any = None
        self.sender: Any = None
        self.receiver: Any = None
        self._sender_lock = asyncio.Lock()
        self.subscription_created = False
        #: settlements of the burst being delivered; sent between receive calls (see settle_burst)
        self.to_settle: list[tuple[Any, Any, str, str, str]] = []
        #: trust zones: application properties proving a message's origin (``BusGuard.sign``)
        self.signer: Callable[[Batch, bytes], Mapping[str, str]] | None = None

    # ------------------------------------------------------------------ health
    def _set(self, *, sender: SenderState | None = None, receiver: ReceiverState | None = None,
             error: BaseException | None = None) -> None:
        if sender is not None:
            self.link.sender = sender
        if receiver is not None:
            self.link.receiver = receiver
        if error is not None:
            self.link.error = f"{type(error).__name__}: {error}"[:500]
        self.changed.set()

    def open(self) -> None:
        """Build the SDK client (no I/O yet); raises for settings that cannot work. Called on
        the event loop the links will run on (the events and the lock belong to it)."""
        self.client = servicebus_client(**self._conn, **self.client_options)
        self.send_client = servicebus_client(**self._conn, **self.client_options)
        self.changed, self.closing, self._sender_lock = asyncio.Event(), asyncio.Event(), asyncio.Lock()

    def admin(self) -> Any:
        return admin_client(**self._conn, **self.admin_options)

    # ------------------------------------------------------------------ sending
    async def _open_sender_locked(self) -> Any:
        if self.sender is None:
            sender = self.send_client.get_topic_sender(self.topic)
            try:
                await sender.__aenter__()
            except BaseException:
                await self._close_link(sender, "sender")
                raise
            self.sender = sender
        return self.sender

    async def _close_link(self, link: Any, what: str) -> None:
        try:
            await link.close()
        except Exception as exc:  # noqa: BLE001 - a link being dropped anyway; logged
            self.log.warning("servicebus: closing the %s failed: %s: %s", what, type(exc).__name__, exc)

    async def _close_sender_locked(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            await self._close_link(sender, "sender")

    async def close_sender(self) -> None:
        """Close the sender; waits for a send in flight (both hold the sender lock)."""
        async with self._sender_lock:
            await self._close_sender_locked()

    async def warm_sender(self) -> None:
        """Open the sender before the first emit (it costs ~0.5 s); retries until it opens."""
        delays = backoff(self.backoff_initial, self.backoff_max)
        while not self.closing.is_set():
            try:
                async with self._sender_lock:
                    await self._open_sender_locked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported through link health; the outbox retries too
                self._set(sender=SenderState.FAILED, error=exc)
                self.log.warning("servicebus sender for %s not open (%s); retrying", self.topic, self.link.error)
                await asyncio.sleep(next(delays))
                continue
            if self.link.sender is not SenderState.UP:
                self._set(sender=SenderState.UP)
            return

    async def send(self, messages: list[tuple[Batch, bytes]]) -> list[str | None] | None:
        """The outbox's transport (see :mod:`socketio_servicebus.manager.outbox` for the contract)."""
        try:
            result = await self._send(messages)
        except PartialSendError as exc:
            self._set(sender=SenderState.THROTTLED if is_throttled(exc.cause) else SenderState.FAILED,
                      error=exc.cause)
            raise
        except Exception as exc:
            self._set(sender=SenderState.THROTTLED if is_throttled(exc) else SenderState.FAILED, error=exc)
            raise
        if self.link.sender is not SenderState.UP:
            self._set(sender=SenderState.UP)
        return result

    def _properties(self, batch: Batch, body: bytes) -> AppProperties:
        props = batch.application_properties()
        if self.signer is not None:  # trust zones: the proof of origin (socketio_servicebus.zones)
            props.update(self.signer(batch, body))
        return props

    async def _send(self, messages: list[tuple[Batch, bytes]]) -> list[str | None] | None:
        sb = [
            ServiceBusMessage(body, application_properties=self._properties(batch, body),
                              message_id=batch.envelopes[0].id, content_type="application/json")
            for batch, body in messages
        ]
        async with self._sender_lock:  # held for the whole send: nobody closes the link under it
            sender = await self._open_sender_locked()
            if len(sb) > 1:
                try:
                    await sender.send_messages(sb)
                    return None
                except (MessageSizeExceededError, ValueError):
                    pass  # the list did not fit in one AMQP batch (nothing was sent): one by one
                except Exception as exc:
                    if not is_throttled(exc):
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
                    if not is_throttled(exc):
                        await self._close_sender_locked()
                    if not done:
                        raise
                    raise PartialSendError(done, exc) from exc
                else:
                    done.append(None)
            return done

    # ------------------------------------------------------------------ receiving
    async def _open_receiver(self) -> Any:
        if self.owns_subscription:
            async with self.admin() as admin:
                created = await ensure_node_subscription(admin, self.spec)
            if created and self.subscription_created:
                self.metrics.subscription_recreated += 1
                self.log.warning("subscription %s was gone; recreated it", self.subscription_name)
            self.subscription_created = True
        receiver = self.client.get_subscription_receiver(
            self.topic, self.subscription_name,
            receive_mode=RECEIVE_MODES[self.receive_mode], prefetch_count=self.prefetch_count,
        )
        try:
            await receiver.__aenter__()
        except BaseException:
            await self._close_link(receiver, "receiver")
            raise
        self.receiver = receiver
        self._set(receiver=ReceiverState.UP)
        return receiver

    async def close_receiver(self) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        if self.receive_mode == "receive_and_delete":
            # the broker deleted these when it transferred them: closing the link loses them
            lost = self.prefetched(receiver, capped=False)
            if lost:
                self.metrics.prefetch_dropped += lost
                self.log.warning("servicebus: %d prefetched message(s) on %s dropped with the closed "
                                 "receiver (receive_and_delete)", lost, self.subscription_name)
        await self._close_link(receiver, "receiver")

    async def receive(self) -> AsyncIterator[ReceiverOpened | Burst]:
        """Yield :class:`ReceiverOpened` on each (re)open, then a :class:`Burst` per receive call,
        until :attr:`closing` is set (then it ends after settling the last burst).

        A burst is settled when the consumer asks for the next item, so settlement never
        delays delivery. Link failures are logged, reported in :attr:`link`, and reconnected
        with backoff.
        """
        if self.receiver is not None:  # restarted after the previous run died: its link first
            if self.to_settle:
                await self.settle_burst()
            await self.close_receiver()
        delays = None
        while not self.closing.is_set():
            try:
                receiver = await self._open_receiver()
                yield ReceiverOpened(reconnected=delays is not None)
                if delays is not None:
                    self.log.info("servicebus receiver for %s reconnected", self.subscription_name)
                delays = None
                loop = asyncio.get_running_loop()
                while True:
                    # The SDK's receive loop busy-waits without ever suspending when its link
                    # is no longer attached (pyamqp do_work returns at once); detect a call
                    # that never yielded to the event loop and reconnect instead of spinning.
                    ticks = [0]
                    handle = loop.call_soon(ticks.__setitem__, 0, 1)
                    # one SDK call per prefetched burst instead of one per message
                    msgs = await receiver.receive_messages(max_message_count=max(1, self.prefetched(receiver)),
                                                           max_wait_time=RECEIVE_WAIT)
                    handle.cancel()
                    if not msgs and not ticks[0]:
                        self.metrics.receiver_stalls += 1
                        raise _ReceiverStalled("receiver link is no longer attached")
                    if msgs:
                        yield Burst(msgs)
                    if self.to_settle:
                        await self.settle_burst()
                    if self.closing.is_set():
                        return  # close() began: stop after this burst
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged below; the listener reconnects
                if self.closing.is_set():
                    return
                await self._receiver_failed(exc)
                if delays is None:
                    delays = backoff(self.backoff_initial, self.backoff_max)
                delay = next(delays)
                log = self.log.error if is_fatal(exc) else self.log.warning
                log("servicebus receiver for %s failed (%s); retrying in %.1fs",
                    self.subscription_name, self.link.error, delay)
                try:  # close() cuts the wait short
                    await asyncio.wait_for(self.closing.wait(), delay)
                except TimeoutError:
                    pass

    async def _receiver_failed(self, exc: Exception) -> None:
        gone = is_entity_gone(exc)
        self._set(receiver=ReceiverState.GONE if gone else ReceiverState.FAILED, error=exc)
        if gone:
            # the topic may be gone (and recreated) too: a sender link that outlived it
            # would not be detached by every broker, so open a fresh one
            await self.close_sender()
        self.metrics.reconnects += 1
        if self.to_settle:
            self.log.warning("servicebus: %d settlement(s) of %s lost with its link; those "
                             "messages will be redelivered", len(self.to_settle), self.subscription_name)
            self.metrics.settle_errors += len(self.to_settle)
            self.to_settle = []
        await self.close_receiver()

    # ------------------------------------------------------------------ settlement
    def settle(self, msg: Any, op: str, reason: str = "", description: str = "") -> None:
        """Queue ``complete``, ``abandon`` or ``dead_letter`` of ``msg`` (nothing with receive_and_delete)."""
        if self.receive_mode == "receive_and_delete":
            return
        self.to_settle.append((self.receiver, msg, op, reason, description))

    def poison(self, msg: Any, exc: EnvelopeError) -> None:
        """``msg`` is not a batch: counted, logged, dead-lettered (with peek_lock)."""
        self.metrics.poison_received += 1
        self.log.warning("servicebus: poison message %s on %s: %s%s", msg.message_id, self.subscription_name, exc,
                         " (receive_and_delete: dropped, cannot be dead-lettered)"
                         if self.receive_mode == "receive_and_delete" else " (dead-lettered)")
        self.settle(msg, "dead_letter", exc.reason, exc.description)

    def failed(self, msg: Any) -> None:
        """Handling ``msg`` raised (call from the ``except``): counted, logged with the traceback,
        abandoned for redelivery (with peek_lock)."""
        self.metrics.processing_failures += 1
        self.log.exception(
            "servicebus: failed to process message %s; %s", msg.message_id,
            "dropped (receive_and_delete: the broker already deleted it)"
            if self.receive_mode == "receive_and_delete" else "abandoning it for redelivery")
        self.settle(msg, "abandon")

    async def settle_burst(self) -> None:
        """Settle the burst just delivered, all at once, before the next receive call.

        Clients already have these messages: settlement never delays delivery. It runs between
        receive calls rather than beside them because the SDK serves a receive call and a
        concurrent settlement on the same link badly: the receive then waits for the SDK's
        0.2 s socket timeout (measured: send-to-receive median 85 ms at 25 msgs/s, against
        1.6 ms when settling between receives).

        Failures are counted (``settle_errors``) and logged at warning once per burst. If
        cancelled, what it had not settled yet goes back to :attr:`to_settle` for close().
        """
        items, self.to_settle = self.to_settle, []
        failed: list[tuple[str, BaseException]] = []
        for start in range(0, len(items), 64):
            chunk = items[start : start + 64]
            try:
                results = await asyncio.gather(*(self.settle_one(*it) for it in chunk), return_exceptions=True)
            except asyncio.CancelledError:
                self.to_settle = items[start:] + self.to_settle
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
            self.log.warning("servicebus: %d settlement(s) on %s failed (first: %s: %s: %s); those messages "
                             "will be redelivered", len(failed), self.subscription_name, what,
                             type(exc).__name__, exc)

    @staticmethod
    async def settle_one(receiver: Any, msg: Any, op: str, reason: str, description: str) -> None:
        if op == "complete":
            await receiver.complete_message(msg)
        elif op == "abandon":
            await receiver.abandon_message(msg)
        else:
            await receiver.dead_letter_message(msg, reason=reason, error_description=description[:1000])

    async def settle_rest(self) -> None:
        """Settle what is still unsettled (close(), after the receive loop ended)."""
        if not self.to_settle:
            return
        try:
            await asyncio.wait_for(self.settle_burst(), CLOSE_SETTLE_TIMEOUT)
        except TimeoutError:
            self.log.warning("close: settling %d received message(s) timed out; they will be "
                             "redelivered", len(self.to_settle))

    # ------------------------------------------------------------------ subscription
    async def watch_subscription(self, interval: float) -> None:
        """Every ``interval`` s, re-assert the own subscription's rule.

        A rule deleted or replaced from outside (portal, script, a ``$Default`` TrueFilter
        added) would otherwise silently stop delivery, or deliver other nodes' replies here,
        until the node restarts.
        """
        while True:
            await asyncio.sleep(interval)
            if not self.link.subscription_ready or self.closing.is_set():
                continue
            try:
                async with self.admin() as admin:
                    repaired = await asyncio.wait_for(check_node_subscription(admin, self.spec), 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and logged; checked again next interval
                self.metrics.subscription_check_errors += 1
                self.log.warning("subscription check of %s failed (%s: %s); retrying in %.0fs",
                                 self.subscription_name, type(exc).__name__, exc, interval)
                continue
            if repaired:
                self.metrics.subscription_repaired += 1
                self.log.warning("subscription %s: its rules were changed from outside; restored rule %s",
                                 self.subscription_name, self.spec.rule)

    async def _delete_own_subscription(self) -> None:
        if not (self.owns_subscription and self.subscription_created):
            return
        try:
            async with self.admin() as admin:
                await asyncio.wait_for(delete_node_subscription(admin, self.spec), 10.0)
        except Exception as exc:  # noqa: BLE001 - logged; closing goes on
            self.log.warning("could not delete subscription %s: %s (AutoDeleteOnIdle will)",
                             self.subscription_name, exc)

    async def close(self) -> None:
        """Close both links, delete the own subscription (if created here), close the client."""
        # SDK link closes take ~0.5-1 s each (keep-alive task): run them side by side
        await asyncio.gather(self.close_receiver(), self.close_sender(), self._delete_own_subscription())
        for client in (self.client, self.send_client):
            if client is None:
                continue
            try:
                await client.close()
            except Exception as exc:  # noqa: BLE001 - closing anyway; said in the log
                self.log.warning("close: SDK client close failed: %s: %s", type(exc).__name__, exc)
        self._set(sender=SenderState.CLOSED, receiver=ReceiverState.CLOSED)
