"""Emulator ``Config.json`` for a multi-region stack, built from ``socketio_servicebus/topology.json``.

One emulator namespace per region (each on its own port), each with the topic and the Function
App subscriptions ``router`` / ``persist`` / ``webpubsub`` with their SQL rules, lock duration,
max delivery count and TTL exactly as ``topology.json`` says — the same thing
``infra/app/servicebus-region.bicep`` deploys. Reusable by any test that needs "the real layout"::

    from tests.support.stack_config import stack_config, region_settings

    cfg = stack_config(["eu", "us"], extra_subscriptions={"test-all": "1=1"})
    path.write_text(json.dumps(cfg)); emu = EmulatorProcess(path); emu.start()
    env = region_settings(emu, ["eu", "us"], neighbors={})   # SIO_REGION_MAP + ServiceBusConnection_*
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from local_stack.topology_config import function_subscriptions
from socketio_servicebus.topology import load_topology
from tests.support.emulator_process import TEST_KEY

__all__ = ["stack_config", "namespace_config", "region_settings", "function_subscriptions"]


def _extra(name: str, sql: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(sql, Mapping):
        return {"Name": name, **dict(sql)}
    return {
        "Name": name,
        "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 10},
        "Rules": [{"Name": "all", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": sql}}}],
    }


def namespace_config(
    name: str,
    *,
    port: int | None = None,
    extra_subscriptions: Mapping[str, str | Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    duplicate_detection: str | None = None,
) -> dict[str, Any]:
    """One region's namespace. ``extra_subscriptions``: name -> SQL filter (or a full subscription dict).

    ``duplicate_detection``: an ISO duration to turn on the topic's duplicate detection (the
    deployed topic has it on, see ``topicProperties`` in topology.json; tests leave it off to prove
    that receivers drop the router's retry duplicates by themselves).
    """
    topo = load_topology()
    topic_props: dict[str, Any] = {"DefaultMessageTimeToLive": "P1D"}
    if duplicate_detection:
        topic_props.update(
            {"RequiresDuplicateDetection": True, "DuplicateDetectionHistoryTimeWindow": duplicate_detection}
        )
    ns: dict[str, Any] = {
        "Name": name,
        # a named key, so a test that restarts a region keeps its connection strings (a namespace
        # without policies gets a random key per start)
        "SharedAccessPolicies": [{"Name": "RootManageSharedAccessKey", "Key": TEST_KEY,
                                  "Rights": ["Manage", "Listen", "Send"]}],
        "Topics": [
            {
                "Name": topo["topic"],
                "Properties": topic_props,
                "Subscriptions": function_subscriptions(overrides)
                + [_extra(n, s) for n, s in (extra_subscriptions or {}).items()],
            }
        ],
    }
    if port is not None:
        ns["Port"] = port
    return ns


def stack_config(
    regions: Iterable[str],
    *,
    ports: Mapping[str, int] | None = None,
    extra_subscriptions: Mapping[str, str | Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    duplicate_detection: str | None = None,
    logging_type: str = "Console",
) -> dict[str, Any]:
    """A full emulator Config.json: one namespace per region, named after the region."""
    return {
        "UserConfig": {
            "Namespaces": [
                namespace_config(
                    r,
                    port=(ports or {}).get(r),
                    extra_subscriptions=extra_subscriptions,
                    overrides=overrides,
                    duplicate_detection=duplicate_detection,
                )
                for r in regions
            ],
            "Logging": {"Type": logging_type},
        }
    }


def region_settings(
    connection_strings: Mapping[str, str],
    *,
    home: str,
    neighbors: Mapping[str, list[str]] | None = None,
) -> dict[str, str]:
    """App settings for a local stack: ``SIO_REGION``, ``SIO_REGION_MAP`` (with ``neighbors`` where
    given), ``ServiceBusConnection`` (home) and ``ServiceBusConnection_<region>`` per region."""
    topo = load_topology()
    names = topo["appSettings"]
    rmap = {
        r: ({"neighbors": list(neighbors[r])} if neighbors and r in neighbors else {}) for r in connection_strings
    }
    env = {
        names["region"]: home,
        names["regionMap"]: json.dumps(rmap),
        names["topic"]: topo["topic"],
        names["serviceBusConnection"]: connection_strings[home],
    }
    for region, conn in connection_strings.items():
        env[topo["regionConnectionTemplate"].replace("{region}", region)] = conn
    return env
