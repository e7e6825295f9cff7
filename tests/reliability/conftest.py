"""Fixtures of the reliability suite: the whole local stack on ephemeral ports.

Relay nodes run with ``--auto-delete-on-idle 5`` (a killed node's subscription goes away in
seconds, not Azure's 5-minute minimum) and ``--subscription-check-interval 2`` (a rule changed
from outside is restored within seconds).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from local_stack.processes import ROOT
from local_stack.stack import LocalStack, StackPorts

from .support import OUTPUT

AUTO_DELETE_ON_IDLE = 5.0
SUBSCRIPTION_CHECK_INTERVAL = 2.0
NODE_ARGS = [
    "--auto-delete-on-idle", str(AUTO_DELETE_ON_IDLE),
    "--subscription-check-interval", str(SUBSCRIPTION_CHECK_INTERVAL),
    # the load generators send up to 40 chats/s from one socket, twice the per-socket default
    "--rate-limit", "0",
]


async def start_stack(run_dir: Path) -> LocalStack:
    assert shutil.which("node"), "node is required (azurite)"
    assert (ROOT / "node_modules" / ".bin" / "azurite-table").exists(), "run `npm install` (make test does it)"
    stack = LocalStack(run_dir=run_dir, ports=StackPorts.ephemeral(), node_extra_args=list(NODE_ARGS),
                       # fault tests inject raw envelopes and emit from an unsigned write-only
                       # manager: trust zones have their own tests (tests/library/test_manager_zones.py)
                       with_zones=False)
    await stack.start()
    return stack


async def stop_stack(stack: LocalStack, name: str) -> None:
    await stack.stop()
    logs = stack.run_dir / "logs"
    if logs.exists():
        shutil.copytree(logs, OUTPUT / f"logs-{name}", dirs_exist_ok=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> AsyncIterator[LocalStack]:
    name = request.module.__name__.rsplit(".", 1)[-1]
    stack = await start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        await stop_stack(stack, name)
