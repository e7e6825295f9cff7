"""The emulator-crash scenario of ``test_faults.py`` with the emulator on ``--data-dir`` (slow).

What the emulator accepted before the SIGKILL must be delivered after the restart. The only
envelopes allowed to be missing are those whose Service Bus message the emulator had already
handed to a relay node's receiver before the kill: the nodes receive in ``receive_and_delete``
mode (docs/manager.md, "Receive mode"), so such a message is gone from the broker and lost with
the node's receive link, at most once by design. Such a loss is whole-message (every envelope of
that emitter batch), and there can be no more such messages per node than the node counted in
``prefetch_dropped`` plus what its receive link had credit for (the prefetch, 256 messages):
frames transferred but still unread on the socket at the kill cannot be counted by the node.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from local_stack.processes import ROOT
from local_stack.stack import LocalStack, StackPorts
from socketio_servicebus.manager.options import BatchingOptions

from .conftest import NODE_ARGS, stop_stack
from .crash_scenario import SAME_REGION, run_emulator_crash

pytestmark = [pytest.mark.slow]

#: the relay nodes' receive credit (ServiceBusManager's default prefetch_count)
PREFETCH = 256


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    assert shutil.which("node"), "node is required (azurite)"
    assert (ROOT / "node_modules" / ".bin" / "azurite-table").exists(), "run `npm install` (make test does it)"
    run_dir = tmp_path_factory.mktemp("stack-data-dir")
    stack = LocalStack(run_dir=run_dir, ports=StackPorts.ephemeral(), node_extra_args=list(NODE_ARGS),
                       # fault tests inject raw envelopes and emit from an unsigned write-only
                       # manager: trust zones have their own tests (tests/library/test_manager_zones.py)
                       with_zones=False,
                       emulator_data_dir=Path(run_dir) / "servicebus-data")
    await stack.start()
    try:
        yield stack
    finally:
        await stop_stack(stack, "test_emulator_crash_data_dir")


def test_prefetch_bound_is_the_manager_default() -> None:
    assert BatchingOptions().prefetch_count == PREFETCH


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(300)
async def test_emulator_sigkill_with_data_dir_loses_nothing_it_accepted(stack: LocalStack) -> None:
    # b1's copies go through the router function (peek-lock, LockDuration 1 minute): the ones it
    # had locked at the kill come back when their lock expires, so allow for that.
    result = await run_emulator_crash(stack, "emulator-crash-data-dir", deliver_within=100.0)
    for name, row in result.rows.items():
        assert row["duplicated"] == 0, name
        assert row["after_missing"] == 0, (name, row)
        # node subscriptions survive the restart: nothing is sent into a missing subscription
        assert row["lost_before_resubscribe"] == 0, (name, row)
        lost = result.lost_messages[name]
        assert sum(m["envelopes_lost"] for m in lost) == row["lost_in_broker_crash"]
        # only messages already handed to the node (receive_and_delete) may be missing ...
        assert len(lost) <= result.prefetch_dropped[name] + PREFETCH, (name, lost, result.prefetch_dropped)
        if name in SAME_REGION:
            # ... and those are lost whole: every envelope of that emitter batch
            assert all(m["envelopes_lost"] == m["envelopes_in_message"] for m in lost), (name, lost)
        assert row["delivered"] + result.dropped + row["lost_in_broker_crash"] + row["unacked_undelivered"] \
            >= result.sent
