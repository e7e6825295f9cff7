"""Refuse an oversized socket.io message with an error, instead of dropping the connection.

Engine.IO closes a WebSocket whose message is over ``max_http_buffer_size``: the sender learns
nothing and loses its connection. This wraps the ASGI ``receive`` of a WebSocket so that such a
text message (a socket.io event, ``42[...]``) never reaches Engine.IO; the sender gets what
``relay_node.chat`` answers for any refused chat instead:

* the ack, if the event asked for one: ``{"error": "...", "event": "<name>"}``;
* an ``error`` event with the same object.

The connection stays open. A binary frame over the limit (an attachment, whose event would be
left waiting for it) still closes the connection with 1009, as does anything over the hard cap
uvicorn enforces while the frame arrives (:func:`hard_cap`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["refuse_oversized", "refusal_frames", "hard_cap"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Engine.IO message (4) + socket.io EVENT (2), optional namespace, optional ack id, event name
_EVENT = re.compile(r'^42(/[^,\[]*,)?(\d*)\["((?:[^"\\]|\\.){0,128})"')


def hard_cap(limit: int) -> int:
    """Largest WebSocket message read at all (uvicorn's ``ws_max_size``): up to this, an oversized
    event is answered with an error; above it the connection is closed while the frame arrives."""
    return max(4 * limit, limit + 1024)


def refusal_frames(text: str, limit: int) -> list[str]:
    """The Engine.IO text frames that answer an oversized socket.io event ``text``."""
    m = _EVENT.match(text[:300])
    ns = m.group(1) or "" if m else ""
    ack = m.group(2) if m else ""
    try:
        event = json.loads(f'"{m.group(3)}"') if m else ""
    except ValueError:
        event = ""
    error = {"error": f"message is {len(text)} characters; the limit is {limit}", "event": event}
    body = json.dumps(error, separators=(",", ":"))
    frames = [f'42{ns}["error",{body}]']
    if ack:
        frames.insert(0, f"43{ns}{ack}[{body}]")
    return frames


def refuse_oversized(receive: Receive, send: Send, limit: int,
                     on_refused: Callable[[], None] | None = None) -> Receive:
    """``receive`` for a WebSocket scope, answering text messages over ``limit`` itself."""

    async def guarded() -> dict[str, Any]:
        while True:
            message = await receive()
            if message.get("type") != "websocket.receive":
                return message
            text, data = message.get("text"), message.get("bytes")
            if text is not None and len(text) > limit and text.startswith("42"):
                for frame in refusal_frames(text, limit):
                    await send({"type": "websocket.send", "text": frame})
                if on_refused is not None:
                    on_refused()
                continue  # Engine.IO never sees it
            if (text is not None and len(text) > limit) or (data is not None and len(data) > limit):
                await send({"type": "websocket.close", "code": 1009})
                return {"type": "websocket.disconnect", "code": 1009}
            return message

    return guarded
