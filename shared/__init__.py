"""socketio-servicebus shared code: wire format and topology names.

Pure modules (no I/O apart from reading ``topology.json`` once), plus
:class:`ServiceBusManager` (``shared.manager``), the python-socketio client manager.
"""

from .envelope import (
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
from .manager import ServiceBusManager
from .metrics import ManagerMetrics

__all__ = [
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
    "ManagerMetrics",
]
