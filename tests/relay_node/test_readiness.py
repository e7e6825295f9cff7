"""/readyz follows Service Bus: 503 while the emulator is down, 200 again after it restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from tests.support.emulator_process import EmulatorProcess

from .support import SCALE, RelayProcess


async def ready_status(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def wait_status(url: str, want: int, within: float) -> dict:
    deadline = time.monotonic() + within * SCALE
    body: dict = {}
    while time.monotonic() < deadline:
        status, body = await ready_status(url)
        if status == want:
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"/readyz did not answer {want} within {within}s; last body {body}")


async def test_readyz_flips_with_the_broker(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text(json.dumps(EmulatorProcess.default_config()))
    first = EmulatorProcess(config)
    first.start()
    port = first.port_of("sbemulatorns")
    node = RelayProcess("--connection-string", first.connection_string(), "--node-id", "ready1",
                        "--drain-seconds", "3")
    second: EmulatorProcess | None = None
    try:
        node.start()
        assert (await ready_status(node.url))[0] == 200
        first.stop()
        body = await wait_status(node.url, 503, 20)
        assert body["ready"] is False and body["reason"]
        second = EmulatorProcess(config, port=port)  # same port: same connection string
        second.start()
        body = await wait_status(node.url, 200, 45)
        assert body["ready"] is True
    finally:
        node.stop()
        first.stop()
        if second is not None:
            second.stop()
