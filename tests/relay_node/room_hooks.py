"""``authorize_room`` hooks the relay node tests load with ``--authorize-room``."""

from __future__ import annotations

from typing import Any


def authorize_room(claims: dict[str, Any], room: str) -> bool | str:
    """``chat:closed-*``: nobody; ``chat:staff-*``: only a JWT with ``role: staff``, who may also read
    the whole history; ``chat:archive-*``: anyone, with the whole history; the rest: join only."""
    if room.startswith("chat:closed-"):
        return False
    if room.startswith("chat:staff-"):
        return "read-history" if claims.get("role") == "staff" else False
    if room.startswith("chat:archive-"):
        return "read-history"
    return True


async def broken(claims: dict[str, Any], room: str) -> bool:
    raise RuntimeError("the hook's database is down")
