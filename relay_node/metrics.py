"""Prometheus exposition: a Collector that reads the node's state on every scrape.

Nothing is copied between scrapes: the manager's ``metrics.snapshot()`` is translated into
metric families each time (see :func:`translate_snapshot`), plus the node's own gauges. Each node gets its own :class:`CollectorRegistry`, so several nodes can
live in one process (tests) without clashing in the global registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)

log = logging.getLogger("relay_node.metrics")

MANAGER_PREFIX = "socketio_servicebus_"
NODE_PREFIX = "relay_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(key: str, prefix: str = MANAGER_PREFIX) -> str:
    name = _BAD.sub("_", key.strip()).strip("_").lower() or "unnamed"
    if name[0].isdigit():
        name = "_" + name
    return prefix + name


#: snapshot keys that are gauges (everything else that is not a histogram/summary part counts up)
GAUGE_KEYS = frozenset({"buffer_depth", "nodes", "lag_seconds_last", "buffered", "connected", "ready", "throttled"})
_GAUGE_SUFFIXES = ("_avg", "_depth", "_last", "_gauge", "_seconds_max")


#: counters the manager reports per label value, as ``<name>{<label>=<value>}`` snapshot keys;
#: the family is exposed even before its first sample (a dashboard can show 0)
LABELLED_COUNTERS: dict[str, str] = {"forged_dropped": "reason"}
_LABELLED_KEY = re.compile(r"^([A-Za-z_]\w*)\{([A-Za-z_]\w*)=([^}]*)\}$")


def _labelled(snapshot: dict[str, Any], prefix: str) -> tuple[list[Metric], set[str]]:
    samples: dict[tuple[str, str], list[tuple[str, float]]] = {
        (name, label): [] for name, label in LABELLED_COUNTERS.items()}
    used: set[str] = set()
    for key, value in snapshot.items():
        m = _LABELLED_KEY.match(str(key))
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            samples.setdefault((m[1], m[2]), []).append((m[3], float(value)))
            used.add(str(key))
    out: list[Metric] = []
    for (name, label), items in sorted(samples.items()):
        family = CounterMetricFamily(metric_name(name, prefix), f"manager counter {name} by {label}", labels=[label])
        for value_label, value in sorted(items):
            family.add_metric([value_label], value)
        out.append(family)
    return out, used


def _is_gauge(key: str) -> bool:
    return key in GAUGE_KEYS or key.endswith(_GAUGE_SUFFIXES)


def translate_snapshot(snapshot: dict[str, Any], prefix: str = MANAGER_PREFIX) -> list[Metric]:
    """Metric families for the manager's flat ``{name: number}`` snapshot.

    - ``<h>_le_<bound>`` (cumulative) + ``<h>_sum`` + ``<h>_count`` → histogram ``<h>``;
    - ``<s>_sum`` + ``<s>_count`` without buckets → summary ``<s>``;
    - :data:`GAUGE_KEYS` and ``*_avg``/``*_depth``/``*_last`` → gauges;
    - everything else → counters (``_total`` added by the exposition, not doubled).
    - ``<name>{<label>=<value>}`` → one counter ``<name>`` with that label (:data:`LABELLED_COUNTERS`).
    Booleans count as 0/1; non-numbers are skipped.
    """
    out, labelled_keys = _labelled(snapshot, prefix)
    values: dict[str, float] = {}
    for key, value in snapshot.items():
        if key in labelled_keys:
            continue
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[str(key)] = float(value)
    used: set[str] = set()

    buckets: dict[str, list[tuple[str, float]]] = {}
    for key, value in values.items():
        m = re.match(r"^(.+)_le_(inf|\d+(?:\.\d+)?)$", key)
        if m:
            buckets.setdefault(m[1], []).append((m[2], value))
    for base, items in sorted(buckets.items()):
        if f"{base}_sum" not in values:
            continue
        items.sort(key=lambda kv: float("inf") if kv[0] == "inf" else float(kv[0]))
        pairs = [("+Inf" if b == "inf" else b, v) for b, v in items]
        if pairs[-1][0] != "+Inf":
            pairs.append(("+Inf", values.get(f"{base}_count", pairs[-1][1])))
        hist = HistogramMetricFamily(metric_name(base, prefix), f"manager histogram {base}",
                                     buckets=pairs, sum_value=values[f"{base}_sum"])
        out.append(hist)
        used.update({f"{base}_le_{b}" for b, _ in items} | {f"{base}_sum", f"{base}_count"})

    for key in sorted(values):
        if key.endswith("_sum") and key not in used:
            base = key[: -len("_sum")]
            if f"{base}_count" in values:
                out.append(SummaryMetricFamily(metric_name(base, prefix), f"manager summary {base}",
                                               count_value=int(values[f"{base}_count"]), sum_value=values[key]))
                used.update({key, f"{base}_count"})

    for key in sorted(values):
        if key in used:
            continue
        name = metric_name(key, prefix)
        family: Metric
        if _is_gauge(key):
            family = GaugeMetricFamily(name, f"manager gauge {key}")
        else:
            if name.endswith("_total"):
                name = name[: -len("_total")]
            family = CounterMetricFamily(name, f"manager counter {key}")
        family.add_metric([], values[key])
        out.append(family)
    return out


class RelayCollector:
    """Reads a :class:`relay_node.server.RelayNode` lazily (it only needs the attributes used here)."""

    def __init__(self, node: Any):
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = InfoMetricFamily(NODE_PREFIX + "node", "relay node identity")
        info.add_metric([], {"node": node.cfg.node_id, "region": node.cfg.region, "topic": node.cfg.topic})
        yield info

        clients = GaugeMetricFamily(
            NODE_PREFIX + "connected_clients", "socket.io clients connected to this node", labels=["namespace"]
        )
        for namespace, count in sorted(node.connected_clients().items()):
            clients.add_metric([namespace], count)
        yield clients

        health = node.safe_health()
        for key in ("connected", "subscription_ready", "ready"):
            g = GaugeMetricFamily(NODE_PREFIX + f"servicebus_{key}", f"manager health {key} (1 = yes)")
            g.add_metric([], 1.0 if health.get(key) else 0.0)
            yield g
        g = GaugeMetricFamily(NODE_PREFIX + "draining", "1 while the node is shutting down")
        g.add_metric([], 1.0 if node.draining else 0.0)
        yield g

        for name, help_text, value in node.counters():
            c = CounterMetricFamily(NODE_PREFIX + name, help_text)
            c.add_metric([], value)
            yield c

        try:
            snapshot = node.manager.metrics.snapshot()
        except Exception:  # a scrape must not fail because the manager does
            log.exception("manager metrics snapshot failed")
            snapshot = {}
        yield from translate_snapshot(snapshot)


def make_registry(node: Any) -> tuple[CollectorRegistry, Callable[[], bytes]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(node))
    return registry, lambda: generate_latest(registry)
