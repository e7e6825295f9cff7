"""Emulator ``Config.json`` for a multi-region stack, built from ``socketio_servicebus/topology.json``.

The same names Bicep provisions in Azure (topic, function subscriptions and their rules,
pre-provisioned on-premise node subscriptions, the topic-scoped Listen+Send policy) are
provisioned here in the emulator, so the local stack cannot drift from the cloud one.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from socketio_servicebus.topology import load_topology

ROOT_KEY_NAME = "RootManageSharedAccessKey"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class RegionSpec:
    name: str
    on_prem_nodes: list[str] = field(default_factory=list)
    root_key: str = field(default_factory=new_key)
    on_prem_key: str = field(default_factory=new_key)

    @property
    def namespace(self) -> str:
        return f"sb-{self.name}"


def node_rule(node_id: str) -> str:
    topo = load_topology()
    return str(topo["nodeSubscription"]["sqlTemplate"]).replace("{node}", node_id)


def _sql_rule(name: str, sql: str) -> dict[str, Any]:
    return {"Name": name, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": sql}}}


def function_subscriptions(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The Function App's ``router``/``persist``/``webpubsub`` subscriptions in Config.json form.

    ``overrides`` maps a logical name (``router``) to Properties to change, e.g.
    ``{"router": {"MaxDeliveryCount": 3}}``.
    """
    topo = load_topology()
    subs: list[dict[str, Any]] = []
    for key, spec in topo["functionSubscriptions"].items():
        props = {
            "LockDuration": spec["lockDuration"],
            "MaxDeliveryCount": spec["maxDeliveryCount"],
            "DefaultMessageTimeToLive": spec["defaultMessageTimeToLive"],
            "DeadLetteringOnMessageExpiration": False,
            "RequiresSession": False,
        }
        props.update((overrides or {}).get(key, {}))
        subs.append({"Name": spec["name"], "Properties": props, "Rules": [_sql_rule(spec["rule"], spec["sql"])]})
    return subs


def topic_properties() -> dict[str, Any]:
    props = load_topology()["topicProperties"]
    return {
        "RequiresDuplicateDetection": props["requiresDuplicateDetection"],
        "DuplicateDetectionHistoryTimeWindow": props["duplicateDetectionHistoryTimeWindow"],
        "DefaultMessageTimeToLive": props["defaultMessageTimeToLive"],
    }


def namespace_config(region: RegionSpec) -> dict[str, Any]:
    topo = load_topology()
    subs = function_subscriptions()
    node = topo["nodeSubscription"]
    for node_id in region.on_prem_nodes:
        subs.append(
            {
                "Name": node["prefix"] + node_id,
                "Properties": {
                    "LockDuration": node["lockDuration"],
                    "MaxDeliveryCount": node["maxDeliveryCount"],
                    "DefaultMessageTimeToLive": node["defaultMessageTimeToLive"],
                },
                "Rules": [_sql_rule(node["rule"], node_rule(node_id))],
            }
        )
    topic: dict[str, Any] = {
        "Name": topo["topic"],
        "Properties": topic_properties(),
        "Subscriptions": subs,
    }
    if region.on_prem_nodes:
        topic["SharedAccessPolicies"] = [
            {"Name": topo["onPremPolicy"], "Key": region.on_prem_key, "Rights": ["Listen", "Send"]}
        ]
    return {
        "Name": region.namespace,
        "SharedAccessPolicies": [
            {"Name": ROOT_KEY_NAME, "Key": region.root_key, "Rights": ["Manage", "Listen", "Send"]}
        ],
        "Topics": [topic],
    }


def emulator_config(regions: list[RegionSpec], **kwargs: Any) -> dict[str, Any]:
    return {
        "UserConfig": {
            "Namespaces": [namespace_config(r, **kwargs) for r in regions],
            "Logging": {"Type": "Console"},
        }
    }


def connection_string(port: int, key_name: str, key: str) -> str:
    return (
        f"Endpoint=sb://localhost:{port};SharedAccessKeyName={key_name};SharedAccessKey={key};"
        "UseDevelopmentEmulator=true"
    )
