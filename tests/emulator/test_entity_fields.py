"""One table of entity settings (entity_fields.py) serves Config.json and the admin API alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from servicebus_emulator import entity_fields as ef
from servicebus_emulator.config import (
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
    format_duration,
    parse_config,
)
from servicebus_emulator.errors import BadRequest

TABLES: list[tuple[tuple[ef.EntityField, ...], type[Any]]] = [
    (ef.TOPIC, TopicConfig), (ef.QUEUE, QueueConfig), (ef.SUBSCRIPTION, SubscriptionConfig),
]

#: a value other than the default, per field, in the engine's units
CHANGED = {"duration": 42.0, "int": 3, "bool": True, "str": "elsewhere"}


@pytest.mark.parametrize(("table", "config_class"), TABLES)
def test_the_config_classes_take_their_defaults_from_the_table(table: tuple[ef.EntityField, ...],
                                                                config_class: type[Any]) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    for row in table:
        assert defaults[row.attr] == row.default, row.attr


@pytest.mark.parametrize(("table", "config_class"), TABLES)
def test_config_json_and_an_admin_description_give_the_same_settings(table: tuple[ef.EntityField, ...],
                                                                      config_class: type[Any]) -> None:
    props = {f.json: format_duration(CHANGED[f.kind]) if f.kind == "duration" else CHANGED[f.kind] for f in table}
    sub = {"Name": "s", "Properties": props} if config_class is SubscriptionConfig else {"Name": "s"}
    topic = {"Name": "t", "Properties": props if config_class is TopicConfig else {}, "Subscriptions": [sub]}
    queue = {"Name": "q", "Properties": props}
    ns = parse_config({"UserConfig": {"Namespaces": [{"Name": "n", "Topics": [topic], "Queues": [queue]}]}})
    parsed = {TopicConfig: ns.namespaces[0].topics[0], QueueConfig: ns.namespaces[0].queues[0],
              SubscriptionConfig: ns.namespaces[0].topics[0].subscriptions[0]}[config_class]
    from_admin = ef.created({f.xml: CHANGED[f.kind] for f in table}, table)
    for row in table:
        assert getattr(parsed, row.attr) == from_admin[row.attr] == CHANGED[row.kind], row.attr


def test_an_update_keeps_what_it_does_not_name_and_refuses_a_fixed_field() -> None:
    current = QueueConfig("q", lock_duration=30.0, requires_duplicate_detection=True)
    assert ef.updated({"MaxDeliveryCount": 4}, ef.QUEUE, current, "queue")["lock_duration"] == 30.0
    with pytest.raises(BadRequest, match="RequiresDuplicateDetection cannot be changed on an existing queue"):
        ef.updated({"RequiresDuplicateDetection": False}, ef.QUEUE, current, "queue")
