"""Client side of the Functions history API: as a page does it after a reconnect (a history token
from its relay node, ``GET /api/history``), or as a server does it (function key,
``GET /api/history/server``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import socketio

HISTORY_TOKEN_EVENT = "relay:history_token"


async def history_token(client: socketio.AsyncClient, room: str, namespace: str = "/", *,
                        resume: str | None = None) -> str:
    """A history token for ``room`` from the relay node ``client`` is connected to; ``resume``: an
    earlier token of the same room, so the new one opens the room from that earlier join."""
    request: dict[str, str] = {"room": room, **({"resume": resume} if resume else {})}
    ack = await client.call(HISTORY_TOKEN_EVENT, request, namespace=namespace, timeout=10)
    assert isinstance(ack, dict) and ack.get("ok"), ack
    return str(ack["token"])


async def fetch_history(
    functions_url: str,
    room: str,
    after: str,
    limit: int = 200,
    *,
    token: str | None = None,
    function_key: str | None = None,
) -> list[dict[str, Any]]:
    """Every event of ``room`` (namespace ``/``) after cursor ``after``, following ``next``.

    Exactly one of ``token`` (``/history``, bearer) and ``function_key`` (``/history/server``).
    """
    assert (token is None) != (function_key is None), "give a history token or a function key"
    if token is not None:
        url, headers = functions_url + "/history", {"Authorization": f"Bearer {token}"}
    else:
        url, headers = functions_url + "/history/server", {"x-functions-key": str(function_key)}
    events: list[dict[str, Any]] = []
    cursor: str | None = after
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            params = {"ns": "/", "room": room, "after": cursor or "", "limit": str(limit)}
            async with session.get(url, params=params, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            events += body["events"]
            cursor = body.get("next")
            if not cursor:
                break
    return events
