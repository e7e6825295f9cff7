"""The local stack's dashboard in a real headless browser (Debian's chromium via playwright-core).

The whole stack runs (``stack`` fixture: emulator with two regions, Functions, Azurite, four
relay nodes, the dashboard). The browser sees the four nodes ready and both regions' function
subscriptions, a poison message dead-lettered by the persist function (peeked, with its reason), chats through node ``a1``'s demo page (whose dashboard link must point at the
dashboard), sees a1's outbound and a2's inbound envelope rates move, then node ``b1`` is killed
by PID and must be marked down within a few seconds. Screenshots land in test-output/e2e/.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage

from local_stack.processes import ROOT
from local_stack.stack import LocalStack
from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.topology import load_topology

from .conftest import output_dir

SCRIPT = ROOT / "tests" / "e2e" / "js" / "dashboard.mjs"
#: probes time out after 1 s and run every second: "down" must show well within this
DOWN_WITHIN_SECONDS = 5.0


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")  # the stack's loop: the dashboard's collector runs in it
async def test_dashboard_shows_nodes_flow_and_a_killed_node(stack: LocalStack) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    assert stack.dashboard is not None
    victim = stack.processes["node-b1"]
    assert victim.pid is not None and victim.alive()
    # a message only the persist function reads, with a body that is not a batch: it fails
    # maxDeliveryCount times and lands in persist's dead-letter sub-queue
    topo = load_topology()
    props = topo["properties"]
    poison = ServiceBusMessage("not a batch", message_id=f"poison-{uuid.uuid4().hex[:6]}", application_properties={
        props["persist"]: True, props["hops"]: 0, props["routeDone"]: True})
    async with servicebus_client(connection_string=stack.connection_string("westeurope")) as client:
        async with client.get_topic_sender(topo["topic"]) as sender:
            await sender.send_messages(poison)
    spec = {
        "dashboardUrl": stack.dashboard.url,
        "chatUrl": stack.node_url("a1") + "/",
        "chatNode": "a1",
        "peerNode": "a2",
        "killPid": victim.pid,
        "killNode": "b1",
        "nodes": len(stack.nodes),
        "room": f"dash-{uuid.uuid4().hex[:6]}",
        "deadLetterSubscription": "persist",
        "outDir": str(output_dir()),
        "chromium": chromium,
    }
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), json.dumps(spec), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    (output_dir() / "dashboard-result.json").write_text(json.dumps(result, indent=2))  # noqa: ASYNC240 - tiny file
    assert result["ok"], f"failed at {result.get('step')}: {result.get('error')}"

    assert sorted(result["readyNodes"]) == ["a1", "a2", "b1", "factory1"]
    assert sorted(result["regionsUp"]) == ["northeurope", "westeurope"]
    for name in ("router", "persist", "webpubsub", "node-a1", "node-factory1"):
        assert name in result["subscriptions"], result["subscriptions"]
    assert result["dashboardLink"] == stack.dashboard.url
    assert result["outSeen"] > 0, "a1's outbound envelopes/s never moved"
    assert result["inSeen"] > 0, "a2's inbound envelopes/s never moved"

    region, subscription, _seq, _enqueued, reason, _description, body = result["deadLetter"]
    assert (region, subscription, reason, body) == ("westeurope", "persist", "MaxDeliveryCountExceeded", "not a batch")

    assert result["secondsToDown"] <= DOWN_WITHIN_SECONDS, result
    assert "connection refused" in result["downReason"]
    assert sorted(result["readyAfterKill"]) == ["a1", "a2", "factory1"]
    sizes = [Path(shot).stat().st_size for shot in result["screenshots"]]  # noqa: ASYNC240 - test assertion
    assert len(sizes) == 2 and min(sizes) > 10_000
