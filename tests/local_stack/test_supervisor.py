"""The local stack's supervisor over real child processes, the port-holder lookup and the
status line's counter-reset rule."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

from local_stack.dashboard.collector import counter_rate
from local_stack.ports import port_holder
from local_stack.processes import ManagedProcess, ProcessState
from local_stack.supervisor import ServiceState, Supervisor


def sleeper(name: str) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"],
                          ready_pattern="up")


async def wait_for(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_killed_process_is_restarted_and_counted_a_stopped_one_is_not() -> None:
    procs = {"victim": sleeper("victim"), "calm": sleeper("calm")}
    for p in procs.values():
        await p.start(10)
    said: list[str] = []

    async def restart(name: str) -> None:
        await procs[name].start(10)

    sup = Supervisor(lambda: procs, restart, base_delay=0.2, interval=0.05, say=said.append)
    sup.start()
    try:
        first = procs["victim"].pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: sup.entry("victim").restarts == 1)
        rows = {r["name"]: r for r in sup.rows()}
        assert rows["victim"]["state"] == "running" and rows["victim"]["lastExit"] == -signal.SIGKILL
        assert rows["victim"]["pid"] == procs["victim"].pid != first
        assert rows["calm"]["restarts"] == 0
        assert any("victim exited (code -9)" in s for s in said) and any("restarted" in s for s in said)
        await procs["calm"].stop(5)  # stopped on purpose: not a death
        assert procs["calm"].state is ProcessState.STOPPED
        await asyncio.sleep(0.3)
        assert sup.entry("calm").state is ServiceState.RUNNING and sup.entry("calm").restarts == 0
    finally:
        await sup.stop()
        for p in procs.values():
            await p.stop(5)


async def test_quick_deaths_back_off_doubling() -> None:
    proc = ManagedProcess("crashy", [sys.executable, "-c", "raise SystemExit(3)"])
    await proc.start()
    starts: list[float] = []

    async def restart(name: str) -> None:
        starts.append(time.monotonic())
        await proc.start()

    sup = Supervisor(lambda: {"crashy": proc}, restart, base_delay=0.2, max_delay=0.8, interval=0.02,
                     say=lambda s: None)
    sup.start()
    try:
        await wait_for(lambda: len(starts) >= 4, 10)
    finally:
        await sup.stop()
        await proc.stop(5)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 0.35 and gaps[1] >= 0.75 and gaps[2] >= 0.75, gaps  # 0.4, 0.8, then capped at 0.8
    assert sup.entry("crashy").last_exit == 3


def test_port_holder_names_the_pid() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        holder = port_holder(port)
        assert holder is not None and f"PID {os.getpid()}" in holder
    assert port_holder(port) is None


def test_a_counter_reset_counts_from_zero_never_negative() -> None:
    assert counter_rate((0.0, 5000.0), 2.0, 10.0) == 5.0  # restarted: 10 since the reset
    assert counter_rate((0.0, 10.0), 2.0, 30.0) == 10.0
    assert counter_rate(None, 2.0, 30.0) is None


async def test_the_dashboard_lists_processes_up_or_not_and_a_nodes_restarts() -> None:
    import aiohttp

    from local_stack.dashboard import Collector, NodeTarget
    from local_stack.processes import free_port

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        rows = [{"name": "azurite", "state": "running", "restarts": 0, "port": listening.getsockname()[1]},
                {"name": "functions", "state": "restarting", "restarts": 2, "port": free_port()},
                {"name": "node-n1", "state": "running", "restarts": 1, "port": free_port()}]
        c = Collector(lambda: [NodeTarget("n1", "r1", False, f"http://127.0.0.1:{rows[2]['port']}")], lambda: [],
                      services=lambda: rows, probe_timeout=0.5)
        async with aiohttp.ClientSession() as session:
            await c.tick(session)
    services = {s["name"]: s for s in c.state["services"]}
    assert services["azurite"]["up"] is True and services["functions"]["up"] is False
    assert services["functions"]["state"] == "restarting" and services["functions"]["restarts"] == 2
    node = c.state["nodes"][0]
    assert node["state"] == "down" and node["restarts"] == 1 and node["process"] == "running"
