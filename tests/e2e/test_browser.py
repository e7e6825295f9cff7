"""A real headless browser (Debian's chromium via playwright-core) on the demo pages.

Page A is served by region A's relay node ``a1``, page B by the on-premise node ``factory1`` in
region B: a message typed in A appears in B, having crossed Service Bus, the router function and
the on-premise node's pre-provisioned subscription. Screenshots land in test-output/e2e/.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

from local_stack.processes import ROOT
from local_stack.stack import LocalStack

from .conftest import output_dir

SCRIPT = ROOT / "tests" / "e2e" / "js" / "browser_chat.mjs"


async def test_message_typed_in_region_a_page_appears_on_premise_page(stack: LocalStack) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    out = output_dir()
    text = f"browser hello {uuid.uuid4().hex[:6]}"
    spec = {
        "urlA": stack.node_url("a1") + "/",
        "urlB": stack.node_url("factory1") + "/",
        "room": f"factory1-web-{uuid.uuid4().hex[:6]}",  # a room of factory1's zone
        "text": text,
        "outDir": str(out),
        "chromium": chromium,
    }
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), json.dumps(spec), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["ok"], result.get("error")
    assert "a1" in result["statusA"] and "factory1" in result["statusB"]
    arrived = [m for m in result["seenInB"] if m["text"] == text]
    assert len(arrived) == 1, result["seenInB"]
    assert arrived[0]["node"] == "a1" and arrived[0]["region"] == "westeurope"
    sizes = [Path(shot).stat().st_size for shot in result["screenshots"]]  # noqa: ASYNC240 - test assertion
    assert len(sizes) == 2 and min(sizes) > 1000
