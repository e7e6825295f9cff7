"""The local stack supervises itself: a killed Functions runner and a relay node stopped from
outside come back (backoff) and the dashboard shows each restart; a second ``make run`` on the
same run directory refuses with exit 2 and leaves the running stack alone; history (Azurite)
survives a restart of the stack unless ``--fresh``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from local_stack.processes import ROOT
from local_stack.stack import LocalStack, StackBusy, StackPorts

CHAT = ["--app", "relay_node.chat:setup"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def supervised(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    stack = LocalStack(run_dir=tmp_path_factory.mktemp("supervised"), ports=StackPorts.ephemeral(),
                       node_extra_args=CHAT, supervise=True)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def dashboard_state(stack: LocalStack) -> dict[str, Any]:
    assert stack.dashboard is not None
    async with aiohttp.ClientSession() as http, http.get(stack.dashboard.url + "state.json") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body["state"]  # type: ignore[no-any-return]


async def chat_across_regions(stack: LocalStack, sender: str = "a1", receiver: str = "b1") -> None:
    """A chat from ``sender`` reaches ``receiver`` in the other region (through the Functions router)."""
    room = f"sup-{uuid.uuid4().hex[:6]}"
    got: asyncio.Queue[Any] = asyncio.Queue()
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(2)]
    clients[1].on("chat", got.put_nowait)
    try:
        for client, node in zip(clients, (sender, receiver), strict=True):
            await client.connect(stack.node_url(node), transports=["websocket"], wait_timeout=10)
            assert (await client.call("join", room, timeout=10))["ok"]
        await clients[0].call("chat", {"room": room, "text": "across"}, timeout=10)
        msg = await asyncio.wait_for(got.get(), 30)
        assert msg["text"] == "across" and msg["node"] == sender
    finally:
        for client in clients:
            await client.disconnect()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_killed_functions_runner_and_relay_node_come_back_and_show_as_restarted(supervised: LocalStack) -> None:
    stack = supervised
    functions, node = stack.processes["functions"], stack.processes["node-a1"]
    old = {"functions": functions.pid, "node-a1": node.pid}
    a1_port = next(n.port for n in stack.nodes if n.node_id == "a1")
    assert old["functions"] and old["node-a1"]
    os.killpg(old["functions"], signal.SIGKILL)  # a crash
    os.kill(old["node-a1"], signal.SIGTERM)  # stopped from outside: drains, exits 0, is restarted all the same

    deadline = time.monotonic() + 90
    while True:
        state = await dashboard_state(stack)
        services = {s["name"]: s for s in state["services"]}
        nodes = {n["id"]: n for n in state["nodes"]}
        back = all(services.get(name, {}).get("restarts") == 1 and services[name]["state"] == "running"
                   and services[name]["up"] for name in old)
        if back and nodes.get("a1", {}).get("state") == "ready":
            break
        assert time.monotonic() < deadline, f"not restarted: {services}"
        await asyncio.sleep(0.5)
    assert {"functions", "azurite", "emulator"} <= set(services)  # the dashboard lists every process
    assert services["azurite"]["up"] and services["azurite"]["restarts"] == 0
    assert services["functions"]["lastExit"] == -signal.SIGKILL
    assert services["node-a1"]["lastExit"] == 0
    assert nodes["a1"]["restarts"] == 1 and nodes["b1"]["restarts"] == 0
    assert functions.pid != old["functions"] and node.pid != old["node-a1"]
    assert next(n.port for n in stack.nodes if n.node_id == "a1") == a1_port  # same address as before
    await chat_across_regions(stack)  # a1 serves again, and the router (Functions) forwards again


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_second_run_exits_2_names_pid_and_port_and_leaves_the_first_alone(supervised: LocalStack) -> None:
    stack = supervised
    pids = {name: p.pid for name, p in stack.processes.items()}
    logs = {f.name: f.stat().st_size for f in (stack.run_dir / "logs").iterdir()}
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "local_stack", "--ephemeral", "--run-dir", str(stack.run_dir), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 2, (out.decode(), err.decode())
    text = err.decode()
    assert f"PID {os.getpid()}" in text and "port" in text and "already running" in text, text
    assert not out.decode().startswith("starting"), out.decode()
    # nothing of the first stack was touched: same processes, logs kept and still growing
    assert {name: p.pid for name, p in stack.processes.items()} == pids
    assert all(p.alive() for p in stack.processes.values())
    after = {f.name: f.stat().st_size for f in (stack.run_dir / "logs").iterdir()}
    assert all(after.get(name, -1) >= size for name, size in logs.items()), (logs, after)
    await chat_across_regions(stack, "b1", "a2")
    # in-process too: a second LocalStack on the same run directory refuses before touching anything
    with pytest.raises(StackBusy, match=f"PID {os.getpid()}"):
        await LocalStack(run_dir=stack.run_dir, ports=StackPorts.ephemeral()).start()
    assert all(p.alive() for p in stack.processes.values())


async def history_texts(stack: LocalStack, room: str) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(
            stack.functions_url + "/history/server", params={"ns": "/", "room": "chat:" + room},
            headers={"x-functions-key": stack.function_key}) as resp:
        assert resp.status == 200, await resp.text()
        return [e["data"]["text"] for e in (await resp.json())["events"]]


@pytest.mark.slow
async def test_history_survives_a_restart_unless_fresh(tmp_path: Path) -> None:
    room = f"kept-{uuid.uuid4().hex[:6]}"
    first = LocalStack(run_dir=tmp_path, ports=StackPorts.ephemeral(), node_extra_args=CHAT, with_dashboard=False)
    await first.start()
    try:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(first.node_url("a1"), transports=["websocket"], wait_timeout=10)
        assert (await client.call("join", room, timeout=10))["ok"]
        await client.call("chat", {"room": room, "text": "from the first run"}, timeout=10)
        await client.disconnect()
        deadline = time.monotonic() + 30
        while await history_texts(first, room) != ["from the first run"]:
            assert time.monotonic() < deadline, "never persisted"
            await asyncio.sleep(0.3)
    finally:
        await first.stop()

    again = LocalStack(run_dir=tmp_path, ports=StackPorts.ephemeral(), node_extra_args=CHAT, with_dashboard=False)
    await again.start()
    try:
        assert await history_texts(again, room) == ["from the first run"]
    finally:
        await again.stop()

    fresh = LocalStack(run_dir=tmp_path, ports=StackPorts.ephemeral(), node_extra_args=CHAT, with_dashboard=False,
                       emulator_data_dir=tmp_path / "servicebus-data")
    fresh.acquire()
    (tmp_path / "servicebus-data").mkdir(exist_ok=True)
    cleared = fresh.clear_state()  # what --fresh does
    assert tmp_path / "azurite" in cleared and tmp_path / "servicebus-data" in cleared
    await fresh.start()
    try:
        assert await history_texts(fresh, room) == []
    finally:
        await fresh.stop()
