"""What one received Service Bus message means for this node (pure: no I/O, no clock).

:class:`Dispatcher` decodes a message body into a batch (or raises
:class:`~socketio_servicebus.errors.EnvelopeError`: a poison message), drops the envelopes it
has handled before (dedupe) and those not addressed to this node, and routes the rest by kind:
python-socketio's pub/sub messages to python-socketio, heartbeats, requests and responses to the
cluster. The caller handles each routed envelope and then calls :meth:`Dispatcher.handled`, so
an envelope is remembered only once it was handled: a message abandoned after a failure is
processed again on redelivery, except for the envelopes it had already handled.

Later layers (signed origins, tracing) hook in here: :meth:`Dispatcher.decode` is the one place
a received body becomes envelopes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from socketio_servicebus.errors import EnvelopeError
from socketio_servicebus.wire.dedupe import SeenIds
from socketio_servicebus.wire.envelope import MAX_BATCH_BYTES, SOCKETIO_KINDS, Batch, Envelope, Kind

__all__ = ["Dispatcher", "Route", "Routed"]


class Route(enum.Enum):
    SOCKETIO = "socketio"  # the envelope body is a python-socketio pub/sub message
    HEARTBEAT = "heartbeat"
    REQUEST = "request"
    RESPONSE = "response"


_ROUTES = {Kind.HEARTBEAT: Route.HEARTBEAT, Kind.REQUEST: Route.REQUEST, Kind.RESPONSE: Route.RESPONSE}


@dataclass(slots=True)
class Routed:
    """One decoded message: what to handle, in order, and what was dropped."""

    envelopes: list[tuple[Route, Envelope]] = field(default_factory=list)
    duplicates: int = 0
    #: envelopes from this node itself or addressed to another one (the subscription rule
    #: should have kept them away)
    misaddressed: list[Envelope] = field(default_factory=list)


class Dispatcher:
    def __init__(self, node_id: str, *, dedupe_size: int = 50_000, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.node_id = node_id
        self.max_bytes = max_bytes
        self.seen = SeenIds(dedupe_size)

    def decode(self, body: bytes) -> Batch:
        """The batch in ``body``; :class:`EnvelopeError` when it is not one (a poison message)."""
        batch = Batch.decode(body, max_bytes=self.max_bytes)
        for env in batch.envelopes:
            if env.kind in SOCKETIO_KINDS and env.body.get("method") != env.kind.value:
                raise EnvelopeError("bad-body", f"envelope {env.id}: body.method does not match kind")
        return batch

    def route(self, batch: Batch) -> Routed:
        out = Routed()
        this_batch: set[str] = set()
        for env in batch.envelopes:
            if env.id in self.seen or env.id in this_batch:
                out.duplicates += 1
                continue
            this_batch.add(env.id)
            if env.origin_node == self.node_id or env.target_node not in (None, self.node_id):
                out.misaddressed.append(env)
                continue
            out.envelopes.append((Route.SOCKETIO if env.kind in SOCKETIO_KINDS else _ROUTES[env.kind], env))
        return out

    def handled(self, env: Envelope) -> None:
        """``env`` was handled: a redelivered copy is a duplicate from now on."""
        self.seen.add(env.id)
