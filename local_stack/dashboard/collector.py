"""One loop that probes the whole stack every second and keeps the dashboard's state.

Per tick, all at once, each probe bounded by ``probe_timeout`` (1 s):

- every relay node: ``GET /readyz`` (ready, or the reason it is not) and ``GET /metrics``
  (Prometheus text, parsed with ``prometheus_client``'s parser); no answer = down;
- every region: ``list_subscriptions_runtime_properties`` through the SDK's
  ``ServiceBusAdministrationClient`` (the emulator's admin API); no answer = down; and the
  emulator's credit meter (``GET /$emulator/meter``): credits per second, headroom, throttling;
- the local Web PubSub service (``local_stack/webpubsub``): ``GET /_local/stats``, its
  connections and groups per hub; no answer = down.
- every process of the stack (``services``: the Functions runner, Azurite, the emulator, the
  relay nodes...): its supervision row (state, restarts, last exit) plus a TCP connect to its
  port (``up``); a relay node's row also carries its restarts.

When a subscription's dead-letter count changes, its dead-letter sub-queue is peeked (never
received) in a task of its own, so a slow peek does not hold the tick up. Rates (envelopes
in/out per second, mean cross-node latency) are differences between two ticks' counters; the
last five minutes of them per region are kept for the plots. Web clients read the state through
:meth:`Collector.wait_newer` (one server-side loop, however many pages are open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from prometheus_client.parser import text_string_to_metric_families

from socketio_servicebus.servicebus.clients import admin_client, emulator_address, servicebus_client
from socketio_servicebus.topology import load_topology

log = logging.getLogger("local_stack.dashboard")
T = TypeVar("T")

#: sample names read from a relay node's /metrics (relay_node/metrics.py)
RECEIVED = "socketio_servicebus_envelopes_received_total"
PUBLISHED = "socketio_servicebus_envelopes_published_total"
CLIENTS = "relay_connected_clients"
BUFFER_DEPTH = "socketio_servicebus_buffer_depth"
RECONNECTS = "socketio_servicebus_reconnects_total"
#: messages/envelopes refused by the trust zones (proof of origin or zone policy), by reason
FORGED = "socketio_servicebus_forged_dropped_total"
#: envelope age at delivery (receiver's clock minus the sending node's timestamp), a summary
LAG_SUM = "socketio_servicebus_lag_seconds_sum"
LAG_COUNT = "socketio_servicebus_lag_seconds_count"
#: 1 while the node's last send was refused as throttled
THROTTLED = "socketio_servicebus_throttled"

HISTORY_SECONDS = 300.0
DEAD_LETTERS_SHOWN = 5
#: messages peeked per dead-letter sub-queue (the newest DEAD_LETTERS_SHOWN of them are shown)
PEEK_MAX = 100
PEEK_TIMEOUT = 5.0
PEEK_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class NodeTarget:
    node_id: str
    region: str
    on_prem: bool
    #: base URL (``http://127.0.0.1:8001``); empty while the node has no port yet
    url: str


@dataclass(frozen=True)
class RegionTarget:
    name: str
    namespace: str
    topic: str
    #: a connection string with Manage rights (the admin API needs them)
    connection_string: str


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``{sample name: value}``, samples of one name summed over their labels;
    labelled samples are also kept as ``name{label=value}``.

    Raises ``ValueError`` for text that is not the exposition format.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
            for label, value in sample.labels.items():
                key = f"{sample.name}{{{label}={value}}}"
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def counter_rate(prev: tuple[float, float] | None, now: float, value: float) -> float | None:
    """Per-second increase since ``prev`` = (time, value); a reset (restart) counts from zero."""
    if prev is None or now <= prev[0]:
        return None
    delta = value - prev[1]
    if delta < 0:
        delta = value
    return delta / (now - prev[0])


def _short(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "not listening (connection refused)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


class Collector:
    """The dashboard's state, refreshed by :meth:`run` every ``interval`` seconds."""

    def __init__(
        self,
        nodes: Callable[[], Sequence[NodeTarget]],
        regions: Callable[[], Sequence[RegionTarget]],
        *,
        interval: float = 1.0,
        probe_timeout: float = 1.0,
        history_seconds: float = HISTORY_SECONDS,
        webpubsub: Callable[[], str | None] = lambda: None,
        services: Callable[[], Sequence[dict[str, Any]]] | None = None,
    ):
        self.nodes = nodes
        self.regions = regions
        #: the Web PubSub service's stats URL (None: not part of this stack)
        self.webpubsub = webpubsub
        self.services = services
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.history_seconds = history_seconds
        self.seq = 0
        self.state: dict[str, Any] = {"seq": 0, "ts": time.time(), "nodes": [], "regions": [], "deadLetters": [],
                                      "webpubsub": None,
                                      "services": []}
        #: plot points ``{"seq", "t", "rates": {region: envelopes/s}, "latencyMs": {region: ms | None}}``
        self.points: deque[dict[str, Any]] = deque()
        self._cond = asyncio.Condition()
        self._closed = False
        self._counters: dict[tuple[str, str], tuple[float, float]] = {}
        self._admins: dict[str, ServiceBusAdministrationClient] = {}
        self._dead_letters: dict[str, list[dict[str, Any]]] = {}
        self._peeked: dict[str, tuple[tuple[str, int], ...]] = {}
        self._peek_tasks: dict[str, asyncio.Task[None]] = {}
        self._peek_after: dict[str, float] = {}
        topo = load_topology()
        self._function_subs = {spec["name"] for spec in topo["functionSubscriptions"].values()}
        self._node_prefix = str(topo["nodeSubscription"]["prefix"])

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick until :meth:`close`."""
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout)
        failure = ""
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._closed:
                started = time.monotonic()
                try:
                    await self.tick(session)
                    failure = ""
                except asyncio.CancelledError:
                    # close() shuts the admin clients while a tick may still be resolving or
                    # reading through them: their pending futures end cancelled. Closing: done.
                    if self._closed:
                        break
                    raise
                except Exception as exc:
                    if repr(exc) != failure:  # once per distinct failure, not every second
                        log.exception("dashboard tick failed")
                    failure = repr(exc)
                left = self.interval - (time.monotonic() - started)
                async with self._cond:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait_for(lambda: self._closed), max(left, 0.05))

    async def tick(self, session: aiohttp.ClientSession) -> None:
        """Probe everything once, then publish the new state and plot point."""
        nodes = list(self.nodes())
        regions = list(self.regions())
        stats_url = self.webpubsub()
        services = [dict(row) for row in self.services()] if self.services is not None else []
        results = await asyncio.gather(
            *(self.poll_node(session, n) for n in nodes), *(self.poll_region(r, session) for r in regions),
            self.poll_webpubsub(session, stats_url),
            *(self.poll_service(row) for row in services),
        )
        node_rows = list(results[: len(nodes)])
        region_rows = list(results[len(nodes):len(nodes) + len(regions)])
        webpubsub = results[len(nodes) + len(regions)] if stats_url else None
        by_name = {row["name"]: row for row in services}
        for row in node_rows:
            service = by_name.get("node-" + row["id"])
            if service is not None:
                row["restarts"] = service.get("restarts", 0)
                row["process"] = service.get("state")
        now = time.time()
        point: dict[str, Any] = {"t": now, "rates": {}, "latencyMs": {}}
        for region in regions:
            mine = [row for row in node_rows if row["region"] == region.name and row["state"] != "down"]
            rates = [(row["inPerSec"] or 0.0) + (row["outPerSec"] or 0.0) for row in mine]
            point["rates"][region.name] = round(sum(rates), 3) if mine else None
            lag_sum = sum(row.pop("_lagSum") for row in mine)
            lag_count = sum(row.pop("_lagCount") for row in mine)
            point["latencyMs"][region.name] = round(1000 * lag_sum / lag_count, 2) if lag_count else None
        for row in node_rows:
            row.pop("_lagSum", None)
            row.pop("_lagCount", None)
        dead_letters = sorted(
            (d for r in regions for d in self._dead_letters.get(r.name, [])),
            key=lambda d: str(d.get("enqueued") or ""), reverse=True,
        )[:DEAD_LETTERS_SHOWN]
        async with self._cond:
            self.seq += 1
            point["seq"] = self.seq
            self.points.append(point)
            while self.points and self.points[0]["t"] < now - self.history_seconds:
                self.points.popleft()
            self.state = {"seq": self.seq, "ts": now, "nodes": node_rows, "regions": region_rows,
                          "deadLetters": dead_letters, "webpubsub": webpubsub, "services": services}
            self._cond.notify_all()

    async def wait_newer(self, seq: int, timeout: float) -> bool:  # noqa: ASYNC109 - a plain bound for SSE keep-alives
        """Wait until the state is newer than ``seq``; False on timeout or when closed."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.seq > seq or self._closed), timeout)
            except TimeoutError:
                return False
            return self.seq > seq and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        for task in self._peek_tasks.values():
            task.cancel()
        for task in self._peek_tasks.values():
            with contextlib.suppress(BaseException):
                await task
        while self._admins:  # a tick still finishing may add or drop a client meanwhile
            _, admin = self._admins.popitem()
            with contextlib.suppress(Exception):
                await admin.close()

    # -- relay nodes -----------------------------------------------------------------------
    async def poll_node(self, session: aiohttp.ClientSession, node: NodeTarget) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": node.node_id, "region": node.region, "onPrem": node.on_prem,
            "url": node.url + "/" if node.url else None,
            "state": "down", "ready": False, "reason": None, "clients": None, "inPerSec": None,
            "outPerSec": None, "bufferDepth": None, "reconnects": None, "latencyMs": None,
            "forged": None, "forgedReasons": {},
            "_lagSum": 0.0, "_lagCount": 0.0,
        }
        if not node.url:
            row["reason"] = "not started"
            return row
        ready, metrics = await asyncio.gather(
            self._get(session, node.url + "/readyz"), self._get(session, node.url + "/metrics"),
            return_exceptions=True,
        )
        if isinstance(ready, BaseException):
            row["reason"] = _short(ready)
            return row
        status, body = ready
        row["ready"] = status == 200
        row["state"] = "ready" if status == 200 else "not-ready"
        row["throttled"] = False
        if status == 200:  # ready; throttled nodes stay ready and say so
            with contextlib.suppress(ValueError, AttributeError):
                health = json.loads(body).get("health") or {}
                if health.get("throttled"):
                    row["throttled"], row["reason"] = True, str(health.get("reason") or "throttled")
        if status != 200:
            try:
                row["reason"] = str(json.loads(body).get("reason") or f"HTTP {status}")
            except ValueError:
                row["reason"] = f"HTTP {status}"
        if isinstance(metrics, BaseException) or metrics[0] != 200:
            row["metricsError"] = _short(metrics) if isinstance(metrics, BaseException) else f"HTTP {metrics[0]}"
            return row
        try:
            values = parse_metrics(metrics[1])
        except ValueError as exc:
            row["metricsError"] = f"unreadable metrics: {_short(exc)}"
            return row
        now = time.monotonic()
        row["clients"] = int(values.get(CLIENTS, 0))
        row["bufferDepth"] = int(values.get(BUFFER_DEPTH, 0))
        row["reconnects"] = int(values.get(RECONNECTS, 0))
        row["forged"] = int(values.get(FORGED, 0))
        row["forgedReasons"] = {k[len(FORGED) + len("{reason="):-1]: int(v) for k, v in values.items()
                                if k.startswith(FORGED + "{reason=")}
        for key, name in (("inPerSec", RECEIVED), ("outPerSec", PUBLISHED)):
            rate = self._rate(node.node_id, name, now, values.get(name, 0.0))
            row[key] = None if rate is None else round(rate, 3)
        lag_sum = self._delta(node.node_id, LAG_SUM, now, values.get(LAG_SUM, 0.0))
        lag_count = self._delta(node.node_id, LAG_COUNT, now, values.get(LAG_COUNT, 0.0))
        if lag_sum is not None and lag_count:
            row["_lagSum"], row["_lagCount"] = lag_sum, lag_count
            row["latencyMs"] = round(1000 * lag_sum / lag_count, 2)
        return row

    async def poll_service(self, row: dict[str, Any]) -> dict[str, Any]:
        """``up``: the process's port accepts a TCP connection within the probe timeout."""
        port = row.get("port")
        row["up"] = False
        if not port:
            return row
        try:
            async with asyncio.timeout(self.probe_timeout):
                _, writer = await asyncio.open_connection("127.0.0.1", int(port))
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            row["up"] = True
        except (OSError, TimeoutError):
            pass
        return row

    async def _get(self, session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
        async with asyncio.timeout(self.probe_timeout), session.get(url) as resp:
            return resp.status, await resp.text()

    def _rate(self, node_id: str, name: str, now: float, value: float) -> float | None:
        prev = self._counters.get((node_id, name))
        self._counters[(node_id, name)] = (now, value)
        return counter_rate(prev, now, value)

    def _delta(self, node_id: str, name: str, now: float, value: float) -> float | None:
        prev = self._counters.get((node_id, name))
        self._counters[(node_id, name)] = (now, value)
        if prev is None:
            return None
        return value - prev[1] if value >= prev[1] else value

    # -- Web PubSub --------------------------------------------------------------------------
    async def poll_webpubsub(self, session: aiohttp.ClientSession, url: str | None) -> dict[str, Any]:
        """Connections and groups per hub of the local Web PubSub service."""
        row: dict[str, Any] = {"url": url, "up": False, "error": None, "hubs": []}
        if not url:
            return row
        try:
            status, body = await self._get(session, url)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            stats = json.loads(body)
        except Exception as exc:  # noqa: BLE001 - any failure is "down" with its reason
            row["error"] = _short(exc)
            return row
        row["up"] = True
        row["hubs"] = [
            {"hub": h["hub"], "connections": len(h["connections"]), "groups": h["groups"],
             "users": len(h["users"])}
            for h in stats.get("hubs", [])
        ]
        return row

    # -- regions ---------------------------------------------------------------------------
    def _kind(self, subscription: str) -> str:
        if subscription in self._function_subs:
            return "function"
        return "node" if subscription.startswith(self._node_prefix) else "other"

    async def poll_meter(self, session: aiohttp.ClientSession, region: RegionTarget) -> dict[str, Any] | None:
        """The region's credits: the last whole second's use against the budget (None: no meter)."""
        try:
            host, port = emulator_address(region.connection_string)
            status, body = await self._get(session, f"http://{host}:{port}/$emulator/meter")
            meter = json.loads(body) if status == 200 else None
        except Exception:  # noqa: BLE001 - not an emulator with a meter: no credits shown
            return None
        if not meter:
            return None
        seconds = meter.get("per_second") or [{}]
        last = seconds[-2] if len(seconds) > 1 else seconds[-1]
        budget = float(meter.get("credits_per_second") or 0)
        used = float(last.get("used", 0))
        return {"tier": meter.get("tier"), "budget": budget, "perSecond": used,
                "refusedPerSecond": float(last.get("refused", 0)),
                "headroom": round(1.0 - used / budget, 3) if budget else None,
                "refusedTotal": int(meter.get("total", {}).get("refused_operations", 0))}

    async def poll_region(self, region: RegionTarget, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {"name": region.name, "namespace": region.namespace, "topic": region.topic,
                               "up": False, "error": None, "scheduled": None, "subscriptions": [], "credits": None}
        if session is not None:
            row["credits"] = await self.poll_meter(session, region)
        admin = self._admins.get(region.name)
        if admin is None:
            # no retries: a region that does not answer within the probe timeout is down
            admin = admin_client(connection_string=region.connection_string, retry_total=0)
            self._admins[region.name] = admin
        try:
            async with asyncio.timeout(self.probe_timeout):
                topic, subs = await asyncio.gather(
                    admin.get_topic_runtime_properties(region.topic),
                    _all(admin.list_subscriptions_runtime_properties(region.topic)),
                )
        except Exception as exc:  # noqa: BLE001 - any failure is "down" with its reason
            row["error"] = _short(exc)
            self._admins.pop(region.name, None)
            with contextlib.suppress(Exception):
                await admin.close()
            return row
        row["up"] = True
        # Service Bus keeps scheduled messages in the topic until their time (then fans them
        # out), so the scheduled count is the topic's; subscriptions have active and dead-letter
        row["scheduled"] = topic.scheduled_message_count
        row["subscriptions"] = [
            {"name": s.name, "kind": self._kind(s.name), "active": s.active_message_count,
             "deadLetter": s.dead_letter_message_count}
            for s in sorted(subs, key=lambda s: (self._kind(s.name) != "function", s.name))
        ]
        signature = tuple((s.name, s.dead_letter_message_count) for s in subs if s.dead_letter_message_count)
        self._maybe_peek(region, signature)
        return row

    def _maybe_peek(self, region: RegionTarget, signature: tuple[tuple[str, int], ...]) -> None:
        if signature == self._peeked.get(region.name, ()):
            return
        running = self._peek_tasks.get(region.name)
        if running is not None and not running.done():
            return
        if time.monotonic() < self._peek_after.get(region.name, 0.0):
            return
        if not signature:
            self._dead_letters[region.name] = []
            self._peeked[region.name] = signature
            return
        self._peek_tasks[region.name] = asyncio.create_task(self._peek(region, signature),
                                                            name=f"peek-dlq-{region.name}")

    async def _peek(self, region: RegionTarget, signature: tuple[tuple[str, int], ...]) -> None:
        try:
            async with asyncio.timeout(PEEK_TIMEOUT):
                found = await peek_dead_letters(region, [name for name, _ in signature])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - shown stale, tried again a little later
            log.warning("peeking the dead-letter queues of %s failed: %s", region.name, _short(exc))
            self._peek_after[region.name] = time.monotonic() + PEEK_RETRY_AFTER
            return
        self._dead_letters[region.name] = found
        self._peeked[region.name] = signature


async def _all(items: AsyncIterable[T]) -> list[T]:
    return [item async for item in items]


async def peek_dead_letters(region: RegionTarget, subscriptions: Sequence[str]) -> list[dict[str, Any]]:
    """The newest dead-lettered messages of ``subscriptions``, peeked (they stay where they are)."""
    out: list[dict[str, Any]] = []
    async with servicebus_client(connection_string=region.connection_string, retry_total=0) as client:
        for name in subscriptions:
            receiver = client.get_subscription_receiver(region.topic, name, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
            async with receiver:
                messages = await receiver.peek_messages(max_message_count=PEEK_MAX)
            for msg in messages:
                try:
                    body = str(msg)
                except Exception:  # noqa: BLE001 - a body the SDK cannot render is shown as such
                    body = "<unreadable body>"
                enqueued = msg.enqueued_time_utc
                out.append({
                    "region": region.name, "subscription": name, "sequenceNumber": msg.sequence_number,
                    "enqueued": enqueued.isoformat() if enqueued else None,
                    "reason": msg.dead_letter_reason, "description": msg.dead_letter_error_description,
                    "body": body[:200],
                })
    out.sort(key=lambda d: str(d["enqueued"] or ""), reverse=True)
    return out[:DEAD_LETTERS_SHOWN]
