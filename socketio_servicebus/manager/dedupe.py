"""Old home of :mod:`socketio_servicebus.wire.dedupe`."""

from socketio_servicebus.wire.dedupe import SeenIds

__all__ = ["SeenIds"]
