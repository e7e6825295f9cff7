"""A test app loaded by the relay nodes of ``test_cluster_requests.py`` (``--app``): it exposes the
manager's cluster calls to a socket.io client, with what the library says about each call.

- ``cluster:fetch`` ``"room"`` → ``{"sockets", "missing", "elapsed"}`` (``fetch_sockets`` on the
  chat room, as ``who`` does)
- ``cluster:emit`` → ``{"acks", "missing", "errors", "elapsed"}`` (``server_side_emit("whoami")``;
  every node answers ``{"node", "region"}``)
- ``cluster:nodes`` → the manager's ``nodes()`` (the registry, this node first)
- ``cluster:ask`` ``"sid"`` → ``{"answer"}``: ``sio.call("question", to=sid)``, the sid may be on any
  node (the client's ack comes back as a python-socketio ``callback`` message targeted at this node)
"""

from __future__ import annotations

from typing import Any


def setup(sio: Any) -> None:
    manager = sio.manager

    @manager.on_server_event("whoami")
    def whoami() -> dict[str, str]:
        return {"node": manager.node_id, "region": manager.region}

    @sio.on("cluster:fetch")
    async def fetch(sid: str, room: Any = None) -> dict[str, Any]:
        result = await manager.fetch_sockets(namespace="/", room="chat:" + str(room))
        return {"sockets": list(result), "missing": list(result.missing), "elapsed": result.elapsed}

    @sio.on("cluster:emit")
    async def emit(sid: str, data: Any = None) -> dict[str, Any]:
        result = await manager.server_side_emit("whoami")
        return {"acks": list(result), "missing": list(result.missing), "errors": result.errors,
                "elapsed": result.elapsed}

    @sio.on("cluster:nodes")
    async def nodes(sid: str, data: Any = None) -> list[dict[str, Any]]:
        return list(manager.nodes())

    @sio.on("cluster:ask")
    async def ask(sid: str, target: Any = None) -> dict[str, Any]:
        return {"answer": await sio.call("question", "who are you?", to=str(target), timeout=10)}
