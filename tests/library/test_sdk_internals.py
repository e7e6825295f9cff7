# ruff: noqa: F811
"""The azure-servicebus private attributes the manager reads, pinned against the installed SDK.

If an SDK upgrade moves ``receiver._handler._received_messages`` (pyamqp's prefetch buffer, a
``queue.Queue``; checked with azure-servicebus 7.15), :func:`test_prefetch_buffer_is_where_we_read_it`
fails by name. The manager would then still work (see the fallback test), only slower.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.servicebus.sdk_internals import PrefetchProbe, prefetched_count
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from tests.library.test_manager import sb, sb_conn, topic  # noqa: F401 - fixtures


async def test_prefetch_buffer_is_where_we_read_it(sb_conn: str, topic: str) -> None:
    sub = node_subscription_spec(topic=topic, node_id="n0").name
    async with servicebus_client(connection_string=sb_conn) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([ServiceBusMessage(b"m", application_properties={"sio_origin_node": "x"})
                                        for _ in range(10)])
        async with client.get_subscription_receiver(topic, sub, prefetch_count=50) as receiver:
            buffer = receiver._handler._received_messages
            assert isinstance(buffer, queue.Queue), type(buffer)
            got = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(got) == 1
            # the link holds credit for the rest: let the SDK read them (what it does inside a
            # receive call) and they wait in that buffer
            for _ in range(50):
                if prefetched_count(receiver) == 9:
                    break
                await receiver._handler.do_work_async()
            assert prefetched_count(receiver) == 9
            # ... and a receive call takes exactly those from it
            rest = await receiver.receive_messages(max_message_count=9, max_wait_time=1)
            assert len(rest) == 9 and prefetched_count(receiver) == 0
            for m in got + rest:
                await receiver.complete_message(m)


def test_prefetch_probe_falls_back_measured_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ManagerMetrics()
    probe = PrefetchProbe(metrics, logging.getLogger("test.sdk"), limit=256)

    class Moved:  # an SDK whose handler keeps the buffer elsewhere
        _handler: Any = object()

    with caplog.at_level(logging.WARNING, logger="test.sdk"):
        assert probe(Moved()) == 0
        assert probe(Moved()) == 0
    assert metrics.sdk_probe_failures == 2
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "internals changed" in caplog.records[0].getMessage()


async def test_a_receiver_without_a_handler_has_nothing_buffered_and_is_no_probe_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before its first open and after a dropped connection or close() the real SDK receiver has
    ``_handler = None``: that is 0 buffered, not "the SDK's internals changed" (that warning and
    ``sdk_probe_failures`` once followed every emulator restart)."""
    from azure.servicebus.aio import ServiceBusClient

    client = ServiceBusClient.from_connection_string(
        "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=s;UseDevelopmentEmulator=true")
    async with client:
        receiver = client.get_queue_receiver("q")
        metrics = ManagerMetrics()
        probe = PrefetchProbe(metrics, logging.getLogger("test.sdk"), limit=256)
        with caplog.at_level(logging.WARNING, logger="test.sdk"):
            assert receiver._handler is None and probe(receiver) == 0
            await receiver.close()
            assert receiver._handler is None and probe(receiver) == 0
        assert metrics.sdk_probe_failures == 0
        assert not caplog.records


def test_prefetch_probe_caps_at_the_limit() -> None:
    class Handler:
        _received_messages: queue.Queue[int] = queue.Queue()

    class Receiver:
        _handler = Handler()

    for i in range(5):
        Receiver._handler._received_messages.put(i)
    assert PrefetchProbe(ManagerMetrics(), logging.getLogger("test.sdk"), limit=3)(Receiver()) == 3


async def test_closing_a_receive_and_delete_receiver_counts_its_prefetched_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    """With receive_and_delete the broker deleted what sits in the prefetch buffer: closing the
    receiver (reconnect, close()) loses it, so it is counted and logged, never silent."""
    from types import SimpleNamespace

    from socketio_servicebus import ServiceBusManager

    buffer: queue.Queue[object] = queue.Queue()
    for i in range(7):
        buffer.put(i)
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    fake = SimpleNamespace(_handler=SimpleNamespace(_received_messages=buffer), close=close)
    for mode, expected in (("receive_and_delete", 7), ("peek_lock", 0)):
        mgr = ServiceBusManager(connection_string="Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v",
                                receive_mode=mode, write_only=True)
        mgr._receiver = fake
        with caplog.at_level(logging.WARNING, logger="socketio.servicebus"):
            await mgr._close_receiver()
        assert mgr.metrics.snapshot()["prefetch_dropped"] == expected
        assert mgr._receiver is None
    assert closed == [True, True]
    assert any("7 prefetched message(s)" in r.getMessage() for r in caplog.records)
