"""A local Azure Web PubSub service for the local stack and the tests (replaces no Azure feature
in production; see docs/webpubsub-emulator.md for what differs from the service).

* ``rest.py``: the data-plane REST API the server SDK calls (sends, groups, connections, users);
* ``client_ws.py``: the client WebSocket endpoint and its subprotocols;
* ``hubs.py``: hubs, connections, groups and users (state, no I/O);
* ``protocol.py``: frames (pure); ``tokens.py``: JWT checks; ``app.py``: the aiohttp app.
"""

from .app import ACCESS_KEY, STATS_PATH, WebPubSubServer, connection_string, make_app

__all__ = ["ACCESS_KEY", "STATS_PATH", "WebPubSubServer", "connection_string", "make_app"]
