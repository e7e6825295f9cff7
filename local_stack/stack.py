"""Start and stop the whole local system; used by ``python -m local_stack`` and the e2e tests.

Two regions (``westeurope`` with relay nodes ``a1`` and ``a2``; ``northeurope`` with ``b1`` and
the on-premise node ``factory1``, which joins with a topic-scoped Listen+Send key and a
pre-provisioned subscription), one emulator process serving both namespaces, Azurite (Table
Storage), the local Web PubSub service (``local_stack/webpubsub``), and the Functions app under
the local runner (router, persist, Web PubSub edge per region; history, emit and negotiate over
HTTP).

Trust zones are on (:attr:`LocalStack.with_zones`): fresh keys per stack, the cloud zone for
``a1``, ``a2``, ``b1`` and the Functions, and one on-premise zone per on-premise node (``factory1``,
allowed the rooms ``chat:factory1…``: :attr:`LocalStack.site_rooms`). Each on-premise node holds
only its own private key and a history token key scoped to its rooms.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socketio_servicebus.topology import load_topology
from socketio_servicebus.zones import ZoneKey

from .dashboard import Collector, Dashboard, NodeTarget, RegionTarget
from .ports import port_holder
from .processes import ROOT, ManagedProcess, free_port, python_args
from .supervisor import Supervisor
from .topology_config import ROOT_KEY_NAME, RegionSpec, connection_string, emulator_config
from .webpubsub import STATS_PATH
from .webpubsub import connection_string as webpubsub_connection_string

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"


def _say(text: str) -> None:
    """A supervisor line; on a terminal it overwrites the live status line, which is redrawn next."""
    if sys.stdout.isatty():
        print("\r" + text.ljust(100), flush=True)
    else:
        print(text, flush=True)


class StackBusy(RuntimeError):
    """Another stack runs from this run directory, or something else holds one of its ports.

    ``python -m local_stack`` prints it and exits 2, touching nothing of the other stack."""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie is reaped by init soon)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


@dataclass
class NodeSpec:
    node_id: str
    region: str
    on_prem: bool = False
    port: int = 0


@dataclass
class StackPorts:
    emulator: int = 5672  # region i gets emulator + i
    azurite: int = 10002
    functions: int = 7071
    webpubsub: int = 7072
    first_node: int = 8001
    dashboard: int = 7073

    @classmethod
    def ephemeral(cls) -> StackPorts:
        return cls(emulator=0, azurite=free_port(), functions=free_port(), webpubsub=free_port(), first_node=0,
                   dashboard=free_port())


@dataclass
class LocalStack:
    """The processes of the local stack and what they listen on."""

    run_dir: Path = field(default_factory=lambda: ROOT / ".run")
    ports: StackPorts = field(default_factory=StackPorts)
    regions: list[RegionSpec] = field(
        default_factory=lambda: [RegionSpec("westeurope"), RegionSpec("northeurope", on_prem_nodes=["factory1"])]
    )
    nodes: list[NodeSpec] = field(
        default_factory=lambda: [
            NodeSpec("a1", "westeurope"),
            NodeSpec("a2", "westeurope"),
            NodeSpec("b1", "northeurope"),
            NodeSpec("factory1", "northeurope", on_prem=True),
        ]
    )
    node_extra_args: list[str] = field(default_factory=list)
    #: the emulator's ``--data-dir`` (``make run``: ``.run/servicebus-data``); None: in memory, state
    #: is gone when it restarts
    emulator_data_dir: Path | None = None
    #: the emulator's ``--fsync`` with a data dir
    emulator_fsync: str = "on"
    #: the emulator's ``--tier``: "standard" throttles at 1,000 credits/s per namespace (as Azure),
    #: and the relay nodes then batch for it (``--credit-budget 1000 --send-interval 0.25``)
    emulator_tier: str = "premium"
    function_key: str = field(default_factory=lambda: os.urandom(12).hex())
    #: SIO_HISTORY_TOKEN_KEY of the Function App and every relay node: random per stack (per `make run`)
    history_token_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: the local Web PubSub service's AccessKey: random per stack
    webpubsub_key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode(), repr=False)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    namespace_ports: dict[str, int] = field(default_factory=dict)
    #: trust zones: every process signs what it sends and verifies/polices what it receives
    with_zones: bool = True
    #: room prefixes of each on-premise zone (named after its node); default ``chat:<node id>``
    site_rooms: dict[str, list[str]] = field(default_factory=dict)
    #: zone keys, made at first use: "cloud" and one per on-premise node
    zone_keys: dict[str, ZoneKey] = field(default_factory=dict, repr=False)
    #: history token keys of the on-premise nodes, each scoped to its zone's rooms
    site_history_keys: dict[str, str] = field(default_factory=dict, repr=False)
    #: serve the live dashboard (local_stack/dashboard/) and link every node's chat page to it
    with_dashboard: bool = True
    dashboard: Dashboard | None = None
    #: every process exports its spans to the dashboard's collector (``/v1/traces``, ``/traces``)
    #: and, when set, to OTEL_EXPORTER_OTLP_ENDPOINT; False: no process traces (unless that is set)
    tracing: bool = True
    #: restart processes that die, with backoff (``make run``); off for tests that kill on purpose
    supervise: bool = False
    supervisor: Supervisor | None = None
    _lock: Any = None

    # -- addresses -------------------------------------------------------------------------
    def region(self, name: str) -> RegionSpec:
        return next(r for r in self.regions if r.name == name)

    def connection_string(self, region: str) -> str:
        spec = self.region(region)
        return connection_string(self.namespace_ports[region], ROOT_KEY_NAME, spec.root_key)

    def on_prem_connection_string(self, region: str) -> str:
        spec = self.region(region)
        return connection_string(self.namespace_ports[region], load_topology()["onPremPolicy"], spec.on_prem_key)

    # -- trust zones ------------------------------------------------------------------------
    def zone_of(self, node: NodeSpec) -> str:
        return node.node_id if node.on_prem else "cloud"

    def zone_key(self, zone: str) -> ZoneKey:
        if zone not in self.zone_keys:
            self.zone_keys[zone] = ZoneKey.generate(zone)
        return self.zone_keys[zone]

    def rooms_of(self, zone: str) -> list[str]:
        return self.site_rooms.get(zone, [f"chat:{zone}"])

    def zones_document(self) -> str:
        """``SIO_ZONES``: public keys only; every process gets the same document."""
        zones: list[dict[str, Any]] = [
            {"name": "cloud", "kind": "cloud", "public_keys": [self.zone_key("cloud").public.text()]}]
        for node in self.nodes:
            if node.on_prem:
                zone = self.zone_of(node)
                zones.append({"name": zone, "kind": "onprem", "public_keys": [self.zone_key(zone).public.text()],
                              "nodes": [node.node_id], "rooms": self.rooms_of(zone), "max_nodes": 2})
        return json.dumps({"zones": zones})

    def zone_env(self, zone: str) -> dict[str, str]:
        if not self.with_zones:
            return {}
        return {"SIO_ZONE": zone, "SIO_ZONE_KEY": self.zone_key(zone).text(), "SIO_ZONES": self.zones_document()}

    def history_key_of(self, node: NodeSpec) -> str:
        if not (self.with_zones and node.on_prem):
            return self.history_token_key
        return self.site_history_keys.setdefault(node.node_id, secrets.token_urlsafe(32))

    def node_url(self, node_id: str) -> str:
        node = next(n for n in self.nodes if n.node_id == node_id)
        return f"http://127.0.0.1:{node.port}"

    @property
    def functions_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.functions}/api"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}/"

    @property
    def webpubsub_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.webpubsub}"

    @property
    def webpubsub_connection_string(self) -> str:
        return webpubsub_connection_string(self.ports.webpubsub, self.webpubsub_key)

    @property
    def tables_connection_string(self) -> str:
        from shared.connections import AZURITE_ACCOUNT_KEY

        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.ports.azurite}/devstoreaccount1;"
        )

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def azurite_dir(self) -> Path:
        return self.run_dir / "azurite"

    def fixed_ports(self) -> dict[str, int]:
        """The ports this stack will listen on that are fixed in advance (0 = chosen at start)."""
        ports = {"azurite": self.ports.azurite, "functions": self.ports.functions,
                 "web pubsub service": self.ports.webpubsub}
        if self.with_dashboard:
            ports["dashboard"] = self.ports.dashboard
        if self.ports.emulator:
            ports.update({f"emulator {r.name}": self.ports.emulator + i for i, r in enumerate(self.regions)})
        if self.ports.first_node:
            ports.update({f"relay node {n.node_id}": self.ports.first_node + i for i, n in enumerate(self.nodes)})
        return {k: v for k, v in ports.items() if v}

    def acquire(self) -> None:
        """Own the run directory, or raise :class:`StackBusy` without touching anything.

        An exclusive ``flock`` on ``RUN_DIR/stack.lock``, held while this process lives (a
        SIGKILLed launcher releases it; its orphans are then stopped by :meth:`clean_stale`). Then
        every fixed port must be free: a port held by another process is named with its PID.
        """
        if self._lock is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the stack's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackBusy(self._busy_message()) from None
        self._lock = lock
        try:
            self.clean_stale()
            for what, port in self.fixed_ports().items():
                holder = port_holder(port)
                if holder is not None:
                    raise StackBusy(f"port {port} ({what}) is in use by {holder}; stop it, or use --ephemeral")
            self._record_state()
        except BaseException:
            self.release()
            raise

    def _busy_message(self) -> str:
        try:
            state = json.loads((self.run_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {}
        owner = state.get("owner", "?")
        ports = state.get("ports") or {}
        held = ", ".join(f"{what} on port {port}" for what, port in list(ports.items())[:3]) or "its ports"
        return (f"a local stack is already running from {self.run_dir} (PID {owner}, {held}); "
                f"stop it first (Ctrl-C where it runs, or kill {owner}), or use --run-dir and --ephemeral "
                "for a second one")

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def clear_state(self) -> list[Path]:
        """``--fresh``: delete the emulator's data dir and Azurite's tables (needs :meth:`acquire`)."""
        assert self._lock is not None, "acquire() first: never clear a running stack's state"
        cleared = []
        for path in (self.emulator_data_dir, self.azurite_dir):
            if path is not None and path.exists():
                shutil.rmtree(path)
                cleared.append(path)
        return cleared

    def clean_stale(self) -> list[int]:
        """Stop what a previous run that crashed left behind (by the PIDs it recorded)."""
        state = self.run_dir / STATE_FILE
        killed: list[int] = []
        if not state.exists():
            return killed
        try:
            pids = [int(p) for p in json.loads(state.read_text()).get("pids", [])]
        except (ValueError, OSError):
            pids = []
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"servicebus_emulator" in cmdline or b"relay_node" in cmdline or b"function_runner" in cmdline \
                    or b"azurite" in cmdline or b"local_stack" in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        # gone before anything restarts: a stale emulator still holding the data dir's lock (or a
        # port) would make the new one exit
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        state.unlink(missing_ok=True)
        return killed

    def _record_state(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pids = [p.pid for p in self.processes.values() if p.pid]
        ports = dict(self.fixed_ports())
        ports.update({f"relay node {n.node_id}": n.port for n in self.nodes if n.port})
        state = {"owner": os.getpid(), "pids": pids, "ports": ports, "started": time.time()}
        (self.run_dir / STATE_FILE).write_text(json.dumps(state))

    async def _spawn(self, proc: ManagedProcess, ready_within: float = 40.0) -> ManagedProcess:
        self.processes[proc.name] = proc
        await proc.start(ready_within)
        self._record_state()
        return proc

    async def start(self) -> None:
        self.acquire()
        logs = self.run_dir / "logs"
        if logs.exists():
            shutil.rmtree(logs)
        config_path = self.run_dir / "emulator-config.json"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(emulator_config(self.regions), indent=2))
        try:
            await self._start_all(config_path, logs)
        except BaseException:
            await self.stop()
            raise
        if self.supervise:
            self.supervisor = Supervisor(lambda: self.processes, self.restart_process, say=_say)
            self.supervisor.start()

    async def restart_process(self, name: str) -> None:
        """Start the process ``name`` again (the supervisor's restart), on the same ports."""
        if name == "emulator":
            await self.restart_emulator()
            return
        proc = self.processes[name]
        await proc.start(ready_within=60)
        self._record_state()

    async def _start_emulator(self, config_path: Path, logs: Path, port: int, timeout: float = 40.0) -> ManagedProcess:  # noqa: ASYNC109
        return await self._spawn(
            ManagedProcess(
                "emulator",
                python_args("servicebus_emulator", "--config", str(config_path), "--port", str(port),
                            "--tier", self.emulator_tier, *self._emulator_persistence_args()),
                ready_pattern=r"servicebus-emulator ready",
                log_dir=logs,
            ),
            timeout,
        )

    def _emulator_persistence_args(self) -> list[str]:
        if self.emulator_data_dir is None:
            return []
        return ["--data-dir", str(self.emulator_data_dir), "--fsync", self.emulator_fsync]

    def kill_emulator(self, sig: int = signal.SIGKILL) -> None:
        """Signal the emulator (SIGKILL by default: a broker crash) without waiting."""
        proc = self.processes.get("emulator")
        if proc is not None:
            proc.signal(sig)

    async def restart_emulator(self) -> None:
        """Start the emulator again on the same namespace ports (killing it first if it still runs).

        With ``emulator_data_dir`` it comes back with what it had accepted (entities created at
        runtime such as the relay nodes' ``node-<id>`` subscriptions, messages, sequence numbers;
        see docs/emulator.md). Without, it keeps no state: it comes back with what its config
        provisions (topic, function subscriptions, pre-provisioned on-premise subscriptions,
        keys); subscriptions created at runtime and messages are gone.
        """
        old = self.processes.get("emulator")
        if old is not None:
            if old.alive():
                old.signal(signal.SIGKILL)
            await old.stop(5)
        config = emulator_config(self.regions)
        for ns, region in zip(config["UserConfig"]["Namespaces"], self.regions, strict=True):
            ns["Port"] = self.namespace_ports[region.name]  # pinned: clients keep their connection strings
        config_path = self.run_dir / "emulator-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        first = self.namespace_ports[self.regions[0].name]
        deadline = time.monotonic() + 15
        while True:  # the kernel may hold a just-closed port for a moment
            try:
                await self._start_emulator(config_path, self.run_dir / "logs", first, timeout=10)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _start_all(self, config_path: Path, logs: Path) -> None:
        emulator = await self._start_emulator(config_path, logs, self.ports.emulator)
        for line in emulator.tail:
            for region in self.regions:
                marker = f"namespace {region.namespace}: "
                if line.startswith(marker):
                    self.namespace_ports[region.name] = int(line.split("sb://localhost:")[1].split(";")[0])
        azurite_bin = ROOT / "node_modules" / ".bin" / "azurite-table"
        if not azurite_bin.exists():
            raise RuntimeError("node_modules/.bin/azurite-table is missing: run `npm install` (make run does it)")
        azurite_dir = self.azurite_dir  # kept across runs, like the emulator's data dir (--fresh clears both)
        await asyncio.gather(
            self._spawn(
                ManagedProcess(
                    "azurite",
                    [str(azurite_bin), "--tableHost", "127.0.0.1", "--tablePort", str(self.ports.azurite),
                     "--location", str(azurite_dir), "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
                    ready_pattern=r"successfully (started|listening)",
                    log_dir=logs,
                    # SIGTERM ends Azurite without saving what it wrote in the last 5 s (its autosave)
                    stop_signal=signal.SIGINT,
                )
            ),
            self._spawn(
                ManagedProcess(
                    "webpubsub",
                    python_args("local_stack.webpubsub", "--port", str(self.ports.webpubsub)),
                    env={"WEBPUBSUB_ACCESS_KEY": self.webpubsub_key},
                    ready_pattern=r"webpubsub service listening on",
                    log_dir=logs,
                )
            ),
        )
        await asyncio.gather(self._start_functions(logs), *(self._start_node(n, logs) for n in self.nodes))
        if self.with_dashboard:
            await self._start_dashboard()

    def tracing_env(self) -> dict[str, str]:
        """OTEL_* for a child process: export to the stack's collector too, 100 % sampled (unless the
        environment says otherwise), exported every 200 ms so the trace view follows."""
        if not (self.tracing and self.with_dashboard):
            return {}
        env = {"SIO_OTEL_EXTRA_ENDPOINTS": f"http://127.0.0.1:{self.ports.dashboard}",
               "OTEL_BSP_SCHEDULE_DELAY": os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "200")}
        if not os.environ.get("OTEL_TRACES_SAMPLER"):
            env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
        return env

    def functions_env(self) -> dict[str, str]:
        topo = load_topology()
        settings = topo["appSettings"]
        home = self.regions[0].name
        env = {
            settings["serviceBusConnection"]: self.connection_string(home),
            settings["region"]: home,
            settings["regionMap"]: json.dumps({r.name: {} for r in self.regions}),
            settings["topic"]: topo["topic"],
            settings["tablesConnection"]: self.tables_connection_string,
            settings["webPubSubConnection"]: self.webpubsub_connection_string,
            "FUNCTIONS_LOCAL_KEY": self.function_key,
            settings["historyTokenKey"]: self.history_token_key,
            **self.tracing_env(),
            **self.zone_env("cloud"),
        }
        if self.with_zones:
            env["SIO_HISTORY_TOKEN_SCOPED_KEYS"] = json.dumps(
                [{"key": self.history_key_of(n), "rooms": self.rooms_of(self.zone_of(n))}
                 for n in self.nodes if n.on_prem])
        for region in self.regions:
            name = str(topo["regionConnectionTemplate"]).replace("{region}", region.name)
            env[name] = self.connection_string(region.name)
        return env

    async def _start_functions(self, logs: Path) -> None:
        settings = self.run_dir / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}, "Host": {"CORS": "*"}}))
        await self._spawn(
            ManagedProcess(
                "functions",
                python_args("function_runner", "--port", str(self.ports.functions), "--settings", str(settings)),
                env=self.functions_env(),
                ready_pattern=r"function-runner: ready",
                log_dir=logs,
            ),
            ready_within=60,
        )

    async def _start_node(self, node: NodeSpec, logs: Path) -> None:
        index = self.nodes.index(node)
        port = self.ports.first_node + index if self.ports.first_node else 0
        conn = self.on_prem_connection_string(node.region) if node.on_prem else self.connection_string(node.region)
        args = [
            "--host", "127.0.0.1", "--port", str(port), "--node-id", node.node_id, "--region", node.region,
            "--history-url", f"http://127.0.0.1:{self.ports.functions}/api/history",
            *(["--credit-budget", "1000", "--send-interval", "0.25"] if self.emulator_tier == "standard" else []),
            *self.node_extra_args,
        ]
        if self.with_dashboard:
            args += ["--dashboard-url", self.dashboard_url]
        if node.on_prem:
            args += ["--subscription", load_topology()["nodeSubscription"]["prefix"] + node.node_id]
        proc = await self._spawn(
            ManagedProcess(
                f"node-{node.node_id}",
                python_args("relay_node", *args),
                env={"SERVICEBUS_CONNECTION_STRING": conn, "SIO_HISTORY_TOKEN_KEY": self.history_key_of(node),
                     **self.tracing_env(), **self.zone_env(self.zone_of(node))},
                ready_pattern=r"relay-node listening on http://[^:]+:(?P<port>\d+)",
                log_dir=logs,
            ),
            ready_within=60,
        )
        node.port = int(proc.matches["port"])
        proc.args[proc.args.index("--port") + 1] = str(node.port)  # a restart comes back on the same port
        self._record_state()

    def dashboard_targets(self) -> tuple[list[NodeTarget], list[RegionTarget]]:
        """What the dashboard probes, read on every tick (node ports are known once they listen)."""
        topic = str(load_topology()["topic"])
        nodes = [NodeTarget(n.node_id, n.region, n.on_prem, self.node_url(n.node_id) if n.port else "")
                 for n in self.nodes]
        regions = [RegionTarget(r.name, r.namespace, topic, self.connection_string(r.name))
                   for r in self.regions if r.name in self.namespace_ports]
        return nodes, regions

    def service_rows(self) -> list[dict[str, Any]]:
        """Every process with its supervision state, restarts and the port to probe."""
        ports = {"functions": self.ports.functions, "azurite": self.ports.azurite,
                 "webpubsub": self.ports.webpubsub}
        ports.update({f"node-{n.node_id}": n.port for n in self.nodes if n.port})
        if self.namespace_ports:
            ports["emulator"] = self.namespace_ports[self.regions[0].name]
        if self.supervisor is not None:
            rows = self.supervisor.rows()
        else:
            rows = [{"name": name, "state": "running" if p.alive() else "exited", "pid": p.pid if p.alive() else None,
                     "restarts": 0, "lastExit": p.returncode} for name, p in self.processes.items()]
        for row in rows:
            row["port"] = ports.get(row["name"])
            row["supervised"] = self.supervisor is not None
        return rows

    async def _start_dashboard(self) -> None:
        collector = Collector(lambda: self.dashboard_targets()[0], lambda: self.dashboard_targets()[1],
                              webpubsub=lambda: self.webpubsub_url + STATS_PATH,
                              services=self.service_rows)
        self.dashboard = Dashboard(collector, host="127.0.0.1", port=self.ports.dashboard)
        await self.dashboard.start()

    async def stop(self) -> None:
        """Stop everything started, relay nodes first (they delete their subscriptions)."""
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None
        nodes = [p for n, p in self.processes.items() if n.startswith("node-")]
        services = [self.processes[n] for n in ("functions", "webpubsub", "azurite") if n in self.processes]
        for group in (nodes, services, [self.processes.get("emulator")]):
            await asyncio.gather(*(p.stop() for p in group if p is not None))
        if self._lock is not None:
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self.release()

    # -- status ----------------------------------------------------------------------------
    def describe(self) -> list[tuple[str, str, str]]:
        rows = []
        for region in self.regions:
            rows.append(("emulator", region.name, f"sb://localhost:{self.namespace_ports.get(region.name)}"))
        for node in self.nodes:
            kind = "on-prem node" if node.on_prem else "relay node"
            rows.append((f"{kind} {node.node_id}", node.region, f"{self.node_url(node.node_id)}/  (metrics /metrics)"))
        rows.append(("functions", "all", f"{self.functions_url}/emit  /history  /history/server  /negotiate"))
        rows.append(("azurite tables", "-", f"http://127.0.0.1:{self.ports.azurite}"))
        rows.append(("web pubsub (local)", "-", f"{self.webpubsub_url}  (stats {STATS_PATH})"))
        if self.tracing_env():
            rows.append(("traces", "all", f"{self.dashboard_url}traces  (OTLP in: {self.dashboard_url}v1/traces)"))
        return rows


def parse_metrics(text: str) -> dict[str, float]:
    """Sum samples by metric name from Prometheus text (labels dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


async def scrape(session: Any, url: str) -> dict[str, float]:
    try:
        async with session.get(url + "/metrics") as resp:
            if resp.status != 200:
                return {}
            return parse_metrics(await resp.text())
    except Exception:  # noqa: BLE001 - a node that is down shows as down
        return {}
