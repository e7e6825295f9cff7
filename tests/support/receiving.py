"""Receiving a known number of messages with the aio SDK, within a bound."""

from __future__ import annotations

import time
from typing import Any


async def receive(receiver: Any, count: int, wait: float = 5.0) -> list[Any]:
    """Receive ``count`` messages, or fewer when they do not come within ``wait`` seconds."""
    got: list[Any] = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(max_message_count=count - len(got), max_wait_time=0.5)
    return got
