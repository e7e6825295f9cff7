"""Adaptive outbound batching over a bounded buffer.

:class:`Outbox` takes envelopes one by one (:meth:`Outbox.put`, synchronous, raises
:class:`~socketio_servicebus.wire.envelope.EnvelopeTooLarge` at once) and one sender task drains it:

* idle: the first envelope leaves immediately (no timer, no added latency);
* busy: while a send is in flight new envelopes accumulate and leave together in the next
  message(s), each at most ``body_limit`` bytes and homogeneous in
  :func:`~socketio_servicebus.wire.envelope.batch_key` (consecutive runs only, so the send order is kept);
* sustained high rate or saturated link: the oldest waiting envelope may also wait a window
  that adapts to the observed rate, at most ``linger`` seconds
  (:class:`~socketio_servicebus.manager.linger.Linger`: 0 below ~800 envelopes/s unless sends
  were in flight 80 % of the time, else about 12 envelopes per message);
* outage: a failed send leaves its envelopes at the head; the task retries with backoff while
  the buffer keeps at most ``max_items`` envelopes, dropping the oldest waiting one on overflow
  (counted, and logged at most once per ``drop_log_interval`` seconds).
* throttled (the namespace is out of credits, ``ServiceBusServerBusyError``): the envelopes
  stay at the head, in order, and the task waits the 2 s Service Bus asks for, then resends
  (``sends_throttled``, gauge ``throttled``).
* saturated or throttled, i.e. the broker is reachable but the buffer does not drain: latency
  is held to ``max_delay``. Emitters wait (:meth:`Outbox.admit`) while the oldest waiting
  envelope is older than half of it, for at most as long again; then their envelope is dropped
  (``backpressure_dropped``). A waiting envelope older than ``max_delay`` is dropped
  (``expired_dropped``). Both are logged at most once per ``drop_log_interval``. A send in
  flight for longer than ``max_delay`` counts as an outage too (the SDK retrying inside one
  call); ages count from the end of the last outage, so what an outage buffered is still sent
  once it ends.

The transport is a coroutine ``send(messages)`` taking ``[(Batch, body_bytes), ...]``. It
returns ``None`` when it sent all of them, or one entry per message: ``None`` (sent) or the
reason the broker refused it for good (those envelopes are dropped: counted in
``send_dropped`` and logged). It raises :class:`PartialSendError` when it finished only the
first messages before a transport failure, and any other exception when it sent nothing; the
unfinished envelopes stay at the head and are retried with backoff.

:meth:`Outbox.run` ends only by cancellation or by a bug; its owner supervises it (the
buffered envelopes stay in the object, so a new ``run()`` carries on with them).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from socketio_servicebus.errors import PartialSendError
from socketio_servicebus.manager.linger import Linger
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.retry import THROTTLE_WAIT, backoff, is_throttled
from socketio_servicebus.wire.envelope import (
    ENVELOPE_SEPARATOR_BYTES,
    MAX_ENVELOPES,
    Batch,
    BatchKey,
    Envelope,
    EnvelopeTooLarge,
    assemble_batch,
    batch_key,
    batch_overhead,
    encode_envelope,
)

__all__ = ["Outbox", "PartialSendError", "SendFn", "SendState", "fit"]

#: ``None``: all sent; else per message ``None`` (sent) or why it was refused for good.
SendResult = list[str | None] | None
SendFn = Callable[[list[tuple[Batch, bytes]]], Awaitable[SendResult]]


#: Bytes of body budget reserved per extra message when several go out in one AMQP transfer.
_PER_MESSAGE_RESERVE = 512


class SendState(enum.Enum):
    FLOWING = "flowing"  # the last send went through (or none yet)
    THROTTLED = "throttled"  # the namespace refused the last send: out of credits
    FAILING = "failing"  # the last send failed otherwise: an outage, backing off


@dataclass(slots=True)
class _Item:
    env: Envelope
    key: BatchKey
    data: bytes
    t: float  # monotonic time it was queued


def fit(env: Envelope, body_limit: int) -> bytes:
    """Encode ``env``; raises :class:`EnvelopeTooLarge` if it needs a message body over ``body_limit``."""
    data = encode_envelope(env)
    total = batch_overhead(0, (env.origin_region,)) + len(data)
    if total > body_limit:
        raise EnvelopeTooLarge(
            f"envelope {env.id} ({env.kind.value}) needs a {total}-byte message > limit {body_limit}",
            total,
            body_limit,
        )
    return data


class Outbox:
    def __init__(
        self,
        send: SendFn,
        *,
        body_limit: int,
        max_items: int,
        metrics: ManagerMetrics,
        logger: logging.Logger,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        drop_log_interval: float = 10.0,
        linger: float = 0.0,
        max_delay: float = 0.0,
    ) -> None:
        self._send = send
        #: adaptive batch window, at most ``linger`` seconds (0: never wait for companions)
        self.linger = Linger(linger)
        self.body_limit = body_limit
        self.max_items = max(1, max_items)
        self.metrics = metrics
        self.logger = logger
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.drop_log_interval = drop_log_interval
        self._items: deque[_Item] = deque()
        self._inflight = 0  # items at the head of _items currently being sent
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropped_since_log = 0
        self._last_drop_log = 0.0
        self._retry_now = asyncio.Event()
        #: latency bound while the broker is reachable (0: none), see the module docstring
        self.max_delay = max_delay
        self.state = SendState.FLOWING
        #: when the last outage ended: ages count from here
        self._epoch = 0.0
        #: set whenever envelopes leave the head (sent, refused or dropped)
        self._drained = asyncio.Event()
        self._last_state_log = 0.0
        #: when the send in flight started (None: none in flight)
        self._send_started: float | None = None
        #: envelopes queued since the start (credit-aware batching reads the rate from it)
        self.queued_total = 0

    # ------------------------------------------------------------------ producer side
    def check(self, env: Envelope) -> bytes:
        """Encode ``env``; raises :class:`EnvelopeTooLarge` if it can never fit in one message."""
        return fit(env, self.body_limit)

    def put(self, env: Envelope) -> None:
        """Queue ``env``; raises :class:`EnvelopeTooLarge` if it can never fit in one message."""
        data = self.check(env)
        if len(self._items) >= self.max_items and not self._drop_oldest_waiting():
            return
        now = time.monotonic()
        self.linger.arrived(now)
        self._items.append(_Item(env, batch_key(env), data, now))
        self.queued_total += 1
        self.metrics.buffer_depth = len(self._items)
        self._idle.clear()
        self._wakeup.set()

    def _drop_oldest_waiting(self) -> bool:
        """Make room; ``False`` when the newcomer itself is the one dropped."""
        room = self._inflight < len(self._items)
        if room:
            del self._items[self._inflight]
        # else: everything buffered is in flight, so the newcomer is dropped instead
        self.metrics.buffer_dropped += 1
        self._dropped_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= self.drop_log_interval:
            self.logger.warning(
                "servicebus outbound buffer full (%d envelopes): dropped %d oldest envelope(s) since last warning",
                self.max_items, self._dropped_since_log,
            )
            self._dropped_since_log = 0
            self._last_drop_log = now
        return room

    def __len__(self) -> int:
        return len(self._items)

    def _head_age(self, now: float) -> float:
        """Age of the oldest envelope not in flight, counted from the end of the last outage."""
        if len(self._items) <= self._inflight:
            return 0.0
        return now - max(self._items[self._inflight].t, self._epoch)

    async def admit(self) -> bool:
        """Backpressure for emitters: wait while the buffer is older than half of ``max_delay``
        (the broker reachable but not keeping up), at most that long; ``False`` (the envelope
        is to be dropped, counted here) if it still is. ``True`` at once otherwise, and always
        during an outage (the buffer then holds what it can)."""
        if self.max_delay <= 0 or not self._reachable():
            return True
        high = self.max_delay / 2
        if self._head_age(time.monotonic()) < high:
            return True
        deadline = time.monotonic() + high
        while self._reachable() and self._head_age(time.monotonic()) >= high:
            left = deadline - time.monotonic()
            if left <= 0:
                self.metrics.backpressure_dropped += 1
                self._log_drop("emit dropped: the outbound buffer stayed older than %.1fs "
                               "(broker saturated or throttled)", high)
                return False
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), left)
            except TimeoutError:
                pass
        return True

    def _reachable(self) -> bool:
        """The broker answers (flowing or throttled), as opposed to an outage (failed sends, or
        a send in flight for longer than ``max_delay``)."""
        if self.state is SendState.FAILING:
            return False
        started = self._send_started
        return started is None or time.monotonic() - started <= self.max_delay

    def _expire(self, now: float) -> None:
        """Drop waiting envelopes older than ``max_delay`` (not during an outage)."""
        if self.max_delay <= 0 or not self._reachable():
            return
        dropped = 0
        while len(self._items) > self._inflight and self._head_age(now) > self.max_delay:
            del self._items[self._inflight]
            dropped += 1
        if dropped:
            self.metrics.expired_dropped += dropped
            self.metrics.buffer_depth = len(self._items)
            self._drained.set()
            self._log_drop(f"{dropped} envelope(s) dropped: waited over %.1fs (broker saturated or throttled)",
                           self.max_delay)

    def _log_drop(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_state_log >= self.drop_log_interval:
            self._last_state_log = now
            self.logger.warning("servicebus outbox: " + msg + " (counted; logged once per %.0fs)",
                                *args, self.drop_log_interval)

    def retry_now(self) -> None:
        """Cut a backoff wait short (e.g. the receiver just reconnected)."""
        self._retry_now.set()

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - public API
        """Wait until everything queued so far is sent; ``False`` on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - close() bounds its wait
        """At close: :meth:`flush` for at most ``timeout`` seconds; what is still queued then is
        lost. Returns how many envelopes, counted in ``close_dropped``."""
        if await self.flush(timeout):
            return 0
        lost = len(self)
        self.metrics.close_dropped += lost
        return lost

    # ------------------------------------------------------------------ sender task
    def _take(self) -> list[tuple[Batch, bytes, int]]:
        """Next message(s) from the head: consecutive same-key runs, size-bounded."""
        out: list[tuple[Batch, bytes, int]] = []
        budget = self.body_limit
        i, n = 0, len(self._items)
        while i < n:
            head = self._items[i]
            region = head.env.origin_region
            overhead = batch_overhead(0, (region,))
            size = overhead - ENVELOPE_SEPARATOR_BYTES
            limit = budget if not out else budget - _PER_MESSAGE_RESERVE
            if overhead + len(head.data) > limit:
                break
            envs: list[Envelope] = []
            datas: list[bytes] = []
            while i < n and len(envs) < MAX_ENVELOPES:
                it = self._items[i]
                add = len(it.data) + ENVELOPE_SEPARATOR_BYTES
                if it.key != head.key or size + add > limit:
                    break
                envs.append(it.env)
                datas.append(it.data)
                size += add
                i += 1
            body = assemble_batch(datas, hops=0, visited=(region,))
            out.append((Batch(tuple(envs), 0, (region,)), body, len(envs)))
            budget -= len(body) + _PER_MESSAGE_RESERVE
            if budget <= overhead:
                break
        return out

    async def run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            if not self._items:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._expire(time.monotonic())
            if not self._items:
                continue
            if self.linger.budget > 0.0:
                # at a high sustained rate the oldest envelope waits a little for companions
                # (fewer Service Bus messages per emit, less CPU); otherwise it leaves at once
                gap = self.linger.wait(time.monotonic(), self._items[0].t, len(self._items))
                if gap > 0.0:
                    await asyncio.sleep(gap)
            messages: list[tuple[Batch, bytes, int]] = []
            started = time.monotonic()
            try:
                messages = self._take()
                if not messages:
                    raise RuntimeError(f"outbox: head envelope {self._items[0].env.id} fits in no message")
                self._inflight = sum(c for _, _, c in messages)
                self._send_started = started
                result = await self._send([(b, body) for b, body, _ in messages])
            except asyncio.CancelledError:
                self._inflight = 0
                self._send_started = None
                raise
            except Exception as exc:  # noqa: BLE001 - transport trouble: keep the envelopes, back off, retry
                self._inflight = 0
                self._send_started = None
                if not messages:
                    raise  # _take() failed: a bug, not the transport; run() ends and its owner reports it
                if isinstance(exc, PartialSendError):
                    self._finish(messages, exc.done)
                    exc = exc.cause if isinstance(exc.cause, Exception) else exc
                if is_throttled(exc):
                    # wait as told and resend in order; the link stays up (not an outage)
                    self.state = SendState.THROTTLED
                    self.metrics.sends_throttled += 1
                    self.metrics.throttled = 1
                    self._log_drop("namespace throttled (%s); %d envelope(s) buffered, resending in %.1fs",
                                   str(exc)[:200], len(self._items), THROTTLE_WAIT)
                    await asyncio.sleep(THROTTLE_WAIT)
                    continue
                if self.state is not SendState.FAILING:
                    self.state = SendState.FAILING
                self.metrics.publish_errors += 1
                if delays is None:
                    delays = backoff(self.backoff_initial, self.backoff_max)
                delay = next(delays)
                self.logger.warning(
                    "servicebus send failed (%s: %s); %d envelope(s) buffered, retrying in %.1fs",
                    type(exc).__name__, str(exc)[:200], len(self._items), delay,
                )
                self._retry_now.clear()
                try:
                    await asyncio.wait_for(self._retry_now.wait(), delay)
                except TimeoutError:
                    pass
                continue
            delays = None
            self._send_started = None
            if self.state is SendState.FAILING or time.monotonic() - started > self.max_delay:
                self._epoch = time.monotonic()  # the outage is over: what it buffered starts its clock now
            self.state = SendState.FLOWING
            self.metrics.throttled = 0
            self.linger.sent(started, time.monotonic())
            self._inflight = 0
            self._finish(messages, result if result is not None else [None] * len(messages))

    def _finish(self, messages: list[tuple[Batch, bytes, int]], done: list[str | None]) -> None:
        """Take the envelopes of the first ``len(done)`` messages off the head: published, or
        refused for good (dropped, counted and logged with the reason)."""
        for (batch, _, count), refused in zip(messages, done, strict=False):
            for _ in range(count):
                self._items.popleft()
            if refused is None:
                self.metrics.observe_batch(count)
            else:
                self.metrics.send_dropped += count
                self.logger.error("servicebus refused a message of %d envelope(s) (first %s): %s; dropped",
                                  count, batch.envelopes[0].id, refused)
        self.metrics.buffer_depth = len(self._items)
        self._drained.set()
