"""/readyz follows Service Bus: 503 while the emulator is down, 200 again after it restarts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.emulator_process import EmulatorProcess

from .support import RelayProcess, ready_status, wait_status


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
