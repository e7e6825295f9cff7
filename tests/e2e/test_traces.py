"""One chat followed end to end with OpenTelemetry, in the whole local stack.

A chat sent through node ``a1`` (westeurope) reaches ``b1`` and the on-premise ``factory1``
(northeurope) through the router function; the persist and Web PubSub functions take it too.
Every process exports its spans to the dashboard's collector (``local_stack/dashboard/traces.py``).
The test reads the trace back from the collector's API and checks who is whose parent; then
headless Chromium opens the trace view, finds the chat by its message id and shows the waterfall
(screenshot: test-output/e2e/traces.png, the one in the README).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from typing import Any

import aiohttp
import pytest

from local_stack.processes import ROOT
from local_stack.stack import LocalStack

from .conftest import output_dir
from .test_history import connect, wait_for

SCRIPT = ROOT / "tests" / "e2e" / "js" / "traces.mjs"


def _one(spans: list[dict[str, Any]], name: str, instance_part: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and instance_part in s["instance"]]
    assert len(found) == 1, (name, instance_part, [(s["name"], s["instance"]) for s in spans])
    return found[0]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_one_chat_is_one_trace_across_nodes_functions_and_regions(stack: LocalStack) -> None:
    assert stack.dashboard is not None
    room = f"trace-{uuid.uuid4().hex[:6]}"
    inboxes: dict[str, list[dict[str, Any]]] = {n: [] for n in ("a1", "b1", "factory1")}
    clients = [await connect(stack.node_url(n), room, inboxes[n]) for n in inboxes]
    try:
        ack = await clients[0].call("chat", {"room": room, "text": "follow me"}, timeout=10)
        assert ack["ok"] and len(ack["trace"]) == 32, ack
        message_id, trace_id = ack["id"], ack["trace"]
        await wait_for(lambda: all(any(m["id"] == message_id for m in box) for box in inboxes.values()), 30)
        for box in inboxes.values():  # every receiver sees the same trace id (the demo page shows it)
            assert next(m for m in box if m["id"] == message_id)["trace"] == trace_id
    finally:
        for c in clients:
            await c.disconnect()

    api = stack.dashboard.url + "api/traces"
    want = {"a1", "b1", "factory1"}
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:
            async with http.get(f"{api}/{trace_id}") as r:
                trace = await r.json() if r.status == 200 else {"span_list": []}
            spans = trace["span_list"]
            names = {(s["name"], s["instance"]) for s in spans}
            have = {s["instance"] for s in spans} | {s["name"].split()[0] for s in spans}
            if want <= have and {"route", "persist", "webpubsub"} <= have and sum(
                    1 for n, _ in names if n == "deliver socketio") >= 2:
                break
            assert time.monotonic() < deadline, f"trace incomplete: {sorted(names)}"
            await asyncio.sleep(0.3)
        async with http.get(api, params={"q": message_id}) as r:
            assert [t["trace_id"] for t in (await r.json())["traces"]] == [trace_id]
    (output_dir() / "trace.json").write_text(json.dumps(trace, indent=2))  # noqa: ASYNC240 - tiny file

    chat = _one(spans, "chat chat:" + room, "a1")
    emit = _one(spans, "emit socketio", "a1")
    send = _one(spans, "send socketio", "a1")
    route = _one(spans, "route socketio", "westeurope")
    forward = next(s for s in spans if s["name"] == "send socketio" and s["parent_span_id"] == route["span_id"])
    persist = _one(spans, "persist socketio", "westeurope")
    wps = _one(spans, "webpubsub socketio", "westeurope")
    assert chat["attributes"]["chat.message_id"] == message_id and chat["parent_span_id"] is None
    assert emit["parent_span_id"] == chat["span_id"]
    assert emit["attributes"]["socketio.room"] == "chat:" + room and emit["attributes"]["socketio.event"] == "chat"
    assert send["parent_span_id"] == emit["span_id"]  # the batch carrying the emit
    assert send["attributes"]["messaging.batch.message_count"] >= 1
    for fn in (route, persist, wps):
        assert fn["parent_span_id"] == emit["span_id"], fn["name"]
        assert fn["service"] == "socketio-servicebus-functions"
    assert forward["attributes"]["socketio.target_region"] == "northeurope"
    for node in ("b1", "factory1"):  # the other region: under the router's forward
        receive = _one(spans, "receive socketio", node)
        deliver = _one(spans, "deliver socketio", node)
        assert receive["parent_span_id"] == forward["span_id"], node
        assert deliver["parent_span_id"] == receive["span_id"], node
        assert deliver["attributes"]["socketio.event"] == "chat"
    for s in spans:  # never payloads
        assert "follow me" not in json.dumps(s["attributes"])

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    spec = {"tracesUrl": stack.dashboard.url + "traces", "messageId": message_id, "traceId": trace_id,
            "processes": ["a1", "b1", "factory1"], "outDir": str(output_dir()), "chromium": chromium}
    proc = await asyncio.create_subprocess_exec("node", str(SCRIPT), json.dumps(spec), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["ok"], f"failed at {result.get('step')}: {result.get('error')}"
    assert result["listed"] == [trace_id]
    assert {"a1", "b1", "factory1"} <= set(result["processes"])
    assert len(result["rows"]) >= len(spans)  # every span of the trace has a row (plus linked ones)
