"""``python -m socketio_servicebus.sizing``: see :mod:`socketio_servicebus.sizing`."""

import sys

from socketio_servicebus.sizing import main

sys.exit(main())
