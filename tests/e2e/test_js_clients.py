"""The official socket.io JavaScript client against relay nodes in both regions and on premise.

Messages cross every pair of nodes (same region through the topic, other region through the
router function), rooms stay rooms, and binary payloads arrive byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from local_stack.processes import ROOT
from local_stack.stack import LocalStack

MESH = ROOT / "tests" / "e2e" / "js" / "mesh.mjs"


async def run_mesh(spec: dict) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "node", str(MESH), json.dumps(spec), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_chat_and_binary_cross_every_pair_and_rooms_stay_rooms(stack: LocalStack) -> None:
    # factory1's zone may emit only under its prefix (chat:factory1...): the shared room is there
    room, other = f"factory1-e2e-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    members = ["a1", "a2", "b1", "factory1"]
    clients = [{"name": n, "url": stack.node_url(n), "room": room} for n in members]
    clients.append({"name": "outsider", "url": stack.node_url("b1"), "room": other})
    result = await run_mesh({"clients": clients, "waitMs": 8000, "binary": True})

    expected = sorted(f"hello from {n}" for n in members)
    for name in members:
        assert sorted(result[name]["chat"]) == expected, f"{name} got {result[name]['chat']}"
        blobs = result[name]["blobs"]
        assert sorted(b["from"] for b in blobs) == list(range(len(members))), f"{name} blobs {blobs}"
        assert all(b["intact"] for b in blobs), f"{name} got a damaged binary payload"
        assert not result[name]["errors"]
    # the outsider's room is another room: it hears itself only, and nobody hears it
    assert result["outsider"]["chat"] == ["hello from outsider"]
    assert all("hello from outsider" not in result[n]["chat"] for n in members)
