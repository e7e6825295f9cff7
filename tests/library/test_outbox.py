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
