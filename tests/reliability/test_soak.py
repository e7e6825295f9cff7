"""Soak: clients on every node (two regions, one of them the on-premise node) chat for
``SOAK_SECONDS`` (default 60, at most 600) through the whole local stack.

Zero loss with peek-lock (every acknowledged chat reaches every client in the room, once), and
every process of the stack stays flat: RSS at the end within +15 MB or +20 % of RSS at 25 % of
the run (whichever is larger), open file descriptors within +5. Azurite keeps its tables in
memory, so its RSS grows with the stored history by design: it is printed, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import pytest

from local_stack.processes import ROOT
from local_stack.stack import LocalStack

from .support import cpu_seconds, fd_count, figure, rss_bytes, wait_until
from .test_faults import Chatter, new_room

SOAK_SECONDS = min(600.0, max(10.0, float(os.environ.get("SOAK_SECONDS", "60"))))
RATE_PER_CLIENT = float(os.environ.get("SOAK_RATE", "8"))  # chats per second per client
RSS_MARGIN_BYTES = 15 * 2**20
RSS_MARGIN_RATIO = 0.20
FD_MARGIN = 5
#: The Functions process keeps pooled keep-alive HTTP connections to Table Storage and Web PubSub
#: (one aiohttp pool each); they warm up to the concurrency of the triggers and then plateau
#: (measured: 36 -> 40 established sockets in the first 10 s at 4 x 10 chats/s, then flat for
#: 90 s). So its bound is the pool's worst case, two pools x host.json maxConcurrentCalls; a leak
#: of a socket per call grows past it within seconds at this rate.
_CONCURRENCY = json.loads((ROOT / "host.json").read_text())["extensions"]["serviceBus"]["maxConcurrentCalls"]
FD_MARGIN_BY_PROCESS = {"functions": 2 * _CONCURRENCY, "azurite": 2 * _CONCURRENCY}
UNASSERTED_RSS = {"azurite"}

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(int(SOAK_SECONDS) + 240)]


def sample(stack: LocalStack) -> dict[str, dict[str, float]]:
    out = {}
    for name, proc in stack.processes.items():
        if proc.pid and proc.alive():
            out[name] = {"rss": rss_bytes(proc.pid), "fds": fd_count(proc.pid), "cpu": cpu_seconds(proc.pid)}
    return out


async def test_soak_chat_across_regions_zero_loss_flat_rss_and_fds(stack: LocalStack) -> None:
    room = new_room("soak")
    nodes = ("a1", "a2", "b1", "factory1")
    chatters = {n: Chatter(stack.node_url(n), room, rate=RATE_PER_CLIENT) for n in nodes}
    for c in chatters.values():
        c.client.name = f"client@{c.url}"
    await asyncio.gather(*(c.connect() for c in chatters.values()))  # everyone has joined ...
    for c in chatters.values():  # ... before anyone speaks
        c.begin()
    start = time.monotonic()
    timeline: dict[str, list[int]] = {}
    early: dict[str, dict[str, float]] = {}
    for step in range(1, 11):  # a sample every 10 % of the run; "early" is the one at 25 %
        await asyncio.sleep(start + SOAK_SECONDS * step / 10 - time.monotonic())
        now = sample(stack)
        for name, v in now.items():
            timeline.setdefault(name, []).append(int(v["fds"]))
        if step == 2:
            await asyncio.sleep(start + SOAK_SECONDS * 0.25 - time.monotonic())
            early = sample(stack)
    await asyncio.gather(*(c.stop(close=False) for c in chatters.values()))
    ran = time.monotonic() - start
    acked = set().union(*(c.acked for c in chatters.values()))
    receivers = {n: c.client for n, c in chatters.items()}
    try:
        await wait_until(lambda: all(acked <= r.ids("chat") for r in receivers.values()), 30, "deliveries settle")
    except AssertionError:
        pass  # reported below
    await asyncio.sleep(2.0)
    late = sample(stack)
    for r in receivers.values():
        await r.close()
    lost = {n: len(acked - r.ids("chat")) for n, r in receivers.items()}
    sender_of = {i: (n, round(t - start, 2)) for n, c in chatters.items() for i, t in c.acked.items()}
    lost_detail = {n: sorted(sender_of[i] for i in acked - r.ids("chat"))[:10] for n, r in receivers.items()
                   if acked - r.ids("chat")}
    dups = {n: r.duplicated("chat") for n, r in receivers.items()}
    lags = sorted(x for r in receivers.values() for x in r.lags)
    procs = {}
    for name in sorted(late):
        if name not in early:
            continue
        e, l_ = early[name], late[name]
        procs[name] = {"rss_mb": [round(e["rss"] / 2**20, 1), round(l_["rss"] / 2**20, 1)],
                       "fds": [int(e["fds"]), int(l_["fds"])], "cpu_s": round(l_["cpu"], 1)}
    figure("soak", seconds=round(ran, 1), clients=len(nodes), rate_per_client=RATE_PER_CLIENT,
           chats_acked=len(acked), send_failures=sum(c.failed for c in chatters.values()),
           deliveries=sum(len(r.ids("chat") & acked) for r in receivers.values()),
           lost=sum(lost.values()), lost_detail=lost_detail, duplicated=sum(dups.values()),
           lag_ms_p50=round(statistics.median(lags) * 1000, 1) if lags else None,
           lag_ms_p99=round(lags[int(len(lags) * 0.99) - 1] * 1000, 1) if lags else None,
           processes=procs, fd_timeline=timeline, rss_rule="end <= max(early+15MB, early*1.2), early = 25% of the run", fd_rule=f"end <= early+{FD_MARGIN} (functions, azurite: +{2 * _CONCURRENCY}, their HTTP pools)")
    assert len(acked) >= 0.5 * RATE_PER_CLIENT * len(nodes) * SOAK_SECONDS * 0.5  # the load really ran
    assert sum(lost.values()) == 0, lost
    assert sum(dups.values()) == 0, dups
    for name, p in procs.items():
        assert stack.processes[name].alive(), name
        early_rss, late_rss = early[name]["rss"], late[name]["rss"]
        if name not in UNASSERTED_RSS:
            assert late_rss <= max(early_rss + RSS_MARGIN_BYTES, early_rss * (1 + RSS_MARGIN_RATIO)), (name, p)
        assert late[name]["fds"] <= early[name]["fds"] + FD_MARGIN_BY_PROCESS.get(name, FD_MARGIN), (name, p)
