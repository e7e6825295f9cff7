"""Fixtures shared by every test: the Service Bus emulator on an ephemeral port, over TCP."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.emulator_process import EmulatorProcess  # noqa: E402


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator process for the session: namespace ``sbemulatorns`` with topic ``socketio``.

    Tests that need entities of their own create them with the admin helper
    (``socketio_servicebus.servicebus.clients``) under unique names, so they do not see each other's messages.
    """
    config = tmp_path_factory.mktemp("emulator") / "Config.json"
    config.write_text(json.dumps(EmulatorProcess.default_config()))
    proc = EmulatorProcess(config)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def conn_str(emulator: EmulatorProcess) -> str:
    return emulator.connection_string("sbemulatorns")
