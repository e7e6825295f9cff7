"""``python -m local_stack`` — what ``make run`` starts: the whole system on this machine.

Prints what runs where, then one live status line (nodes up, clients, envelopes/s); Ctrl-C
stops every process it started and leaves no port bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import aiohttp

from .dashboard.collector import counter_rate
from .stack import LocalStack, StackBusy, StackPorts, scrape

RECEIVED = "socketio_servicebus_envelopes_received_total"
PUBLISHED = "socketio_servicebus_envelopes_published_total"
CLIENTS = "relay_connected_clients"


def print_table(stack: LocalStack) -> None:
    rows = stack.describe()
    width = max(len(r[0]) for r in rows)
    print("\nsocketio-servicebus local stack\n")
    for what, region, where in rows:
        print(f"  {what:<{width}}  {region:<12} {where}")
    if stack.dashboard is not None:
        print(f"\ndashboard {stack.dashboard.url}  (live: nodes, regions, subscriptions, dead letters, flow)")
    print(f"\n  emit API key (x-functions-key): {stack.function_key}")
    print("  clients: anonymous (no client auth) and every service on 127.0.0.1 only: a local development")
    print("  stack, not a deployment; see docs/security.md for what a deployment must set.")
    print(f"  try: open {stack.node_url('a1')}/ and {stack.node_url('factory1')}/, join the same room, chat.")
    if stack.emulator_data_dir is not None:
        print(f"  emulator state: {stack.emulator_data_dir} (kept across runs; --fresh starts empty)")
    print(f"  history (Azurite tables): {stack.azurite_dir} (kept across runs; --fresh starts empty)")
    if stack.supervisor is not None:
        print("  a process that dies is restarted (1 s backoff, doubling up to 30 s); see the dashboard")
    print("  logs: .run/logs/   stop: Ctrl-C\n", flush=True)


async def status_loop(stack: LocalStack, stop: asyncio.Event, interval: float) -> None:
    # per node: a node that restarts starts its counters from zero again; that counts from zero,
    # never as a negative rate
    last: dict[str, tuple[float, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not stop.is_set():
            scraped = await asyncio.gather(*(scrape(session, stack.node_url(n.node_id)) for n in stack.nodes))
            up = sum(1 for s in scraped if s)
            clients = int(sum(s.get(CLIENTS, 0) for s in scraped))
            now = time.monotonic()
            rate = 0.0
            for node, values in zip(stack.nodes, scraped, strict=True):
                if not values:
                    continue
                total = values.get(RECEIVED, 0) + values.get(PUBLISHED, 0)
                rate += counter_rate(last.get(node.node_id), now, total) or 0.0
                last[node.node_id] = (now, total)
            dead = [n for n, p in stack.processes.items() if not p.alive()]
            extra = f"  DOWN: {', '.join(dead)}" if dead else ""
            restarted = {r["name"]: r["restarts"] for r in stack.service_rows() if r.get("restarts")}
            if restarted:
                extra += "  restarted: " + ", ".join(f"{n} x{c}" for n, c in restarted.items())
            line = f"nodes {up}/{len(stack.nodes)}  clients {clients}  envelopes/s {rate:8.1f}{extra}"
            if sys.stdout.isatty():
                print("\r" + line.ljust(100), end="", flush=True)
            else:
                print(line, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def run(args: argparse.Namespace) -> int:
    ports = StackPorts.ephemeral() if args.ephemeral else StackPorts()
    stack = LocalStack(ports=ports, supervise=not args.no_supervise,
                       **({"run_dir": Path(args.run_dir)} if args.run_dir else {}))
    stack.emulator_tier = args.tier
    if not args.emulator_in_memory:
        stack.emulator_data_dir = stack.run_dir / "servicebus-data"
    try:
        stack.acquire()  # before anything is touched: a running stack's processes, logs and data stay
    except StackBusy as exc:
        print(f"local-stack: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.fresh:
        for path in stack.clear_state():
            print(f"--fresh: deleted {path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("starting: emulator (2 regions), azurite, web pubsub, functions, 4 relay nodes ...", flush=True)
    try:
        await stack.start()
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero, everything already stopped
        print(f"local-stack: could not start: {exc}", file=sys.stderr)
        stack.release()
        return 1
    print_table(stack)
    deadline = time.monotonic() + args.duration if args.duration else None
    status = asyncio.create_task(status_loop(stack, stop, args.status_interval))
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            stop.set()
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await status
    print("\nstopping ...", flush=True)
    await stack.stop()
    print("stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--ephemeral", action="store_true", help="ephemeral ports instead of 5672/8001.../7071")
    parser.add_argument("--duration", type=float, default=0, help="stop by itself after N seconds (0 = until Ctrl-C)")
    parser.add_argument("--status-interval", type=float, default=2.0)
    parser.add_argument("--run-dir", default=None, help="state, logs and data (default .run/ in the repository)")
    parser.add_argument("--tier", choices=("premium", "standard"), default="premium",
                        help="the emulator's tier: 'standard' throttles at 1,000 credits/s per region as Azure "
                             "does, and the relay nodes batch for it (credit budget); default premium")
    parser.add_argument("--emulator-in-memory", action="store_true",
                        help="run the emulator without --data-dir (its state is gone when it stops)")
    parser.add_argument("--fresh", action="store_true",
                        help="start empty: delete the emulator's RUN_DIR/servicebus-data and Azurite's RUN_DIR/azurite "
                             "(the history) first")
    parser.add_argument("--no-supervise", action="store_true",
                        help="do not restart processes that die (they stay down, shown as DOWN)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
