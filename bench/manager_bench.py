# ruff: noqa: ASYNC109
"""Manager benchmark (not a test): the same python-socketio app and the same clients with

  (a) one node and no manager (the ceiling),
  (b) python-socketio's AsyncRedisManager on a local redis-server,
  (c) shared.ServiceBusManager on the Service Bus emulator.

    .venv/bin/python bench/manager_bench.py --quick        # reduced matrix, <= 3 min
    .venv/bin/python bench/manager_bench.py                # full matrix, <= 20 min
    options: --out docs/benchmarks.md (write the report), --no-write, --only redis,sb,
             --broker-rtt-ms 2 (a delaying TCP proxy, bench/rtt_proxy.py, in front of both
             brokers), --tier standard (the emulator throttles at 1,000 credits/s)
    trust zones on (sign + verify every message): --sb-variant 'zones={"_zones": true}'

Every server node (AsyncServer on aiohttp, 127.0.0.1, ephemeral port) runs in its own process;
the clients (socketio.AsyncClient over websocket) live in two client processes; redis-server
and the emulator run in their own processes.  All of them are stopped by PID at the end.

Per scenario: delivered messages/s, latency p50/p99 same-node vs cross-node (send timestamp
taken just before ``sio.emit``, receive timestamp when the client's engine.io read loop has the
frame, CLOCK_MONOTONIC is shared by all processes), CPU seconds of every process from
/proc/<pid>/stat, messages lost and duplicated, and Service Bus messages per emit (from the
manager's ``messages_published`` counter read over HTTP from each node), and Service Bus credits
per emit (the emulator's meter, ``GET /$emulator/meter``, read directly, not through the proxy).

``BENCH_PROFILE=/tmp/prof`` runs each server node under cProfile and dumps
``/tmp/prof/<backend>-<nodes>n-<index>.prof`` when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    Child,
    cpu_seconds,
    free_port,
    machine_info,
    percentile,
    start_emulator,
    start_redis,
)

PY = sys.executable
HERE = Path(__file__).resolve()
EVENT = "m"
TOPICS = 12


# =====================================================================================
# server node process
# =====================================================================================
def _bench_tracing(ratio: float, node: str) -> None:
    """An SDK as a node would run it (parent-based ratio sampler, batch span processor), whose
    exporter encodes every batch to OTLP protobuf like the OTLP exporter and drops the bytes:
    the CPU of recording, sampling and encoding, without a collector's network round trips."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class EncodeOnly(SpanExporter):
        encoded = 0

        def export(self, spans: Any) -> SpanExportResult:
            EncodeOnly.encoded += len(encode_spans(spans).SerializeToString())
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "service.instance.id": node}),
                              sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(EncodeOnly()))
    trace.set_tracer_provider(provider)


async def server_main(a: argparse.Namespace) -> None:
    import socketio
    from aiohttp import web

    if a.backend == "redis":
        mgr: Any = socketio.AsyncRedisManager(a.redis_url, channel=a.channel)
    elif a.backend == "sb":
        from socketio_servicebus import ServiceBusManager

        extra = json.loads(os.environ.get("BENCH_SB_OPTIONS", "{}"))  # e.g. {"send_interval": 0}
        if "_linger" in extra:  # bench only: other Linger parameters, e.g. {"_linger": {"busy": 2}}
            import functools

            from socketio_servicebus.manager import linger as linger_mod
            from socketio_servicebus.manager import outbox as outbox_mod

            outbox_mod.Linger = functools.partial(linger_mod.Linger, **extra.pop("_linger"))  # type: ignore[misc]
        if extra.pop("_zones", False):  # bench only: trust zones on, every node in the cloud zone
            import base64
            import hashlib

            from socketio_servicebus.zones import load_zones

            seed = base64.urlsafe_b64encode(hashlib.sha256(b"manager-bench zone").digest()).decode()  # not a secret
            extra["zones"] = load_zones({"SIO_ZONE": "cloud", "SIO_ZONE_KEY": seed})
        if "_otel" in extra:  # bench only: tracing on, e.g. {"_otel": {"ratio": 0.01}}
            _bench_tracing(float(extra.pop("_otel")["ratio"]), f"{a.channel}-{a.index}")
        mgr = ServiceBusManager(connection_string=a.sb_conn, topic=a.topic, node_id=f"{a.channel}-{a.index}",
                                **extra)
    else:
        mgr = None
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)
    emits: dict[int, dict[str, Any]] = {}

    @sio.event
    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    async def emit_loop(sc: int, count: int, rate: float, pad: str, room: str | None) -> None:
        st = emits[sc]
        t0 = time.monotonic()
        for s in range(count):
            if rate:
                delay = t0 + s / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif s % 8 == 7:
                await asyncio.sleep(0)
            ts = time.monotonic()
            if s == 0:
                st["t_first"] = ts
            await sio.emit(EVENT, {"c": sc, "n": a.index, "s": s, "t": ts, "p": pad}, room=room)
            st["emitted"] = s + 1
        st["t_last"] = time.monotonic()
        st["done"] = True

    async def info(_: web.Request) -> web.Response:
        snap = mgr.metrics.snapshot() if a.backend == "sb" else {}
        clients = sum(len(ns.get(None, ())) for ns in sio.manager.rooms.values())
        return web.json_response({"pid": os.getpid(), "clients": clients, "metrics": snap})

    async def emit(req: web.Request) -> web.Response:
        b = await req.json()
        emits[b["sc"]] = {"done": False, "emitted": 0, "t_first": None, "t_last": None}
        pad = "x" * int(b["pad"])
        task = asyncio.ensure_future(emit_loop(b["sc"], b["count"], b["rate"], pad, b.get("room")))
        app["tasks"].add(task)
        task.add_done_callback(app["tasks"].discard)
        return web.json_response({"ok": True})

    async def emit_status(req: web.Request) -> web.Response:
        return web.json_response(emits.get(int(req.query["sc"]), {}))

    app["tasks"] = set()
    app.router.add_get("/bench/info", info)
    app.router.add_post("/bench/emit", emit)
    app.router.add_get("/bench/emit", emit_status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if a.backend == "sb":
        await mgr.start()
        if not await mgr.wait_ready(30):
            print(f"NOTREADY {mgr.health()}", flush=True)
    elif a.backend == "redis":
        sio.manager_initialized = True  # python-socketio would initialize it again at the first connect
        mgr.initialize()  # subscribe now, not at the first connection
        await asyncio.sleep(0.2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    if a.backend == "sb":
        print("METRICS " + json.dumps(mgr.metrics.snapshot()), flush=True)
        try:
            await asyncio.wait_for(mgr.close(), 10)
        except Exception as exc:  # noqa: BLE001 - benchmark teardown goes on; said on stderr
            print(f"bench: manager close failed: {exc!r}", file=sys.stderr)
    try:
        await asyncio.wait_for(runner.cleanup(), 5)
    except Exception as exc:  # noqa: BLE001 - benchmark teardown goes on; said on stderr
        print(f"bench: server cleanup failed: {exc!r}", file=sys.stderr)


def run_server(a: argparse.Namespace) -> None:
    prof_dir = os.environ.get("BENCH_PROFILE")
    if prof_dir:
        import cProfile

        Path(prof_dir).mkdir(parents=True, exist_ok=True)
        prof = cProfile.Profile()
        prof.enable()
        try:
            asyncio.run(server_main(a))
        finally:
            prof.disable()
            prof.dump_stats(str(Path(prof_dir) / f"{a.backend}-{a.nodes}n-{a.index}.prof"))
    else:
        asyncio.run(server_main(a))


# =====================================================================================
# client process
# =====================================================================================
class _Scenario:
    def __init__(self, members: set[int] | None, emitters: dict[int, int]):
        self.members = members
        self.emitters = emitters
        self.received = 0
        self.dups = 0
        self.stray = 0
        self.first = float("inf")
        self.last = 0.0
        self.same: list[float] = []
        self.cross: list[float] = []
        self.got: dict[int, set[int]] = {}


async def clients_main(a: argparse.Namespace) -> None:
    import engineio.async_client as eac
    import engineio.packet as epk
    import socketio
    from aiohttp import web

    orig = eac.AsyncClient._receive_packet
    prefix = f'2["{EVENT}"'

    async def receive_packet(self: Any, pkt: Any) -> None:
        # the receive timestamp: the frame has just been read from the websocket
        if pkt.packet_type == epk.MESSAGE and isinstance(pkt.data, str) and pkt.data.startswith(prefix):
            self.bench_ts.append(time.monotonic())
        await orig(self, pkt)

    eac.AsyncClient._receive_packet = receive_packet  # type: ignore[method-assign]

    clients: dict[int, dict[str, Any]] = {}
    scenarios: dict[int, _Scenario] = {}

    def make(cid: int, node: int) -> dict[str, Any]:
        sio = socketio.AsyncClient(reconnection=False)
        tsq: deque[float] = deque()
        sio.eio.bench_ts = tsq
        cl = {"id": cid, "node": node, "sio": sio}

        @sio.on(EVENT)
        async def on_m(d: dict[str, Any]) -> None:
            tr = tsq.popleft() if tsq else time.monotonic()
            sc = scenarios.get(d["c"])
            if sc is None:
                return
            sc.received += 1
            if sc.members is not None and cid not in sc.members:
                sc.stray += 1
                return
            got = sc.got.setdefault(cid, set())
            key = d["n"] * 10_000_000 + d["s"]
            if key in got:
                sc.dups += 1
                return
            got.add(key)
            if tr < sc.first:
                sc.first = tr
            if tr > sc.last:
                sc.last = tr
            (sc.same if d["n"] == node else sc.cross).append(tr - d["t"])

        return cl

    async def connect(req: web.Request) -> web.Response:
        b = await req.json()
        sem = asyncio.Semaphore(32)
        failed = 0

        async def one(cid: int, node: int, url: str) -> None:
            nonlocal failed
            async with sem:
                cl = make(cid, node)
                try:
                    await cl["sio"].connect(url, transports=["websocket"], wait_timeout=20)
                    clients[cid] = cl
                except Exception:  # noqa: BLE001 - a failed connect is counted and reported
                    failed += 1

        await asyncio.gather(*(one(*c) for c in b["clients"]))
        return web.json_response({"connected": len(clients), "failed": failed})

    async def join(req: web.Request) -> web.Response:
        b = await req.json()
        res = await asyncio.gather(*(clients[i]["sio"].call("join", b["room"], timeout=15)
                                     for i in b["ids"] if i in clients), return_exceptions=True)
        return web.json_response({"ok": sum(1 for r in res if r == "ok")})

    async def expect(req: web.Request) -> web.Response:
        b = await req.json()
        members = set(b["members"]) if b.get("members") is not None else None
        scenarios[b["sc"]] = _Scenario(members, {int(k): v for k, v in b["emitters"].items()})
        return web.json_response({"ok": True})

    def expected_total(sc: _Scenario) -> int:
        per = sum(sc.emitters.values())
        n = len(clients) if sc.members is None else len(sc.members & clients.keys())
        return per * n

    async def progress(req: web.Request) -> web.Response:
        sc = scenarios[int(req.query["sc"])]
        unique = sum(len(g) for g in sc.got.values())
        return web.json_response({"received": unique, "expected": expected_total(sc)})

    async def report(req: web.Request) -> web.Response:
        sc = scenarios.pop(int(req.query["sc"]))
        missing = 0
        for cid in clients:
            if sc.members is not None and cid not in sc.members:
                continue
            got = sc.got.get(cid, set())
            for n, cnt in sc.emitters.items():
                base = n * 10_000_000
                missing += sum(1 for s in range(cnt) if base + s not in got)
        return web.json_response({
            "received": sc.received, "expected": expected_total(sc), "missing": missing, "dups": sc.dups,
            "stray": sc.stray, "first": sc.first if sc.received else None, "last": sc.last,
            "same": [round(x, 6) for x in sc.same], "cross": [round(x, 6) for x in sc.cross],
        })

    async def disconnect(_: web.Request) -> web.Response:
        sem = asyncio.Semaphore(64)

        async def one(cl: dict[str, Any]) -> None:
            async with sem:
                try:
                    await asyncio.wait_for(cl["sio"].disconnect(), 5)
                except Exception:  # noqa: BLE001 - teardown of a client the run no longer measures
                    pass

        await asyncio.gather(*(one(c) for c in clients.values()))
        clients.clear()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/connect", connect)
    app.router.add_post("/join", join)
    app.router.add_post("/expect", expect)
    app.router.add_get("/progress", progress)
    app.router.add_get("/report", report)
    app.router.add_post("/disconnect", disconnect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"READY {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    await stop.wait()
    await runner.cleanup()


# =====================================================================================
# orchestrator
# =====================================================================================
class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.quick = a.quick
        self.results: list[dict[str, Any]] = []
        self.run_no = 0
        self.runs_done = 0
        self.failures: list[str] = []
        self.elapsed = 0.0
        #: "sb:<name>" -> ServiceBusManager keyword arguments (2-node groups, reduced scenarios)
        self.variants: dict[str, dict[str, Any]] = {f"sb:{k}": v for k, v in a.sb_variant}
        self.sc_id = 0
        self.redis: Child | None = None
        self.emu: Any = None
        self.client_procs: list[tuple[Child, str]] = []
        self.servers: list[tuple[Child, str]] = []
        self.http: Any = None
        self.topic_no = 0
        self.server_metrics: list[dict[str, Any]] = []
        self.proxies: list[Child] = []
        self.redis_port = 0
        self.sb_conn = ""
        self.meter_url = ""

    # ------------------------------------------------------------------ infra
    async def start_infra(self, tmp: Path) -> None:
        backends = self.a.only
        if "redis" in backends:
            self.redis = start_redis(free_port())
            self.redis_port = int(self.redis.proc.args[2])
            print(f"redis-server pid {self.redis.pid}", flush=True)
            self.redis_port = self.through_proxy(self.redis_port)
        if "sb" in backends:
            cfg = {"UserConfig": {"Namespaces": [{"Name": "bench", "Topics": [
                {"Name": f"bench-{i}"} for i in range(TOPICS)]}], "Logging": {"Type": "Console"}}}
            self.emu = start_emulator(cfg, tmp / "Config.json", ["--tier", self.a.tier])
            print(f"emulator pid {self.emu.proc.pid} (tier {self.a.tier})", flush=True)
            port = self.emu.port_of("bench")
            self.meter_url = f"http://127.0.0.1:{port}/$emulator/meter"
            proxied = self.through_proxy(port)
            self.sb_conn = self.emu.connection_string("bench").replace(f":{port};", f":{proxied};")
        for i in range(2):
            c = Child([PY, str(HERE), "--role", "clients"], name=f"clients-{i}")
            port = c.wait_for(r"READY (\d+)", 30).group(1)
            self.client_procs.append((c, f"http://127.0.0.1:{port}"))

    def through_proxy(self, port: int) -> int:
        """``port``, or with ``--broker-rtt-ms`` the port of a delaying proxy in front of it."""
        if not self.a.broker_rtt_ms:
            return port
        c = Child([PY, str(HERE.parent / "rtt_proxy.py"), "--target", f"127.0.0.1:{port}",
                   "--rtt-ms", str(self.a.broker_rtt_ms)], name=f"rtt-proxy-{port}")
        proxied = int(c.wait_for(r"READY (\d+)", 15).group(1))
        self.proxies.append(c)
        print(f"rtt proxy pid {c.pid}: 127.0.0.1:{proxied} -> {port}, +{self.a.broker_rtt_ms} ms", flush=True)
        return proxied

    async def meter(self) -> dict[str, int]:
        if not self.meter_url:
            return {"used": 0, "refused": 0, "refused_operations": 0}
        snap = await self.get(self.meter_url, "")
        return {k: int(snap["total"][k]) for k in ("used", "refused", "refused_operations")}

    def infra_pid(self, backend: str) -> int | None:
        backend = backend.split(":")[0]
        if backend == "redis" and self.redis:
            return self.redis.pid
        if backend == "sb" and self.emu:
            return int(self.emu.proc.pid)
        return None

    async def stop_all(self) -> None:
        await self.stop_servers()
        for c, _ in self.client_procs:
            c.stop()
        if self.redis:
            self.redis.stop()
        if self.emu:
            self.emu.stop()
        for c in self.proxies:
            c.stop()

    # ------------------------------------------------------------------ servers
    async def start_servers(self, backend: str, n: int) -> None:
        env = None
        if ":" in backend:  # an sb variant: the same manager with extra keyword arguments
            env = {"BENCH_SB_OPTIONS": json.dumps(self.variants[backend])}
            backend = "sb"
        self.topic_no += 1
        channel = f"bench{os.getpid()}g{self.topic_no}"
        args = []
        if backend == "redis":
            assert self.redis is not None
            args = ["--redis-url", f"redis://127.0.0.1:{self.redis_port}/0"]
        elif backend == "sb":
            args = ["--sb-conn", self.sb_conn, "--topic", f"bench-{self.topic_no % TOPICS}"]
        procs = [Child([PY, str(HERE), "--role", "server", "--backend", backend, "--index", str(i), "--nodes", str(n),
                        "--channel", channel, *args], name=f"server-{backend}-{i}", env=env) for i in range(n)]
        for c in procs:
            m = c.wait_for(r"(READY|NOTREADY) ?(\S*)", 60)
            if m.group(1) != "READY":
                raise RuntimeError(f"{c.name} not ready: {m.group(0)}")
            self.servers.append((c, f"http://127.0.0.1:{m.group(2)}"))
        if backend == "sb":
            await asyncio.sleep(1.0)  # hello/heartbeat exchange settles

    async def stop_servers(self) -> None:
        await asyncio.gather(*(self.post(u, "/disconnect", {}, timeout=60) for _, u in self.client_procs),
                             return_exceptions=True)
        for c, _ in self.servers:
            try:
                os.kill(c.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for c, _ in self.servers:
            c.stop(20)
            for m in c.find(r"METRICS (.*)$"):
                self.server_metrics.append({"server": c.name, **json.loads(m.group(1))})
        self.servers = []

    # ------------------------------------------------------------------ http
    async def post(self, base: str, path: str, body: Any, timeout: float = 30) -> Any:
        async with self.http.post(base + path, json=body, timeout=timeout) as r:
            return await r.json()

    async def get(self, base: str, path: str, timeout: float = 30) -> Any:
        async with self.http.get(base + path, timeout=timeout) as r:
            return await r.json()

    async def connect_clients(self, total: int, have: int) -> None:
        """Clients ``have .. total-1``; client i goes to node i % N and client process i % 2."""
        n = len(self.servers)
        per_proc: list[list[Any]] = [[], []]
        for i in range(have, total):
            per_proc[i % 2].append([i, i % n, self.servers[i % n][1]])
        res = await asyncio.gather(*(self.post(u, "/connect", {"clients": per_proc[k]}, timeout=180)
                                     for k, (_, u) in enumerate(self.client_procs)))
        connected = sum(r["connected"] for r in res)
        failed = sum(r["failed"] for r in res)
        if connected != total or failed:
            raise RuntimeError(f"connected {connected}/{total} clients ({failed} failed)")

    async def join(self, ids: list[int], room: str) -> None:
        res = await asyncio.gather(*(self.post(u, "/join", {"room": room, "ids": [i for i in ids if i % 2 == k]})
                                     for k, (_, u) in enumerate(self.client_procs)))
        if sum(r["ok"] for r in res) != len(ids):
            raise RuntimeError(f"join {room}: {res}")

    # ------------------------------------------------------------------ one scenario
    async def scenario(self, backend: str, name: str, *, clients: int, pad: int, counts: list[int],
                       rate: float = 0.0, room: str | None = None, members: list[int] | None = None,
                       payload: str = "") -> dict[str, Any]:
        """``counts[i]`` emits from node i (``rate`` emits/s each, 0 = as fast as possible)."""
        if self.a.scenarios and name not in self.a.scenarios:
            return {}
        self.sc_id += 1
        sc = self.sc_id
        n = len(self.servers)
        emitters = {i: c for i, c in enumerate(counts) if c}
        await asyncio.gather(*(self.post(u, "/expect", {"sc": sc, "emitters": emitters, "members": members})
                               for _, u in self.client_procs))
        pids = {"nodes": [c.pid for c, _ in self.servers], "clients": [c.pid for c, _ in self.client_procs]}
        ipid = self.infra_pid(backend)
        pids["infra"] = [ipid] if ipid else []
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        m0 = await asyncio.gather(*(self.get(u, "/bench/info") for _, u in self.servers))
        meter0 = await self.meter() if backend.startswith("sb") else None
        await asyncio.gather(*(self.post(self.servers[i][1], "/bench/emit",
                                         {"sc": sc, "count": c, "rate": rate, "pad": pad, "room": room})
                               for i, c in emitters.items()))
        emit_time = max(counts) / rate if rate else 0.0
        deadline = time.monotonic() + emit_time + (20 if self.quick else 40)
        timed_out = False
        while True:
            await asyncio.sleep(0.1)
            prog = await asyncio.gather(*(self.get(u, f"/progress?sc={sc}") for _, u in self.client_procs))
            if sum(p["received"] for p in prog) >= sum(p["expected"] for p in prog):
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
        st = await asyncio.gather(*(self.get(self.servers[i][1], f"/bench/emit?sc={sc}") for i in emitters))
        await asyncio.sleep(0.3)  # late duplicates would show up here
        meter1 = await self.meter() if backend.startswith("sb") else None
        cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        m1 = await asyncio.gather(*(self.get(u, "/bench/info") for _, u in self.servers))
        reps = await asyncio.gather(*(self.get(u, f"/report?sc={sc}", timeout=60) for _, u in self.client_procs))
        same = [x for r in reps for x in r["same"]]
        cross = [x for r in reps for x in r["cross"]]
        received = len(same) + len(cross)
        expected = sum(r["expected"] for r in reps)
        t_first = min(s["t_first"] for s in st if s.get("t_first"))
        t_last_emit = max(s["t_last"] or 0 for s in st)
        last = max(r["last"] for r in reps)
        emits = sum(counts)
        sb_msgs = sum(b["metrics"].get("messages_published", 0) - a["metrics"].get("messages_published", 0)
                      for a, b in zip(m0, m1, strict=True))
        sb_envs = sum(b["metrics"].get("envelopes_published", 0) - a["metrics"].get("envelopes_published", 0)
                      for a, b in zip(m0, m1, strict=True))
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        dur = max(last - t_first, 1e-9)
        emit_dur = max(t_last_emit - t_first, 1e-9)
        res = {
            "run": self.run_no,
            "backend": backend, "scenario": name, "nodes": n, "clients": clients, "payload": payload,
            "emits": emits, "expected": expected, "delivered": received,
            "lost": sum(r["missing"] for r in reps), "dups": sum(r["dups"] for r in reps),
            "stray": sum(r["stray"] for r in reps), "timed_out": timed_out,
            "seconds": dur, "msgs_per_s": received / dur, "emits_per_s_per_node": max(counts) / emit_dur,
            "same_p50": percentile(same, 50) * 1e3, "same_p99": percentile(same, 99) * 1e3,
            "cross_p50": percentile(cross, 50) * 1e3, "cross_p99": percentile(cross, 99) * 1e3,
            "cpu_nodes": cpu["nodes"], "cpu_infra": cpu["infra"], "cpu_clients": cpu["clients"],
            "node_us_per_msg": cpu["nodes"] / max(received, 1) * 1e6,
            "all_us_per_msg": (cpu["nodes"] + cpu["infra"]) / max(received, 1) * 1e6,
            "sb_msgs": sb_msgs, "sb_envs": sb_envs,
            "sb_msgs_per_emit": sb_msgs / emits if backend.startswith("sb") else None,
            "credits_per_emit": (meter1["used"] - meter0["used"]) / emits if meter0 and meter1 else None,
            "credits_refused": meter1["refused_operations"] - meter0["refused_operations"] if meter0 and meter1 else None,
            "rtt_ms": self.a.broker_rtt_ms,
        }
        self.results.append(res)
        print(fmt_row(res), flush=True)
        return res

    # ------------------------------------------------------------------ one group (backend, nodes)
    async def group(self, backend: str, n: int) -> None:
        q = self.quick
        print(f"--- {backend}, {n} node(s)", flush=True)
        await self.start_servers(backend, n)
        try:
            have = 0
            # paced latency: 100 emits/s in total, 20 clients
            await self.connect_clients(20, have)
            have = 20
            secs = 4 if q else 10
            per_node_rate = 100 / n
            await self.scenario(backend, "paced", clients=20, pad=60, payload="100 B",
                                counts=[int(per_node_rate * secs)] * n, rate=per_node_rate)
            # paced from ONE node (a single busy node): 100 and 300 emits/s from node 0
            for one_rate, one_secs in ((100, 4 if q else 10), (300, 3 if q else 5)):
                await self.scenario(backend, f"paced1-{one_rate}", clients=20, pad=60, payload="100 B",
                                    counts=[one_rate * one_secs] + [0] * (n - 1), rate=one_rate)
            if n > 1:
                # >= 1,000 emits/s per node to a room with one member on each node
                await self.join(list(range(n)), "rate")
                secs = 2 if q else 4
                await self.scenario(backend, "rate-1k", clients=n, pad=60, payload="100 B", rate=1200,
                                    counts=[1000 * secs] * n, room="rate", members=list(range(n)))
            for total in (100, 500):
                await self.connect_clients(total, have)
                have = total
                sizes = [(60, "100 B"), (4000, "4 KiB")]
                if (q or ":" in backend) and total == 500:
                    sizes = sizes[:1]
                if ":" in backend:
                    sizes = sizes[:1] if total == 100 else []
                for pad, label in sizes:
                    deliveries = (40_000 if pad < 1000 else 16_000) if q else (60_000 if pad < 1000 else 24_000)
                    emits = max(n, deliveries // total)
                    await self.scenario(backend, "broadcast", clients=total, pad=pad, payload=label,
                                        counts=[emits // n] * n)
            # a room held by 5 % of 500 clients, 500 emits/s in total
            members = sorted(random.Random(5).sample(range(500), 25))
            await self.join(members, "five")
            secs = 3 if q else 6
            await self.scenario(backend, "room 5%", clients=500, pad=60, payload="100 B", room="five",
                                members=members, counts=[int(500 / n * secs)] * n, rate=500 / n)
            # the same room as fast as the nodes can emit (throughput)
            emits = 1600 if q else 2000
            await self.scenario(backend, "room flood", clients=500, pad=60, payload="100 B", room="five",
                                members=members, counts=[emits // n] * n)
        finally:
            await self.stop_servers()

    async def run(self) -> None:
        import aiohttp

        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="manager-bench-"))
        self.http = aiohttp.ClientSession()
        try:
            await self.start_infra(tmp)
            groups: list[tuple[str, int]] = []
            if "none" in self.a.only:
                groups.append(("none", 1))
            for n in (2,) if self.quick else (2, 4):
                for b in ("redis", "sb"):
                    if b in self.a.only:
                        groups.append((b, n))
            print(HEADER, flush=True)
            if "sb" in self.a.only:
                groups += [(v, 2) for v in self.variants]
            for run in range(self.a.runs):
                self.run_no = run
                if self.a.runs > 1:
                    print(f"=== run {run + 1} of {self.a.runs}", flush=True)
                for b, n in groups:
                    if b == "none" and run > 0:
                        continue  # the single-node ceiling is not part of the goals: once is enough
                    try:
                        await self.group(b, n)
                    except Exception as exc:  # noqa: BLE001 - printed and listed in the report; the next group runs
                        msg = f"run {run + 1}, {b} {n} nodes: {type(exc).__name__}: {str(exc)[:300]}"
                        print(f"GROUP FAILED {msg}", flush=True)
                        self.failures.append(msg)
                self.runs_done = run + 1
                self.elapsed = time.monotonic() - t0
                if run + 1 < self.a.runs:
                    write_report(self)  # a run cut short later still leaves the completed runs
        finally:
            await self.stop_all()
            await self.http.close()
        self.elapsed = time.monotonic() - t0
        print(f"total {self.elapsed:.0f}s", flush=True)


#: everything below this line in the existing report is kept when the report is rewritten
NOTES_MARK = "<!-- notes below are kept when manager_bench.py rewrites this file -->"

HEADER = ("backend      scenario   nodes clients payload  emits  delivered   msgs/s  same p50/p99 ms  cross p50/p99 ms"
          "  cpu nodes/infra/clients s  node us/msg  lost dup  sb msg/emit  credits/emit throttled")


def _f(x: float, d: int = 1) -> str:
    return "-" if x != x else f"{x:.{d}f}"


def fmt_row(r: dict[str, Any]) -> str:
    sbm = "-" if r["sb_msgs_per_emit"] is None else f"{r['sb_msgs_per_emit']:.3f}"
    cpe = "-" if r.get("credits_per_emit") is None else f"{r['credits_per_emit']:.2f} {r['credits_refused']:>6}"
    to = " TIMEOUT" if r["timed_out"] else ""
    return (f"{r['backend']:<12} {r['scenario']:<10} {r['nodes']:>5} {r['clients']:>7} {r['payload']:<7}"
            f" {r['emits']:>6.0f} {r['delivered']:>10.0f} {r['msgs_per_s']:>8.0f}"
            f"  {_f(r['same_p50']):>6}/{_f(r['same_p99']):<7}  {_f(r['cross_p50']):>6}/{_f(r['cross_p99']):<7}"
            f"  {r['cpu_nodes']:6.2f}/{r['cpu_infra']:5.2f}/{r['cpu_clients']:5.2f}"
            f"  {r['node_us_per_msg']:11.1f}  {r['lost']:>4} {r['dups']:>3}  {sbm}  {cpe}{to}")


# =====================================================================================
# targets and report
# =====================================================================================
def _find(results: list[dict[str, Any]], backend: str, scenario: str, nodes: int, clients: int | None = None,
          payload: str | None = None) -> dict[str, Any] | None:
    for r in results:
        if (r["backend"], r["scenario"], r["nodes"]) == (backend, scenario, nodes) and \
                (clients is None or r["clients"] == clients) and (payload is None or r["payload"] == payload):
            return r
    return None


_KEY = ("backend", "scenario", "nodes", "clients", "payload")
#: figures that add up over runs (every run must have 0 of them); the rest is the median of the runs
_SUMMED = ("lost", "dups", "stray")


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario: the median of every figure over the runs, lost/dup/stray summed.

    ``row["spread"][field]`` is ``(min, max)`` over the runs; ``row["runs"]`` the number of runs.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(tuple(r[k] for k in _KEY), []).append(r)
    out = []
    for rows in groups.values():
        agg: dict[str, Any] = dict(rows[0])
        agg["runs"] = len(rows)
        agg["cross_p99_runs"] = [r["cross_p99"] for r in rows]  # the tail shows per run
        agg["spread"] = {}
        for k in rows[0]:
            if k in _KEY or k in ("run", "cross_p99_runs"):
                continue
            vals = [r[k] for r in rows]
            if k in _SUMMED:
                agg[k] = sum(vals)
            elif k == "timed_out":
                agg[k] = any(vals)
            elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
                clean = [x for x in vals if x == x]
                agg[k] = statistics.median(clean) if clean else float("nan")
                if clean:
                    agg["spread"][k] = (min(clean), max(clean))
        out.append(agg)
    return out


def _rng(r: dict[str, Any], field: str, fmt: str) -> str:
    lo, hi = r.get("spread", {}).get(field, (None, None))
    if lo is None or r.get("runs", 1) < 2:
        return ""
    return f" ({format(lo, fmt)}–{format(hi, fmt)})"


def evaluate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goal table: default ServiceBusManager vs AsyncRedisManager, same run (medians)."""
    rows = []

    def add(target: str, what: str, sb: str, rd: str, ratio: float, met: bool) -> None:
        rows.append({"target": target, "case": what, "sb": sb, "redis": rd, "ratio": ratio, "met": met})

    for sb in [r for r in results if r["backend"] == "sb"]:
        rd = _find(results, "redis", sb["scenario"], sb["nodes"], sb["clients"], sb["payload"])
        if rd is None:
            continue
        what = f"{sb['scenario']}, {sb['nodes']} nodes, {sb['clients']} clients, {sb['payload']}"
        if sb["scenario"] == "broadcast":
            ratio = sb["msgs_per_s"] / rd["msgs_per_s"]
            add("broadcast delivered msgs/s >= 1.0x Redis", what,
                f"{sb['msgs_per_s']:,.0f}/s{_rng(sb, 'msgs_per_s', ',.0f')}",
                f"{rd['msgs_per_s']:,.0f}/s{_rng(rd, 'msgs_per_s', ',.0f')}", ratio, ratio >= 1.0)
            ratio = sb["cross_p99"] / rd["cross_p99"]
            add("broadcast flood cross-node p99 <= 1.0x Redis", what,
                f"{sb['cross_p99']:,.0f} ms{_rng(sb, 'cross_p99', ',.0f')}",
                f"{rd['cross_p99']:,.0f} ms{_rng(rd, 'cross_p99', ',.0f')}", ratio, ratio <= 1.0)
        if sb["scenario"] == "room flood":
            ratio = sb["msgs_per_s"] / rd["msgs_per_s"]
            add("5% room delivered msgs/s >= 1.0x Redis", what,
                f"{sb['msgs_per_s']:,.0f}/s{_rng(sb, 'msgs_per_s', ',.0f')}",
                f"{rd['msgs_per_s']:,.0f}/s{_rng(rd, 'msgs_per_s', ',.0f')}", ratio, ratio >= 1.0)
        if sb["scenario"].startswith(("room", "paced")):
            ratio = sb["node_us_per_msg"] / rd["node_us_per_msg"]
            add("node CPU per delivered msg <= 1.1x Redis", what,
                f"{sb['node_us_per_msg']:.0f} us{_rng(sb, 'node_us_per_msg', '.0f')}",
                f"{rd['node_us_per_msg']:.0f} us{_rng(rd, 'node_us_per_msg', '.0f')}", ratio, ratio <= 1.1)
        if sb["scenario"].startswith("paced"):
            ratio = sb["cross_p99"] / rd["cross_p99"]
            add("paced cross-node p99 <= 1.5x Redis", what,
                f"{sb['cross_p50']:.1f} / {sb['cross_p99']:.1f} ms{_rng(sb, 'cross_p99', '.1f')}",
                f"{rd['cross_p50']:.1f} / {rd['cross_p99']:.1f} ms{_rng(rd, 'cross_p99', '.1f')}",
                ratio, ratio <= 1.5)
        if sb["scenario"] == "rate-1k":
            v = sb["sb_msgs_per_emit"]
            rate = sb["emits_per_s_per_node"]
            add("<= 0.1 SB messages per emit at >= 1,000 emits/s", what,
                f"{v:.3f} msg/emit at {rate:,.0f} emits/s/node{_rng(sb, 'sb_msgs_per_emit', '.3f')}", "-",
                v, v <= 0.1 and rate >= 1000)
    bad = [r for r in results if r["lost"] or r["dups"] or r["stray"] or r["timed_out"]]
    runs = max((r.get("runs", 1) for r in results), default=1)
    add("0 lost, 0 duplicated (every run)", f"{len(results)} scenarios x {runs} run(s)",
        "; ".join(f"{r['backend']} {r['scenario']} {r['nodes']}n: lost {r['lost']} dup {r['dups']}"
                  for r in bad) or "all 0", "", float(len(bad)), not bad)
    return rows


def markdown(b: Bench, info: dict[str, str], targets: list[dict[str, Any]], argv: list[str],
             results: list[dict[str, Any]]) -> str:
    res = aggregate(results)
    out = ["# Benchmarks", "",
           "Produced by `bench/manager_bench.py` " + ("`--quick`" if b.quick else "(full matrix)") +
           f" in {b.elapsed:.0f} s: `{' '.join(['.venv/bin/python', 'bench/manager_bench.py', *argv])}`."
           + (f" Every figure is the **median of {b.runs_done} runs** of the whole matrix (runs interleaved in time; "
              "ranges min–max in the goal table; lost/dup are summed over the runs)." if b.runs_done > 1 else ""),
           "",
           f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, Python {info['python']}, "
           f"{info['date']}; load average at the end {info['load']}",
           f"- broker round trip: {b.a.broker_rtt_ms:g} ms added by a delaying TCP proxy in front of both brokers "
           f"(`--broker-rtt-ms`, bench/rtt_proxy.py); emulator tier: {b.a.tier}",
           "- **the 2 cores are shared with other engineers running test suites**: absolute numbers are "
           "noisy and low; compare the ratios, which come from the same run.",
           "- Related: [relay node capacity](benchmarks-relay.md)" +
           (", [Service Bus emulator](benchmarks-emulator.md)" if (ROOT / "bench" / "emulator_bench.py").exists()
            else "") + ".",
           "", "## Setup", "",
           "The same python-socketio app (`AsyncServer` on aiohttp, 127.0.0.1, ephemeral ports, one process per "
           "node) and the same clients (`socketio.AsyncClient` over websocket, 2 client processes, client *i* "
           "on node *i* mod N) with three client managers:", "",
           "| backend | manager | infrastructure process |", "|---|---|---|",
           "| `none` | python-socketio's default (single node: the ceiling) | – |",
           "| `redis` | `socketio.AsyncRedisManager` | `redis-server --save '' --appendonly no` |",
           "| `sb` | `ServiceBusManager` (defaults" + (f", plus `{os.environ['BENCH_SB_OPTIONS']}`"
                                                    if os.environ.get("BENCH_SB_OPTIONS") else "") +
           ") | `python -m servicebus_emulator` |",
           *[f"| `{k}` | `ServiceBusManager` with `{json.dumps(v)}` (2 nodes, 100 B broadcasts only) "
             "| `python -m servicebus_emulator` |" for k, v in b.variants.items()], "",
           "Scenarios (every node emits its share unless said, from the server: `sio.emit('m', {...})`):", "",
           "| scenario | what |", "|---|---|",
           "| `paced` | broadcast to 20 clients, 100 emits/s in total, "
           f"{4 if b.quick else 10} s |",
           "| `rate-1k` | every node emits 1,000 emits/s to a room with one member per node "
           f"({2 if b.quick else 4} s): Service Bus messages per emit |",
           "| `broadcast` | broadcast to all clients, each node emits its share of "
           f"{'40,000 / 16,000' if b.quick else '60,000 / 24,000'} deliveries (100 B / 4 KiB) as fast as it can |",
           "| `room 5%` | emit to a room of 25 of 500 clients, 500 emits/s in total, "
           f"{3 if b.quick else 6} s |",
           "| `paced1-100`, `paced1-300` | like `paced`, but only node 0 emits, 100 resp. 300 emits/s "
           f"({'4 / 3' if b.quick else '10 / 5'} s): a single busy node; cross-node = clients of the other nodes |",
           "| `room flood` | the `room 5%` room, each node emits its share of "
           f"{1600 if b.quick else 2000} emits as fast as it can |", "",
           "Measured: delivered msgs/s = deliveries / (last receive − first emit); latency = receive time "
           "(engine.io frame read by the client) − timestamp taken just before `sio.emit`, split by whether "
           "the client is on the emitting node; CPU = utime+stime from `/proc/<pid>/stat` over the scenario "
           "(nodes, the infra process — redis-server or the emulator — and the client processes); "
           "lost/dup per client against the expected (node, seq) set; Service Bus messages per emit from "
           "the manager's `messages_published` counter (includes heartbeats).", "",
           "## Results", "",
           "| backend | scenario | nodes | clients | payload | emits | delivered | msgs/s | same-node p50 / p99 ms "
           "| cross-node p50 / p99 ms | cross-node p99 per run ms | CPU s nodes / infra / clients | node µs per msg "
           "| nodes+infra µs per msg | lost | dup | SB msg per emit | credits per emit | throttled ops |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        sbm = "–" if r["sb_msgs_per_emit"] is None else f"{r['sb_msgs_per_emit']:.3f}"
        cpe = "–" if r.get("credits_per_emit") is None else f"{r['credits_per_emit']:.2f}"
        refused = "–" if r.get("credits_refused") is None else f"{r['credits_refused']:.0f}"
        runs = " / ".join(_f(x) for x in r.get("cross_p99_runs", []))
        out.append(
            f"| {r['backend']} | {r['scenario']}{' (timed out)' if r['timed_out'] else ''} | {r['nodes']} | "
            f"{r['clients']} | {r['payload']} | {r['emits']:,.0f} | {r['delivered']:,.0f} | {r['msgs_per_s']:,.0f} | "
            f"{_f(r['same_p50'])} / {_f(r['same_p99'])} | {_f(r['cross_p50'])} / {_f(r['cross_p99'])} | {runs} | "
            f"{r['cpu_nodes']:.2f} / {r['cpu_infra']:.2f} / {r['cpu_clients']:.2f} | {r['node_us_per_msg']:.0f} | "
            f"{r['all_us_per_msg']:.0f} | {r['lost']} | {r['dups']} | {sbm} | {cpe} | {refused} |")
    out += ["", "## Goal table (ServiceBusManager with its defaults vs. AsyncRedisManager, same run)", "",
            "| target | case | Service Bus | Redis | ratio | met |", "|---|---|---|---|---|---|"]
    for t in targets:
        out.append(f"| {t['target']} | {t['case']} | {t['sb']} | {t['redis']} | {t['ratio']:.2f} | "
                   f"{'yes' if t['met'] else '**no**'} |")
    met = sum(t["met"] for t in targets)
    out += ["", f"{met} of {len(targets)} target checks met.", ""]
    if b.failures:
        out += ["Groups that failed (their remaining scenarios are missing from that run):", ""]
        out += [f"- {f}" for f in b.failures] + [""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", default="main", choices=["main", "server", "clients"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=1,
                   help="repeat the whole matrix; the report shows the median of each figure (use 3)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--only", default="none,redis,sb", help="backends to run")
    p.add_argument("--sb-variant", action="append", default=[], metavar="NAME=JSON",
                   type=lambda x: (x.split("=", 1)[0], json.loads(x.split("=", 1)[1])),
                   help="also run the 2-node sb group with these ServiceBusManager options, reported as sb:NAME "
                        "(100 B broadcasts only), e.g. peek_lock='{\"receive_mode\": \"peek_lock\"}'")
    p.add_argument("--broker-rtt-ms", type=float, default=0.0,
                   help="round-trip time a delaying TCP proxy adds in front of both brokers (default 0: none)")
    p.add_argument("--tier", choices=("premium", "standard"), default="premium",
                   help="the emulator's tier: 'standard' throttles at 1,000 credits/s (default premium: meters only)")
    p.add_argument("--scenarios", default="", help="comma list (paced,rate-1k,broadcast,room 5%%); default all")
    # server role
    p.add_argument("--backend", default="none")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--channel", default="bench")
    p.add_argument("--redis-url", default="")
    p.add_argument("--sb-conn", default="")
    p.add_argument("--topic", default="bench-0")
    a = p.parse_args()
    if a.role == "server":
        run_server(a)
        return
    if a.role == "clients":
        asyncio.run(clients_main(a))
        return
    a.only = a.only.split(",")
    a.scenarios = [x for x in a.scenarios.split(",") if x]
    b = Bench(a)
    asyncio.run(b.run())
    agg = aggregate(b.results)
    targets = evaluate(agg)
    print()
    if a.runs > 1:
        print(f"medians of {a.runs} runs:")
    print(HEADER)
    for r in agg:
        print(fmt_row(r))
    print()
    for t in targets:
        print(f"{'MET ' if t['met'] else 'MISS'}  {t['target']:<50} {t['case']:<45} sb {t['sb']}  redis {t['redis']}"
              f"  ratio {t['ratio']:.2f}")
    if b.server_metrics:
        print("\nServiceBusManager metrics at node stop:")
        for m in b.server_metrics:
            keys = ("envelopes_published", "messages_published", "envelopes_received", "messages_received",
                    "settled", "duplicates_dropped", "buffer_dropped", "publish_errors", "reconnects")
            print("  " + m["server"] + ": " + ", ".join(f"{k}={m.get(k)}" for k in keys))
    write_report(b)


def write_report(b: Bench) -> None:
    """(Re)write ``--out`` from the runs completed so far, keeping the hand-written notes."""
    if b.a.no_write or not b.results:
        return
    runs = sorted({r["run"] for r in b.results})
    results = [r for r in b.results if r["run"] < b.runs_done] or b.results
    md = markdown(b, machine_info(), evaluate(aggregate(results)), sys.argv[1:], results)
    if b.runs_done < b.a.runs:
        md = md.replace("# Benchmarks\n", f"# Benchmarks\n\n**Partial: {b.runs_done} of {b.a.runs} runs "
                        f"completed** (runs seen: {len(runs)}).\n", 1)
    out = Path(b.a.out)
    if out.exists() and NOTES_MARK in out.read_text():
        md += "\n" + NOTES_MARK + out.read_text().split(NOTES_MARK, 1)[1]
    out.write_text(md)
    print(f"\nwrote {b.a.out} ({b.runs_done} of {b.a.runs} runs)", flush=True)


if __name__ == "__main__":
    main()
