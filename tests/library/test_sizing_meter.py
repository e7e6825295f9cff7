"""The sizing model against the emulator's credit meter, on the bench scenarios.

2 and 4 ServiceBusManager nodes (python-socketio servers, in this process) on an emulator in
``--tier standard`` with a budget too large to throttle; each bench scenario (paced, rate-1k,
room 5 %, broadcast) is emitted, the meter's credits over the scenario are read from
``GET /$emulator/meter``, and the model's prediction for the same nodes, emits and seconds
must agree within 10 %:

* with the batching the nodes achieved (Service Bus messages per emit, as the bench reports
  it; the sizing command's ``--window-ms``), for every scenario;
* with the model's own batching estimate (the adaptive window's rule) the rows are printed,
  not asserted: how many envelopes share a message under load depends on how busy the link
  and this shared machine's CPU are (a busy link coalesces what arrives during a send), so
  that estimate is off by factors both ways; docs/scale.md says so and tells users to pass
  the batching they measure (``--window-ms``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import socketio

from socketio_servicebus import ServiceBusManager
from socketio_servicebus.sizing import Fleet, batch_size, credits_per_message, fixed_credits_per_second
from tests.support.emulator_process import EmulatorProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    config = tmp_path_factory.mktemp("sizing") / "Config.json"
    config.write_text(json.dumps(EmulatorProcess.default_config(
        {"Name": "sizing", "Topics": [{"Name": "size-2"}, {"Name": "size-4"}]})))
    proc = EmulatorProcess(config, extra_args=["--tier", "standard", "--credits-per-second", "1000000"])
    proc.start()
    yield proc
    proc.stop()


def _meter_total(proc: EmulatorProcess) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port_of('sizing')}/$emulator/meter", timeout=5) as r:
        return int(json.load(r)["total"]["used"])


@dataclass
class Scenario:
    name: str
    per_node: int  # emits from each node
    rate: float  # emits/s per node; 0: as fast as the node can
    room: str | None = None


def scenarios(n: int) -> list[Scenario]:
    """The bench's scenarios (bench/manager_bench.py), shortened."""
    return [
        Scenario("paced", int(100 / n * 3), 100 / n),
        Scenario("rate-1k", 1000 * 2, 1000.0, room="rate"),
        Scenario("room 5%", int(500 / n * 3), 500 / n, room="five"),
        Scenario("broadcast", 1500, 0.0),
    ]


async def _emit(sio: socketio.AsyncServer, sc: Scenario) -> float:
    t0 = time.monotonic()
    for s in range(sc.per_node):
        if sc.rate:
            delay = t0 + s / sc.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif s % 8 == 7:
            await asyncio.sleep(0)
        await sio.emit("m", {"s": s, "p": "x" * 60}, room=sc.room)
    return time.monotonic() - t0


async def _quiet(proc: EmulatorProcess) -> int:
    """The meter's total once it stopped moving for 0.6 s (every message sent was received)."""
    last, still = _meter_total(proc), 0.0
    for _ in range(200):
        await asyncio.sleep(0.2)
        now = await asyncio.to_thread(_meter_total, proc)
        still = still + 0.2 if now == last else 0.0
        last = now
        if still >= 0.6:
            break
    return last


@pytest.mark.parametrize("n", [2, 4])
async def test_model_matches_the_meter_within_ten_percent(metered: EmulatorProcess, n: int) -> None:
    conn = metered.connection_string("sizing")
    managers = [ServiceBusManager(connection_string=conn, topic=f"size-{n}", node_id=f"size{n}-{i}")
                for i in range(n)]
    servers = [socketio.AsyncServer(async_mode="aiohttp", client_manager=m, logger=False) for m in managers]
    rows: list[dict[str, Any]] = []
    try:
        for m in managers:
            await m.start()
        assert all([await m.wait_ready(30) for m in managers])
        await asyncio.sleep(1.0)  # hellos answered
        await _quiet(metered)
        for sc in scenarios(n):
            before = await asyncio.to_thread(_meter_total, metered)
            published0 = sum(m.metrics.messages_published for m in managers)
            t0 = time.monotonic()
            durations = await asyncio.gather(*(_emit(s, sc) for s in servers))
            after = await _quiet(metered)
            seconds = time.monotonic() - t0
            emit_seconds = max(durations)
            achieved = sc.per_node / emit_seconds  # emits/s per node, as emitted
            fleet = Fleet(nodes=n, emits_per_second=achieved)
            per_message = sum(credits_per_message(fleet).values())
            fixed = sum(fixed_credits_per_second(fleet).values())
            beats = fixed_credits_per_second(fleet)["send"] * seconds  # heartbeat messages in the window
            published = sum(m.metrics.messages_published for m in managers) - published0
            # the window that yields the achieved batching (sizing --window-ms)
            achieved_b = max(1.0, n * sc.per_node / max(published - beats, 1.0))
            window = achieved_b / achieved if achieved_b > 1 else 0.0
            for label, b in (("achieved batching", batch_size(achieved, window=window)),
                             ("model batching", batch_size(achieved, window=None))):
                rows.append({"scenario": sc.name, "nodes": n, "emits/s/node": round(achieved), "batching": label,
                             "msgs/emit": round(1 / b, 3), "measured": after - before,
                             "predicted": round(n * sc.per_node / b * per_message + fixed * seconds)})
        print("\n" + "\n".join(json.dumps(r) for r in rows))
        for r in rows:
            if r["batching"] == "achieved batching":
                assert abs(r["predicted"] - r["measured"]) <= 0.10 * r["measured"], r
    finally:
        for m in managers:
            await asyncio.wait_for(m.close(), 15)
