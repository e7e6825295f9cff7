"""Subscription names of nodes: unique per node id even when they must be cut to 50 characters."""

from __future__ import annotations

import hashlib

from socketio_servicebus.servicebus.subscription import subscription_name_for


def test_short_node_ids_keep_their_plain_name() -> None:
    assert subscription_name_for("a1", "node-") == "node-a1"
    assert subscription_name_for("x" * 45, "node-") == "node-" + "x" * 45  # exactly 50


def test_long_node_ids_sharing_45_characters_get_subscriptions_of_their_own() -> None:
    common = "factory-line-7-" + "x" * 30  # 45 characters in common
    a, b = common + "-west-0001", common + "-east-0002"  # 55 characters each (node ids go up to 63)
    name_a, name_b = subscription_name_for(a, "node-"), subscription_name_for(b, "node-")
    assert name_a != name_b
    assert len(name_a) == len(name_b) == 50
    assert name_a.startswith("node-factory-line-7-")
    assert name_a.endswith("-" + hashlib.sha256(a.encode()).hexdigest()[:12])  # a hash of the whole id
    assert subscription_name_for(a, "node-") == name_a  # stable: the node finds its own again
    assert len(subscription_name_for("y" * 63, "node-")) == 50


def test_ids_that_differ_only_in_refused_characters_differ() -> None:
    assert subscription_name_for("host a", "node-") != subscription_name_for("host-a", "node-")
    assert set(subscription_name_for("host a", "node-")) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
