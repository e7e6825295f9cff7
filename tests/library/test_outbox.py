"""Outbox accounting with a scripted transport (plain asyncio, no I/O): every envelope is
published, refused with a reason, or still buffered; a failing ``run()`` ends loudly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from socketio_servicebus import Batch, Envelope, Kind
from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.manager.outbox import Outbox, PartialSendError


def env(ns: str, size: int = 10) -> Envelope:
    return Envelope(kind=Kind.EMIT, origin_node="n", origin_region="r", ns=ns,
                    body={"method": "emit", "event": "e", "data": ["x" * size], "namespace": ns})


def outbox(send: object, metrics: ManagerMetrics) -> Outbox:
    return Outbox(send, body_limit=200_000, max_items=100, metrics=metrics,  # type: ignore[arg-type]
                  logger=logging.getLogger("test.outbox"), backoff_initial=0.01, backoff_max=0.02)


async def test_refused_message_drops_only_its_envelopes(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ManagerMetrics()
    sent: list[list[str]] = []

    async def send(messages: list[tuple[Batch, bytes]]) -> list[str | None]:
        sent.append([b.envelopes[0].ns for b, _ in messages])
        return [None if b.envelopes[0].ns != "/big" else "MessageSizeExceededError: too large" for b, _ in messages]

    box = outbox(send, metrics)
    for ns in ("/a", "/big", "/big", "/c"):  # three messages: /a, /big (2 envelopes), /c
        box.put(env(ns))
    task = asyncio.ensure_future(box.run())
    try:
        assert await box.flush(2)
    finally:
        task.cancel()
    assert sent == [["/a", "/big", "/c"]]
    assert metrics.send_dropped == 2
    assert metrics.envelopes_published == 2 and metrics.messages_published == 2
    assert len(box) == 0
    assert any("MessageSizeExceededError" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_partial_send_keeps_and_retries_only_the_unsent() -> None:
    metrics = ManagerMetrics()
    calls: list[list[str]] = []

    async def send(messages: list[tuple[Batch, bytes]]) -> None:
        calls.append([b.envelopes[0].ns for b, _ in messages])
        if len(calls) == 1:
            raise PartialSendError([None], ConnectionError("link lost"))

    box = outbox(send, metrics)
    for ns in ("/a", "/b", "/c"):
        box.put(env(ns))
    task = asyncio.ensure_future(box.run())
    try:
        assert await box.flush(2)
    finally:
        task.cancel()
    assert calls == [["/a", "/b", "/c"], ["/b", "/c"]]  # /a was sent once, not twice
    assert metrics.envelopes_published == 3 and metrics.publish_errors == 1 and metrics.send_dropped == 0


async def test_a_failing_take_ends_run_with_the_error_and_keeps_the_envelopes() -> None:
    metrics = ManagerMetrics()

    async def send(messages: list[tuple[Batch, bytes]]) -> None:
        raise AssertionError("not reached")

    box = outbox(send, metrics)
    box.put(env("/a"))

    def broken() -> list[tuple[Batch, bytes, int]]:
        raise RuntimeError("take bug")

    box._take = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="take bug"):
        await asyncio.wait_for(box.run(), 2)
    assert len(box) == 1 and box._inflight == 0


# -- throttling and the latency bound -----------------------------------------------------------
def _bounded(send: object, metrics: ManagerMetrics, max_delay: float) -> Outbox:
    return Outbox(send, body_limit=200_000, max_items=10_000, metrics=metrics,  # type: ignore[arg-type]
                  logger=logging.getLogger("test.outbox"), backoff_initial=0.01, backoff_max=0.02,
                  max_delay=max_delay)


async def test_throttled_sends_wait_as_told_and_resend_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.servicebus.exceptions import ServiceBusServerBusyError

    from socketio_servicebus.manager import outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "THROTTLE_WAIT", 0.05)
    metrics = ManagerMetrics()
    calls: list[list[str]] = []
    throttled_seen: list[int] = []

    async def send(messages: list[tuple[Batch, bytes]]) -> None:
        calls.append([e.ns for b, _ in messages for e in b.envelopes])
        throttled_seen.append(metrics.throttled)
        if len(calls) <= 2:
            raise ServiceBusServerBusyError(message="The request was terminated because the entity is being "
                                                    "throttled. Error code : 50009. Please wait 2 seconds and try again.")

    box = outbox(send, metrics)
    for ns in ("/a", "/b", "/c"):
        box.put(env(ns))
    task = asyncio.ensure_future(box.run())
    try:
        assert await box.flush(5)
    finally:
        task.cancel()
    assert calls == [["/a", "/b", "/c"]] * 3  # the same envelopes, in the same order, sent once in the end
    assert throttled_seen == [0, 1, 1] and metrics.throttled == 0, metrics
    assert metrics.sends_throttled == 2 and metrics.publish_errors == 0  # throttling is no outage
    assert metrics.envelopes_published == 3


async def test_latency_is_bounded_and_what_cannot_be_kept_is_counted() -> None:
    """A broker that takes 0.1 s per send of ~2 KB and emitters far faster: emits wait
    (backpressure), no envelope is sent older than max_delay, and accepted = published + counted
    drops."""
    metrics = ManagerMetrics()
    ages: list[float] = []

    async def send(messages: list[tuple[Batch, bytes]]) -> None:
        ages.append(asyncio.get_running_loop().time() - box._items[0].t)  # the oldest in flight
        await asyncio.sleep(0.1)

    box = Outbox(send, body_limit=2000, max_items=10_000, metrics=metrics,  # type: ignore[arg-type]
                 logger=logging.getLogger("test.outbox"), max_delay=0.3)
    task = asyncio.ensure_future(box.run())
    accepted = refused = 0
    try:
        t_end = asyncio.get_running_loop().time() + 1.5
        while asyncio.get_running_loop().time() < t_end:
            if await box.admit():
                box.put(env("/x"))
                accepted += 1
            else:
                refused += 1
            await asyncio.sleep(0.001)
        assert await box.flush(5)
    finally:
        task.cancel()
    assert refused == metrics.backpressure_dropped
    assert accepted == metrics.envelopes_published + metrics.expired_dropped
    assert metrics.backpressure_dropped + metrics.expired_dropped > 0  # the load was beyond the broker
    assert max(ages) <= 0.3 + 0.02  # sent within the bound (plus a loop turn)


async def test_an_outage_buffer_is_sent_not_expired() -> None:
    """The bound applies while the broker is reachable: what an outage buffered goes out after it."""
    metrics = ManagerMetrics()
    failing = [True]

    async def send(messages: list[tuple[Batch, bytes]]) -> None:
        if failing[0]:
            raise ConnectionError("broker down")

    box = _bounded(send, metrics, max_delay=0.05)
    task = asyncio.ensure_future(box.run())
    try:
        for ns in ("/a", "/b", "/c"):
            assert await box.admit()
            box.put(env(ns))
        await asyncio.sleep(0.3)  # six times max_delay in the outage
        assert await box.admit()  # no backpressure during an outage
        failing[0] = False
        box.retry_now()
        assert await box.flush(5)
    finally:
        task.cancel()
    assert metrics.envelopes_published == 3 and metrics.expired_dropped == 0
