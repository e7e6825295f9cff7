"""The receive pipeline: one received Service Bus message, decoded, verified, traced and routed.

:meth:`Inbound.message` is a generator over one message. It decodes the body (a poison message
is dead-lettered), checks its proof of origin (:class:`~socketio_servicebus.manager.trust.Trust`),
routes its envelopes (:class:`~socketio_servicebus.wire.dispatch.Dispatcher`: dedupe, addressing)
and *yields* each one the manager must act on, as ``(route, envelope)``:

* ``Route.SOCKETIO``: for python-socketio; yielded inside its ``deliver`` span, so the span
  covers python-socketio's handling until the manager asks for the next step;
* ``Route.HEARTBEAT``: a goodbye, or a heartbeat whose node may join the registry;
* ``Route.REQUEST``: a request of another node to serve.

Responses go to the cluster's request tracker here (nothing to send). The pipeline never calls
the manager: it returns steps, and marks an envelope handled (for dedupe on redelivery) only
once the manager asks for the next step. If acting on a step raises, the manager hands the
error back with :meth:`Inbound.failed`; the message is then counted, logged and abandoned (with
peek_lock) as if the pipeline had raised it itself. At the end the message's settlement is queued.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator
from typing import Any

from socketio.base_manager import BaseManager  # type: ignore[import-untyped]

from socketio_servicebus.errors import EnvelopeError
from socketio_servicebus.manager.cluster import Cluster
from socketio_servicebus.manager.local_rooms import room_size, touches_local
from socketio_servicebus.manager.trust import Trust
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.servicebus.transport import Transport, message_body
from socketio_servicebus.tracing import MessagingSpans
from socketio_servicebus.wire.dispatch import Dispatcher, Route
from socketio_servicebus.wire.envelope import Envelope

__all__ = ["Inbound", "Steps"]

#: the steps of one message: ``(route, envelope)`` for the manager to act on
Steps = Generator[tuple[Route, Envelope], None, None]

_NO_SPAN = contextlib.nullcontext(None)


class Inbound:
    def __init__(self, *, transport: Transport, dispatcher: Dispatcher, trust: Trust, cluster: Cluster,
                 spans: MessagingSpans, rooms: BaseManager, metrics: ManagerMetrics, logger: logging.Logger) -> None:
        self.transport = transport
        self.dispatcher = dispatcher
        self.trust = trust
        self.cluster = cluster
        self.spans = spans
        #: python-socketio's room table (read only: would an envelope touch a local socket?)
        self.rooms = rooms
        self.metrics = metrics
        self.log = logger

    def _touches_local(self, env: Envelope) -> bool:
        return touches_local(self.rooms, env)

    def message(self, msg: Any) -> Steps:
        """The steps of ``msg``; its settlement is queued once they are done (or it failed)."""
        self.metrics.messages_received += 1
        transport, dispatcher = self.transport, self.dispatcher
        try:
            body = message_body(msg)
            batch = dispatcher.decode(body)
        except EnvelopeError as exc:
            transport.poison(msg, exc)
            return
        checked = self.trust.message(msg, body, batch)
        if checked is None:  # no proof of origin: dropped, counted (forged_dropped), logged
            transport.settle(msg, "complete")
            return
        try:
            routed = dispatcher.route(batch)
            self.metrics.duplicates_dropped += routed.duplicates
            self.metrics.misaddressed_dropped += len(routed.misaddressed)
            for env in routed.misaddressed:  # the subscription rule should have kept them away
                self.log.debug("servicebus: envelope %s (from %s, to %s) is not for this node",
                               env.id, env.origin_node, env.target_node)
            now_wall = time.time()
            spans = self.spans.receive(batch, msg.message_id) if self.spans.tracing.on else _NO_SPAN
            with spans as receive_span:
                for route, env in routed.envelopes:
                    if not self.trust.envelope(checked, env, self._touches_local):
                        dispatcher.handled(env)  # outside its zone's policy: dropped (counted if it mattered here)
                        continue
                    self.metrics.envelopes_received += 1
                    self.metrics.observe_lag(now_wall - env.ts)
                    if route is Route.SOCKETIO:
                        if receive_span is None:
                            yield route, env
                        else:
                            with self.spans.deliver(env, receive_span, room_size(self.rooms, env)):
                                yield route, env
                    elif route is Route.HEARTBEAT:
                        if env.body.get("bye") or self.trust.join(
                                checked, env, self.cluster.registry.live_ids(time.monotonic())):
                            yield route, env  # else: not signed for, or over a cap: never registered
                    elif route is Route.REQUEST:
                        yield route, env
                    else:
                        self.cluster.on_response(env)
                    dispatcher.handled(env)
        except Exception:  # noqa: BLE001 - logged with traceback and counted; abandoned with peek_lock
            transport.failed(msg)
            return
        transport.settle(msg, "complete")

    @staticmethod
    def failed(steps: Steps, exc: Exception) -> None:
        """Acting on the last step of ``steps`` raised ``exc``: the message fails (see the module)."""
        with contextlib.suppress(StopIteration):
            steps.throw(exc)
