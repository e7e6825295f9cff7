"""Old private name of :mod:`socketio_servicebus.extras` (kept for one release)."""

from socketio_servicebus.extras import EXTRAS, missing_modules, require_extra

__all__ = ["EXTRAS", "missing_modules", "require_extra"]
