"""The per-node subscription: its name, SQL rule and lifetime settings from ``topology.json``,
and the admin calls that create, repair and delete it.

Only :func:`ensure_node_subscription` and :func:`delete_node_subscription` talk to Service Bus
(through :func:`socketio_servicebus.servicebus.clients.admin_client`); the rest is pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.servicebus.management import SqlRuleFilter

from socketio_servicebus.topology import load_topology

__all__ = [
    "NodeSubscriptionSpec",
    "node_subscription_spec",
    "ensure_node_subscription",
    "check_node_subscription",
    "delete_node_subscription",
    "parse_iso_duration",
    "sql_literal",
]

_MAX_NAME = 50  # Service Bus subscription name limit
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_iso_duration(text: str) -> float:
    """Seconds of a simple ISO 8601 duration such as ``PT5M`` or ``P1D``."""
    m = _DURATION.match(text)
    if not m or text in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def sql_literal(value: str) -> str:
    """``value`` for use inside a single-quoted SQL filter string."""
    return value.replace("'", "''")


_NAME_HASH_CHARS = 12


def subscription_name_for(node_id: str, prefix: str) -> str:
    """``<prefix><node_id>`` with characters Service Bus refuses replaced; at most 50 chars.

    A longer name keeps its start and ends in ``-<12 hex of SHA-256 of the whole node id>``, so two
    node ids that share their first 45 characters still get subscriptions of their own (a shared
    one would hand each node's messages to the other).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", node_id)
    name = prefix + safe
    if len(name) <= _MAX_NAME and safe == node_id:
        return name
    digest = hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:_NAME_HASH_CHARS]
    return f"{name[:_MAX_NAME - _NAME_HASH_CHARS - 1]}-{digest}"


@dataclass(frozen=True, slots=True)
class NodeSubscriptionSpec:
    topic: str
    name: str
    rule: str
    sql: str
    ttl: float
    auto_delete_on_idle: float
    lock_duration: float
    max_delivery_count: int


def node_subscription_spec(
    *, topic: str, node_id: str, ttl: float | None = None, auto_delete_on_idle: float | None = None
) -> NodeSubscriptionSpec:
    """The subscription a node creates for itself, per ``topology.json`` ``nodeSubscription``."""
    cfg = load_topology()["nodeSubscription"]
    return NodeSubscriptionSpec(
        topic=topic,
        name=subscription_name_for(node_id, cfg["prefix"]),
        rule=cfg["rule"],
        sql=cfg["sqlTemplate"].format(node=sql_literal(node_id)),
        ttl=ttl if ttl is not None else parse_iso_duration(cfg["defaultMessageTimeToLive"]),
        auto_delete_on_idle=(
            auto_delete_on_idle if auto_delete_on_idle is not None else parse_iso_duration(cfg["autoDeleteOnIdle"])
        ),
        lock_duration=parse_iso_duration(cfg["lockDuration"]),
        max_delivery_count=int(cfg["maxDeliveryCount"]),
    )


async def ensure_node_subscription(admin: Any, spec: NodeSubscriptionSpec) -> bool:
    """Create the subscription with exactly one rule, ``spec.rule`` (``$Default`` removed).

    Idempotent: an existing subscription (a restarted node with the same id) gets its rules
    repaired.  Returns ``True`` if the subscription was created by this call.
    """
    created = True
    try:
        await admin.create_subscription(
            spec.topic,
            spec.name,
            default_message_time_to_live=dt.timedelta(seconds=spec.ttl),
            auto_delete_on_idle=dt.timedelta(seconds=spec.auto_delete_on_idle),
            lock_duration=dt.timedelta(seconds=spec.lock_duration),
            max_delivery_count=spec.max_delivery_count,
            dead_lettering_on_message_expiration=False,
        )
    except ResourceExistsError:
        created = False
    # Add ours first, then drop the rest: no window in which the subscription matches nothing.
    try:
        await admin.create_rule(spec.topic, spec.name, spec.rule, filter=SqlRuleFilter(spec.sql))
    except ResourceExistsError:
        rule = await admin.get_rule(spec.topic, spec.name, spec.rule)
        current = getattr(rule.filter, "sql_expression", None)
        if current != spec.sql:
            await admin.delete_rule(spec.topic, spec.name, spec.rule)
            await admin.create_rule(spec.topic, spec.name, spec.rule, filter=SqlRuleFilter(spec.sql))
    names = [r.name async for r in admin.list_rules(spec.topic, spec.name)]
    for name in names:
        if name != spec.rule:
            try:
                await admin.delete_rule(spec.topic, spec.name, name)
            except ResourceNotFoundError:
                pass
    return created


async def check_node_subscription(admin: Any, spec: NodeSubscriptionSpec) -> bool:
    """Re-assert the node rule: if the subscription's rules are not exactly ``spec.rule`` with
    ``spec.sql`` (someone deleted it, changed it or added a catch-all rule), repair them.

    One ``list_rules`` call when nothing changed.  Returns ``True`` if a repair was made.  A
    subscription that is gone is left alone: the listener recreates it when its link fails.
    """
    try:
        rules = [r async for r in admin.list_rules(spec.topic, spec.name)]
    except ResourceNotFoundError:
        return False
    if len(rules) == 1 and rules[0].name == spec.rule and getattr(rules[0].filter, "sql_expression", None) == spec.sql:
        return False
    await ensure_node_subscription(admin, spec)
    return True


async def delete_node_subscription(admin: Any, spec: NodeSubscriptionSpec) -> bool:
    try:
        await admin.delete_subscription(spec.topic, spec.name)
    except ResourceNotFoundError:
        return False
    return True
