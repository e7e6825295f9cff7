"""Client side of the Functions history API, as a page does it after a reconnect."""

from __future__ import annotations

from typing import Any

import aiohttp


async def fetch_history(functions_url: str, room: str, after: str, limit: int = 200) -> list[dict[str, Any]]:
    """Every event of ``room`` (namespace ``/``) after cursor ``after``, following ``next``."""
    events: list[dict[str, Any]] = []
    cursor: str | None = after
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            params = {"ns": "/", "room": room, "after": cursor or "", "limit": str(limit)}
            async with session.get(functions_url + "/history", params=params) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            events += body["events"]
            cursor = body.get("next")
            if not cursor:
                break
    return events
