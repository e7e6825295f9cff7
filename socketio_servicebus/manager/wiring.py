"""Building the manager's parts from its options: once at construction (transport, cluster,
dispatcher) and once at start (supervisor, outbox). Nothing here runs; it only builds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from socketio_servicebus.manager.cluster import Cluster
from socketio_servicebus.manager.options import BatchingOptions, ClusterOptions, ConnectionOptions, Limits
from socketio_servicebus.manager.outbox import Outbox, SendFn, fit
from socketio_servicebus.manager.supervisor import Supervisor
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.subscription import node_subscription_spec
from socketio_servicebus.servicebus.transport import Transport
from socketio_servicebus.tracing import MessagingSpans
from socketio_servicebus.wire.dispatch import Dispatcher
from socketio_servicebus.wire.envelope import MAX_BATCH_BYTES, Batch

__all__ = ["body_limit", "parts", "running", "traced_send"]

#: ServiceBusClient options unless ``client_options`` says otherwise: one quick SDK retry, then
#: the manager's own backoff (which keeps health() truthful meanwhile).
CLIENT_DEFAULTS: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}


def body_limit(limits: Limits) -> int:
    """Body bytes per message: headroom for AMQP header, properties and application properties."""
    return limits.max_message_bytes - min(8192, limits.max_message_bytes // 8)


def parts(node_id: str, region: str, conn: ConnectionOptions, batching: BatchingOptions, cl: ClusterOptions,
          limits: Limits, metrics: ManagerMetrics, log: logging.Logger) -> tuple[Transport, Cluster, Dispatcher]:
    """The manager's transport, cluster and dispatcher, built from its options."""
    spec = node_subscription_spec(topic=conn.topic, node_id=node_id, ttl=cl.subscription_ttl,
                                  auto_delete_on_idle=cl.auto_delete_on_idle)
    transport = Transport(
        conn={"connection_string": conn.connection_string,
              "fully_qualified_namespace": conn.fully_qualified_namespace, "credential": conn.credential},
        client_options={**CLIENT_DEFAULTS, **conn.client_options}, admin_options=conn.admin_options,
        topic=conn.topic, subscription_name=conn.subscription or spec.name, spec=spec,
        owns_subscription=conn.subscription is None, receive_mode=conn.receive_mode,
        prefetch_count=batching.prefetch_count, backoff_initial=conn.backoff_initial,
        backoff_max=conn.backoff_max, metrics=metrics, logger=log)
    cluster = Cluster(
        node_id=node_id, region=region, heartbeat_interval=cl.heartbeat_interval,
        node_timeout=cl.node_timeout, request_timeout=cl.request_timeout,
        max_concurrent_requests=limits.max_concurrent_requests,
        check=functools.partial(fit, body_limit=body_limit(limits)), metrics=metrics, logger=log)
    dispatcher = Dispatcher(node_id, dedupe_size=limits.dedupe_size,
                            max_bytes=max(MAX_BATCH_BYTES, limits.max_message_bytes))
    return transport, cluster, dispatcher


def running(node_id: str, conn: ConnectionOptions, batching: BatchingOptions, limits: Limits, send: SendFn,
            on_change: Callable[[], None], metrics: ManagerMetrics, log: logging.Logger) -> tuple[Supervisor, Outbox]:
    """The supervisor of the manager's tasks and its outbox (sending with ``send``), at start."""
    sup = Supervisor(prefix=f"sbmanager-{node_id}", logger=log, metrics=metrics, on_change=on_change,
                     backoff_initial=conn.backoff_initial, backoff_max=conn.backoff_max)
    outbox = Outbox(send, body_limit=body_limit(limits), max_items=limits.buffer_size, metrics=metrics,
                    logger=log, backoff_initial=conn.backoff_initial, backoff_max=conn.backoff_max,
                    linger=batching.send_interval, max_delay=limits.max_queue_delay)
    return sup, outbox


def traced_send(spans: MessagingSpans, transport: Transport) -> SendFn:
    """The transport's send, in a ``send <topic>`` span linking the emits it carries."""
    async def send(messages: list[tuple[Batch, bytes]]) -> list[str | None] | None:
        if not spans.tracing.on:
            return await transport.send(messages)
        with spans.send([batch for batch, _ in messages]):
            return await transport.send(messages)

    return send
