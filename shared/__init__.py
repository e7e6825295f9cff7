"""Code the Function App's functions share (``function_app.py`` holds only the bindings).

* ``handlers`` - one function per trigger, called by ``function_app.py``;
* ``appcontext`` / ``connections`` - settings and SDK clients of one Function App instance;
* ``routing`` - the cross-region router: the route plan (pure) and the forwarder;
* ``persistence`` - app hooks (``SIO_HOOKS_MODULE``) and the Table Storage history for replay;
* ``edge`` - the HTTP emit API and the Azure Web PubSub feed.

The Socket.IO library itself (manager, wire format, topology names) is ``socketio_servicebus``,
a sibling folder deployed with this one. ``shared`` is not part of the PyPI wheel.
"""
