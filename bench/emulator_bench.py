"""Benchmark of the Service Bus emulator with the real aio SDK (not a test).

    .venv/bin/python bench/emulator_bench.py [--messages 20000] [--batch 100] [--size 64]
                                              [--connections 200] [--out docs/benchmarks-emulator.md]
    .venv/bin/python bench/emulator_bench.py --compare-data-dir [--messages 20000] [--single 300]

``--compare-data-dir`` runs the same sends and receives against the emulator in memory, with
``--data-dir`` (``--fsync on``) and with ``--data-dir --fsync off``, adds peek-lock receives
(complete each) and one-message sends (one commit each), and prints a Markdown table (for
``docs/emulator.md``); it writes no file.

The emulator runs in its own process; its CPU time comes from /proc/<pid>/stat (utime+stime).
Set SERVICEBUS_EMULATOR_PROFILE=/tmp/emu.prof to get a cProfile dump of the emulator run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode  # noqa: E402
from proton import Collector, Connection, Endpoint, Transport  # noqa: E402

from socketio_servicebus.servicebus.clients import servicebus_client  # noqa: E402
from tests.support.emulator_process import EmulatorProcess  # noqa: E402

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "bench",
                "Topics": [{"Name": "bench", "Subscriptions": [{"Name": "a"}, {"Name": "b"}]}],
            }
        ]
    }
}
TARGETS = {"send": 3000.0, "receive": 2000.0, "cpu_ms": 0.2, "connections": 200}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def send_all(cs: str, count: int, batch_size: int, size: int) -> float:
    body = b"x" * size
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("bench") as sender:
            await sender.send_messages(ServiceBusMessage(b"warm-up"))
            start = time.perf_counter()
            sent = 0
            while sent < count:
                batch = await sender.create_message_batch()
                for _ in range(min(batch_size, count - sent)):
                    batch.add_message(ServiceBusMessage(body))
                await sender.send_messages(batch)
                sent += len(batch)
            return time.perf_counter() - start


async def receive_all(cs: str, sub: str, count: int) -> float:
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_subscription_receiver(
            "bench", sub, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, prefetch_count=300
        ) as receiver:
            got = await receiver.receive_messages(max_message_count=1, max_wait_time=5)  # the warm-up message
            start = time.perf_counter()
            got = []
            while len(got) < count:
                batch = await receiver.receive_messages(max_message_count=300, max_wait_time=5)
                if not batch:
                    raise RuntimeError(f"{sub}: only {len(got)} of {count} messages arrived")
                got += batch
            return time.perf_counter() - start


async def receive_complete(cs: str, sub: str, count: int) -> float:
    """Peek-lock receive and complete each message (a lock, then a complete, per message)."""
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_subscription_receiver("bench", sub, prefetch_count=300) as receiver:
            start = time.perf_counter()
            done = 0
            while done < count:
                batch = await receiver.receive_messages(max_message_count=300, max_wait_time=5)
                if not batch:
                    raise RuntimeError(f"{sub}: only {done} of {count} messages arrived")
                await asyncio.gather(*(receiver.complete_message(m) for m in batch))
                done += len(batch)
            return time.perf_counter() - start


async def send_single(cs: str, count: int, size: int) -> float:
    """``count`` sends of one message each, one after the other (each waits for its settlement)."""
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_topic_sender("bench") as sender:
            await sender.send_messages(ServiceBusMessage(b"warm-up"))
            start = time.perf_counter()
            for _ in range(count):
                await sender.send_messages(ServiceBusMessage(b"x" * size))
            return time.perf_counter() - start


async def compare_data_dir(args: argparse.Namespace) -> int:
    """Throughput in memory vs. --data-dir (fsync on / off); prints a Markdown table."""
    modes: list[tuple[str, list[str]]] = [("in memory", []), ("--data-dir, --fsync on", ["on"]),
                                          ("--data-dir, --fsync off", ["off"])]
    n, single = args.messages, args.single
    results: dict[str, dict[str, float]] = {}
    for label, fsync in modes:
        work = Path(tempfile.mkdtemp())
        config = work / "Config.json"
        config.write_text(json.dumps(CONFIG))
        extra = ["--log-level", "WARNING"]
        if fsync:
            extra += ["--data-dir", str(work / "data"), "--fsync", fsync[0]]
        emulator = EmulatorProcess(config, extra_args=extra)
        emulator.start()
        assert emulator.proc is not None
        pid = emulator.proc.pid
        cs = emulator.connection_string("bench")
        try:
            cpu0 = cpu_seconds(pid)
            send_s = await send_all(cs, n, args.batch, args.size)
            recv_a = await receive_all(cs, "a", n)
            recv_b = await receive_complete(cs, "b", n + 1)  # + the warm-up message
            cpu1 = cpu_seconds(pid)
            single_s = await send_single(cs, single, args.size)
            await receive_all(cs, "a", single)
        finally:
            emulator.stop()
        results[label] = {
            "send": n / send_s, "rad": n / recv_a, "peeklock": n / recv_b,
            "cpu_ms": (cpu1 - cpu0) / (2 * n) * 1000, "single_ms": single_s / single * 1000,
        }
        print(label, {k: round(v, 3) for k, v in results[label].items()}, flush=True)
    labels = [m[0] for m in modes]
    rows = [
        (f"batch send ({args.batch}/batch) to a topic with 2 subscriptions", "send", "{:,.0f} msg/s"),
        ("receive-and-delete, prefetch 300", "rad", "{:,.0f} msg/s"),
        ("peek-lock receive + complete each, prefetch 300", "peeklock", "{:,.0f} msg/s"),
        ("emulator CPU per delivered copy (the three above)", "cpu_ms", "{:.3f} ms"),
        (f"one-message send, settled, {single} in a row (latency)", "single_ms", "{:.2f} ms"),
    ]
    print()
    print(f"{n:,} messages of {args.size} B; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print()
    print("| measure | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, key, fmt in rows:
        print(f"| {name} | " + " | ".join(fmt.format(results[lb][key]) for lb in labels) + " |")
    return 0


def hold_connections(port: int, count: int) -> tuple[list[socket.socket], float]:
    socks = []
    start = time.perf_counter()
    for _ in range(count):
        conn = Connection()
        conn.hostname = "localhost"
        transport = Transport()
        transport.sasl().allowed_mechs("ANONYMOUS")
        transport.bind(conn)
        conn.collect(Collector())
        conn.open()
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        deadline = time.monotonic() + 5
        while not conn.state & Endpoint.REMOTE_ACTIVE:
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not answer an AMQP open")
            while (pending := transport.pending()) > 0:
                sock.sendall(transport.peek(pending))
                transport.pop(pending)
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the emulator closed a connection")
            transport.push(data)
        socks.append(sock)
    return socks, time.perf_counter() - start


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-emulator.md"))
    parser.add_argument("--compare-data-dir", action="store_true",
                        help="in memory vs. --data-dir (fsync on/off); prints a table, writes no file")
    parser.add_argument("--single", type=int, default=300, help="one-message sends in --compare-data-dir")
    args = parser.parse_args()
    if args.compare_data_dir:
        return await compare_data_dir(args)

    config = Path(tempfile.mkdtemp()) / "Config.json"
    config.write_text(json.dumps(CONFIG))
    emulator = EmulatorProcess(config, extra_args=["--log-level", "WARNING"])
    emulator.start()
    assert emulator.proc is not None
    pid = emulator.proc.pid
    cs = emulator.connection_string("bench")
    try:
        cpu0 = cpu_seconds(pid)
        send_s = await send_all(cs, args.messages, args.batch, args.size)
        cpu1 = cpu_seconds(pid)
        recv_a = await receive_all(cs, "a", args.messages)
        recv_b = await receive_all(cs, "b", args.messages)
        cpu2 = cpu_seconds(pid)
        socks, open_s = hold_connections(emulator.port_of("bench"), args.connections)
        await asyncio.sleep(0.5)
        alive = emulator.proc.poll() is None
        rss = rss_mb(pid)
        # the SDK still works with all of them held
        t = time.perf_counter()
        async with servicebus_client(connection_string=cs) as client:
            async with client.get_topic_sender("bench") as sender:
                await sender.send_messages(ServiceBusMessage(b"while-held"))
        held_send_s = time.perf_counter() - t
        for sock in socks:
            sock.close()
    finally:
        emulator.stop()

    n = args.messages
    deliveries = 2 * n
    send_rate = n / send_s
    cpu_total = cpu2 - cpu0
    cpu_per_msg_ms = cpu_total / deliveries * 1000
    rows = [
        ("batch send to topic with 2 subscriptions", f"{send_rate:,.0f} msg/s",
         f">= {TARGETS['send']:,.0f} msg/s", send_rate >= TARGETS["send"]),
        ("receive-and-delete, subscription a", f"{n / recv_a:,.0f} msg/s",
         f">= {TARGETS['receive']:,.0f} msg/s", n / recv_a >= TARGETS["receive"]),
        ("receive-and-delete, subscription b", f"{n / recv_b:,.0f} msg/s",
         f">= {TARGETS['receive']:,.0f} msg/s", n / recv_b >= TARGETS["receive"]),
        ("emulator CPU per delivered message (send+fan-out+deliver)", f"{cpu_per_msg_ms:.3f} ms",
         f"<= {TARGETS['cpu_ms']} ms", cpu_per_msg_ms <= TARGETS["cpu_ms"]),
        ("  of which send + fan-out (per delivered copy)", f"{(cpu1 - cpu0) / deliveries * 1000:.3f} ms", "", None),
        ("  of which delivery (per delivered copy)", f"{(cpu2 - cpu1) / deliveries * 1000:.3f} ms", "", None),
        (f"concurrent AMQP connections held (open took {open_s:.2f} s)", f"{len(socks)}",
         f">= {TARGETS['connections']}", alive and len(socks) >= TARGETS["connections"]),
        ("emulator RSS with the connections held", f"{rss:.0f} MB", "", None),
        ("SDK sender open+send+close while they are held", f"{held_send_s:.2f} s", "", None),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  {'result':>14}  {'target':>16}  ok"]
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        lines.append(f"{name:<{width}}  {value:>14}  {target:>16}  {mark}")
    print("\n".join(lines))

    md = [
        "# Emulator benchmark",
        "",
        "Produced by `bench/emulator_bench.py` (real aio `azure-servicebus` SDK over TCP, emulator in its",
        "own process; CPU from `/proc/<pid>/stat`).",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- {n:,} messages of {args.size} B, batches of {args.batch}, topic with 2 subscriptions "
        f"({deliveries:,} deliveries)",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
    ]
    for name, value, target, ok in rows:
        md.append(f"| {name.strip()} | {value} | {target} | {'' if ok is None else ('yes' if ok else 'no')} |")
    md += [
        "",
        "The SDK is the bottleneck on the client side (each `send_messages` / `receive_messages` call",
        "costs it more CPU than the emulator spends on the messages); the CPU-per-message figure is the",
        "emulator's own cost.",
        "",
    ]
    out = Path(args.out)
    await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(out.write_text, "\n".join(md))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
