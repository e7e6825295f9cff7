"""The whole local stack (``local_stack.LocalStack``) on ephemeral ports, for end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from local_stack.processes import ROOT
from local_stack.stack import LocalStack, StackPorts

OUTPUT = ROOT / "test-output" / "e2e"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    for tool in ("node",):
        assert shutil.which(tool), f"{tool} is required for the end-to-end tests"
    assert (ROOT / "node_modules" / "socket.io-client").exists(), "run `npm install` (make test does it)"
    run_dir = tmp_path_factory.mktemp("stack")
    stack = LocalStack(
        run_dir=run_dir,
        ports=StackPorts.ephemeral(),
        node_extra_args=["--app", "relay_node.chat:setup", "--app", "tests.e2e.blob_app:setup",
                         "--authorize-room", "tests.e2e.room_hooks:authorize_room"],
    )
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
        logs = run_dir / "logs"
        if logs.exists():
            OUTPUT.mkdir(parents=True, exist_ok=True)
            shutil.copytree(logs, OUTPUT / "logs", dirs_exist_ok=True)


def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
