"""A relay node whose manager loses a background task: /readyz says 503 with the reason while
the task is dead, and 200 again once it was restarted and lives (in-process node, real emulator)."""

from __future__ import annotations

from typing import Any

import aiohttp

from relay_node.config import from_args
from relay_node.server import RelayNode

from .support import wait_status


async def until_status(port: int, want: int, within: float = 20) -> dict[str, Any]:
    return await wait_status(f"http://127.0.0.1:{port}", want, within, poll=0.05)


async def test_dead_outbox_turns_readyz_503_with_the_reason(conn_a: str) -> None:
    cfg = from_args(["--connection-string", conn_a, "--node-id", "death1", "--port", "0", "--drain-seconds", "5"], {})
    node = RelayNode(cfg)
    await node.start()
    try:
        assert node.port is not None
        await until_status(node.port, 200)
        outbox = node.manager._outbox
        broken = True
        real_take = outbox._take

        def take() -> Any:
            if broken:
                raise RuntimeError("injected outbox fault")
            return real_take()

        outbox._take = take
        await node.sio.emit("tick", {"n": 1})  # gives the outbox something to take
        body = await until_status(node.port, 503)
        assert "outbox" in body["reason"] and "injected outbox fault" in body["reason"], body
        assert "outbox" in body["health"]["failed_tasks"]
        broken = False
        await until_status(node.port, 200)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{node.port}/metrics") as r:
            text = await r.text()
        assert "socketio_servicebus_task_failures_total" in text
        assert "socketio_servicebus_task_failures_total 0.0" not in text
    finally:
        node.request_stop()
        await node.wait_stopped()
