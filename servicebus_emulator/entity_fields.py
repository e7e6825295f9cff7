"""The settings of topics, queues and subscriptions: one row each, with its default and its names.

``config.py`` reads them from ``Config.json`` (``Properties`` of an entity, by :attr:`EntityField.json`);
``admin_http.py`` reads and writes them in ATOM descriptions (by :attr:`EntityField.xml`); the
engine keeps them in the ``*Config`` dataclasses of ``config.py`` (by :attr:`EntityField.attr`),
whose defaults come from here. A default is written once, in this file.

Descriptive fields that the engine does not use (``UserMetadata``, ``Status`` ...) are not rows
here: the admin API keeps them beside the entity (``admin_extras``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest

NEVER = 10_675_199 * 86_400.0  # TimeSpan.MaxValue in seconds, the service's "never"


@dataclass(frozen=True)
class EntityField:
    attr: str  # attribute of TopicConfig / QueueConfig / SubscriptionConfig
    json: str  # key in Config.json "Properties"
    xml: str  # element of the ATOM TopicDescription / QueueDescription / SubscriptionDescription
    kind: str  # "duration" (seconds; ISO 8601 in both formats), "int", "bool" or "str"
    default: Any
    fixed: bool = False  # set at creation only; an update that changes it is refused


LOCK_DURATION = EntityField("lock_duration", "LockDuration", "LockDuration", "duration", 60.0)
MAX_DELIVERY_COUNT = EntityField("max_delivery_count", "MaxDeliveryCount", "MaxDeliveryCount", "int", 10)
DEFAULT_TTL = EntityField("default_ttl", "DefaultMessageTimeToLive", "DefaultMessageTimeToLive", "duration", NEVER)
DEAD_LETTERING_ON_EXPIRATION = EntityField(
    "dead_lettering_on_expiration", "DeadLetteringOnMessageExpiration", "DeadLetteringOnMessageExpiration",
    "bool", False)
AUTO_DELETE_ON_IDLE = EntityField("auto_delete_on_idle", "AutoDeleteOnIdle", "AutoDeleteOnIdle", "duration", NEVER)
REQUIRES_DUPLICATE_DETECTION = EntityField(
    "requires_duplicate_detection", "RequiresDuplicateDetection", "RequiresDuplicateDetection", "bool", False,
    fixed=True)
DUPLICATE_WINDOW = EntityField(
    "duplicate_window", "DuplicateDetectionHistoryTimeWindow", "DuplicateDetectionHistoryTimeWindow", "duration",
    600.0)
FORWARD_TO = EntityField("forward_to", "ForwardTo", "ForwardTo", "str", "")
FORWARD_DEAD_LETTERED_TO = EntityField(
    "forward_dead_lettered_to", "ForwardDeadLetteredMessagesTo", "ForwardDeadLetteredMessagesTo", "str", "")
REQUIRES_SESSION = EntityField("requires_session", "RequiresSession", "RequiresSession", "bool", False, fixed=True)

#: what subscriptions and queues share: locks, delivery count, TTL, idle deletion
_DELIVERY = (LOCK_DURATION, MAX_DELIVERY_COUNT, DEFAULT_TTL, DEAD_LETTERING_ON_EXPIRATION, AUTO_DELETE_ON_IDLE)

TOPIC = (DEFAULT_TTL, REQUIRES_DUPLICATE_DETECTION, DUPLICATE_WINDOW)
QUEUE = (*_DELIVERY, REQUIRES_DUPLICATE_DETECTION, DUPLICATE_WINDOW, REQUIRES_SESSION)
SUBSCRIPTION = (*_DELIVERY, FORWARD_TO, FORWARD_DEAD_LETTERED_TO, REQUIRES_SESSION)


def _clean(field: EntityField, value: Any) -> Any:
    return (value or "") if field.kind == "str" else value


def created(given: Mapping[str, Any], table: tuple[EntityField, ...]) -> dict[str, Any]:
    """Config attributes for a new entity from ``given`` (converted values by XML name);
    the default for each field not given."""
    return {f.attr: _clean(f, given.get(f.xml, f.default)) for f in table}


def updated(given: Mapping[str, Any], table: tuple[EntityField, ...], current: Any, kind: str) -> dict[str, Any]:
    """Config attributes after an update: ``given`` (by XML name) over ``current``'s values.
    A field fixed at creation must keep its value (``BadRequest`` otherwise) and is left out."""
    out: dict[str, Any] = {}
    for f in table:
        value = getattr(current, f.attr)
        if f.fixed:
            if f.xml in given and given[f.xml] != value:
                raise BadRequest(f"{f.xml} cannot be changed on an existing {kind}.")
            continue
        out[f.attr] = _clean(f, given.get(f.xml, value))
    return out


def described(config: Any, table: tuple[EntityField, ...]) -> dict[str, Any]:
    """The fields of ``config`` by XML name, as a description shows them (an empty string: absent)."""
    return {f.xml: (getattr(config, f.attr) or None) if f.kind == "str" else getattr(config, f.attr) for f in table}
