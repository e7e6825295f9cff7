"""socketio-servicebus: scale python-socketio over an Azure Service Bus topic.

``ServiceBusManager`` is the python-socketio client manager; the rest of this namespace is the
public wire-format API (envelopes and batches, see ``docs/wire-format.md``). Layers:

* ``socketio_servicebus.errors``, ``socketio_servicebus.metrics`` - every public exception, the counters;
* ``socketio_servicebus.wire`` - envelopes, batches, application properties, dispatch (pure);
* ``socketio_servicebus.topology`` - names on the bus, read from ``topology.json`` (also read by Bicep);
* ``socketio_servicebus.servicebus`` - SDK clients, the per-node subscription, retry rules, the transport;
* ``socketio_servicebus.manager`` - the client manager, its option groups, outbox and cluster.

See ``docs/architecture.md`` for which layer may import which.
"""

from socketio_servicebus._version import __version__
from socketio_servicebus.manager import (
    BatchingOptions,
    ClusterOptions,
    ClusterResult,
    ConnectionOptions,
    IncompleteResult,
    Limits,
    ManagerClosed,
    ManagerMetrics,
    ServiceBusManager,
)
from socketio_servicebus.wire.envelope import (
    BATCH_OVERHEAD,
    DEFAULT_BATCH_BYTES,
    ENVELOPE_SEPARATOR_BYTES,
    MAX_BATCH_BYTES,
    MAX_DEPTH,
    MAX_ENVELOPES,
    SERVICEBUS_MAX_MESSAGE_BYTES,
    SOCKETIO_KINDS,
    VERSION,
    Batch,
    BatchKey,
    Envelope,
    EnvelopeError,
    EnvelopeTooLarge,
    Kind,
    application_properties,
    assemble_batch,
    batch_key,
    batch_overhead,
    batch_size,
    check_size,
    decode_batch,
    encode_batch,
    encode_envelope,
    envelope_size,
    pack_batches,
)

__all__ = [
    "__version__",
    "BATCH_OVERHEAD",
    "DEFAULT_BATCH_BYTES",
    "ENVELOPE_SEPARATOR_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_ENVELOPES",
    "SERVICEBUS_MAX_MESSAGE_BYTES",
    "SOCKETIO_KINDS",
    "VERSION",
    "Batch",
    "BatchKey",
    "Envelope",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "Kind",
    "application_properties",
    "assemble_batch",
    "batch_key",
    "batch_overhead",
    "batch_size",
    "check_size",
    "decode_batch",
    "encode_batch",
    "encode_envelope",
    "envelope_size",
    "pack_batches",
    "ServiceBusManager",
    "ManagerClosed",
    "ClusterResult",
    "IncompleteResult",
    "ManagerMetrics",
    "ConnectionOptions",
    "BatchingOptions",
    "ClusterOptions",
    "Limits",
]
