"""A second socket.io app loaded by the e2e stack's relay nodes (``--app``): binary payloads.

A client emits ``blob`` with ``{"room": name, "payload": <bytes>}``; every member of the chat
room ``name`` on every node and region receives ``blob`` with the same bytes, the sender's node
and region. Proves that binary socket.io packets survive the Service Bus trip and the router.
"""

from __future__ import annotations

from typing import Any


def setup(sio: Any) -> None:
    @sio.on("blob")
    async def blob(sid: str, data: Any = None) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("payload"), bytes | bytearray):
            return {"ok": False, "error": "blob needs {room, payload: bytes}"}
        room = str(data.get("room", ""))[:48]
        manager = sio.manager
        await sio.emit(
            "blob",
            {"room": room, "payload": bytes(data["payload"]), "node": manager.node_id, "region": manager.region},
            room="chat:" + room,
        )
        return {"ok": True}
