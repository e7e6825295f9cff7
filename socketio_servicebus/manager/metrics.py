"""Old home of :mod:`socketio_servicebus.metrics` (the counters moved below the transport)."""

from socketio_servicebus.metrics import BATCH_SIZE_BUCKETS, ManagerMetrics

__all__ = ["BATCH_SIZE_BUCKETS", "ManagerMetrics"]
