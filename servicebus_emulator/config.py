"""Configuration: the official emulator's ``Config.json`` plus our extensions.

Accepted as is: ``{"UserConfig": {"Namespaces": [{"Name", "Queues", "Topics": [{"Name",
"Properties", "Subscriptions": [{"Name", "Properties", "Rules": [...]}]}]}], "Logging": ...}}``.

Extensions (all optional):
- several namespaces; each gets its own port (``"Port"`` on the namespace, else the next free
  one, or an ephemeral one when the base port is 0);
- ``AutoDeleteOnIdle`` in subscription and queue ``Properties``;
- ``SharedAccessPolicies`` on a namespace or a topic: ``[{"Name", "Key", "Rights": ["Listen",
  "Send", "Manage"]}]``. A namespace without policies gets ``RootManageSharedAccessKey`` with
  a random key made up at start and printed (``default_key.py``), not the official emulator's
  public ``SAS_KEY_VALUE``;
- ``MaxMessageSizeInKilobytes`` (default 256) and ``MaxSizeInMegabytes`` (per entity, default 100)
  on a namespace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import default_key
from . import entity_fields as ef
from .entity_fields import NEVER as NEVER  # re-exported: its import path before entity_fields.py
from .errors import ConfigError as ConfigError  # re-exported: its import path before errors.py held it

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
#: the official emulator's public key: never used as a default here (default_key.py)
DEFAULT_KEY = "SAS_KEY_VALUE"
DEFAULT_NAMESPACE = "sbemulatorns"
DEFAULT_TOPIC = "socketio"

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str | float | int, where: str = "duration") -> float:
    """Seconds from an ISO 8601 duration (``PT5M``, ``P1D``) or a .NET ``d.hh:mm:ss`` TimeSpan."""
    if isinstance(text, (int, float)):
        return float(text)
    value = str(text).strip()
    match = _DURATION.match(value)
    if match and value not in ("P", "PT"):
        parts = {k: float(v) for k, v in match.groupdict().items() if v}
        return (
            parts.get("d", 0.0) * 86400
            + parts.get("h", 0.0) * 3600
            + parts.get("m", 0.0) * 60
            + parts.get("s", 0.0)
        )
    timespan = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$", value)
    if timespan:
        days, hours, minutes, seconds = timespan.groups()
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    raise ConfigError(f"{where}: {text!r} is not an ISO 8601 duration such as PT5M or P1D")


def format_duration(seconds: float) -> str:
    """ISO 8601 duration the way the service writes it (``PT5M``, ``P10675199DT2H48M5.4775807S``)."""
    if seconds >= NEVER:
        return "P10675199DT2H48M5.4775807S"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P"
    if days:
        out += f"{int(days)}D"
    time_part = ""
    if hours:
        time_part += f"{int(hours)}H"
    if minutes:
        time_part += f"{int(minutes)}M"
    if secs or not (days or hours or minutes):
        time_part += f"{secs:g}S"
    return out + ("T" + time_part if time_part else "")


@dataclass
class PolicyConfig:
    name: str
    key: str
    rights: frozenset[str]


@dataclass
class RuleConfig:
    name: str
    filter_type: str = "Sql"  # Sql | Correlation | True | False
    sql: str = "1=1"
    correlation: dict[str, Any] = field(default_factory=dict)
    action: str | None = None


# The defaults of the entity settings are those of entity_fields.py (one row per setting).
@dataclass
class _DeliveryConfig:
    """What subscriptions and queues share: locks, delivery count, TTL, idle deletion."""

    name: str
    lock_duration: float = ef.LOCK_DURATION.default
    max_delivery_count: int = ef.MAX_DELIVERY_COUNT.default
    default_ttl: float = ef.DEFAULT_TTL.default
    dead_lettering_on_expiration: bool = ef.DEAD_LETTERING_ON_EXPIRATION.default
    auto_delete_on_idle: float = ef.AUTO_DELETE_ON_IDLE.default


@dataclass
class SubscriptionConfig(_DeliveryConfig):
    forward_to: str = ef.FORWARD_TO.default
    forward_dead_lettered_to: str = ef.FORWARD_DEAD_LETTERED_TO.default
    requires_session: bool = ef.REQUIRES_SESSION.default
    rules: list[RuleConfig] = field(default_factory=list)


@dataclass
class QueueConfig(_DeliveryConfig):
    requires_duplicate_detection: bool = ef.REQUIRES_DUPLICATE_DETECTION.default
    duplicate_window: float = ef.DUPLICATE_WINDOW.default
    requires_session: bool = ef.REQUIRES_SESSION.default


@dataclass
class TopicConfig:
    name: str
    default_ttl: float = ef.DEFAULT_TTL.default
    requires_duplicate_detection: bool = ef.REQUIRES_DUPLICATE_DETECTION.default
    duplicate_window: float = ef.DUPLICATE_WINDOW.default
    subscriptions: list[SubscriptionConfig] = field(default_factory=list)
    policies: list[PolicyConfig] = field(default_factory=list)


@dataclass
class NamespaceConfig:
    name: str
    port: int | None = None
    policies: list[PolicyConfig] = field(default_factory=list)
    topics: list[TopicConfig] = field(default_factory=list)
    queues: list[QueueConfig] = field(default_factory=list)
    max_message_bytes: int = 256 * 1024
    max_entity_bytes: int = 100 * 1024 * 1024
    #: the credit meter (meter.py): "premium" meters and never throttles, "standard" throttles
    #: at ``credits_per_second``
    tier: str = "premium"
    credits_per_second: int = 1000
    #: Azure's quotas (Standard and Premium alike)
    max_subscriptions_per_topic: int = 2000
    max_sql_filters_per_topic: int = 2000
    max_connections: int = 5000


@dataclass
class EmulatorConfig:
    namespaces: list[NamespaceConfig]


def _props(obj: dict[str, Any], where: str) -> dict[str, Any]:
    props = obj.get("Properties") or {}
    if not isinstance(props, dict):
        raise ConfigError(f"{where}.Properties must be an object")
    return props


def _policies(items: Any, where: str) -> list[PolicyConfig]:
    out = []
    for i, item in enumerate(items or []):
        spot = f"{where}.SharedAccessPolicies[{i}]"
        if not isinstance(item, dict) or not item.get("Name") or not item.get("Key"):
            raise ConfigError(f"{spot} needs a Name and a Key")
        rights = frozenset(str(r).capitalize() for r in item.get("Rights") or [])
        unknown = rights - {"Listen", "Send", "Manage"}
        if unknown or not rights:
            raise ConfigError(f"{spot}.Rights must be a non-empty list of Listen, Send, Manage")
        if "Manage" in rights:
            rights = rights | {"Listen", "Send"}
        out.append(PolicyConfig(item["Name"], str(item["Key"]), rights))
    return out


def _rule(obj: dict[str, Any], where: str) -> RuleConfig:
    props = _props(obj, where)
    kind = str(props.get("FilterType", "Sql"))
    rule = RuleConfig(name=str(obj.get("Name") or "$Default"), filter_type=kind)
    if kind.lower() == "sql":
        rule.filter_type = "Sql"
        rule.sql = str((props.get("SqlFilter") or {}).get("SqlExpression") or "1=1")
    elif kind.lower() == "correlation":
        rule.filter_type = "Correlation"
        rule.correlation = dict(props.get("CorrelationFilter") or {})
    elif kind.lower() in ("true", "truefilter"):
        rule.filter_type, rule.sql = "Sql", "1=1"
    elif kind.lower() in ("false", "falsefilter"):
        rule.filter_type, rule.sql = "Sql", "1=0"
    else:
        raise ConfigError(f"{where}.Properties.FilterType must be Sql or Correlation, not {kind!r}")
    action = (props.get("Action") or {}).get("SqlExpression")
    rule.action = str(action) if action else None
    return rule


def _setting(props: dict[str, Any], f: ef.EntityField, where: str) -> Any:
    value = props.get(f.json)
    if value is None or value == "":
        return f.default
    spot = f"{where}.Properties.{f.json}"
    if f.kind == "duration":
        return parse_duration(value, spot)
    if f.kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{spot}: {value!r} is not an integer") from None
    if f.kind == "bool":
        return bool(value)
    return str(value)


def _settings(props: dict[str, Any], table: tuple[ef.EntityField, ...], where: str) -> dict[str, Any]:
    """The entity's settings from its ``Properties``, by the table of entity_fields.py."""
    return {f.attr: _setting(props, f, where) for f in table}


def _subscription(obj: dict[str, Any], where: str) -> SubscriptionConfig:
    if not obj.get("Name"):
        raise ConfigError(f"{where} needs a Name")
    return SubscriptionConfig(
        name=str(obj["Name"]),
        **_settings(_props(obj, where), ef.SUBSCRIPTION, where),
        rules=[
            _rule(r, f"{where}.Rules[{i}]") for i, r in enumerate(obj.get("Rules") or [])
        ],
    )


def _topic(obj: dict[str, Any], where: str) -> TopicConfig:
    if not obj.get("Name"):
        raise ConfigError(f"{where} needs a Name")
    return TopicConfig(
        name=str(obj["Name"]),
        **_settings(_props(obj, where), ef.TOPIC, where),
        subscriptions=[
            _subscription(s, f"{where}.Subscriptions[{i}]")
            for i, s in enumerate(obj.get("Subscriptions") or [])
        ],
        policies=_policies(obj.get("SharedAccessPolicies"), where),
    )


def _queue(obj: dict[str, Any], where: str) -> QueueConfig:
    if not obj.get("Name"):
        raise ConfigError(f"{where} needs a Name")
    return QueueConfig(name=str(obj["Name"]), **_settings(_props(obj, where), ef.QUEUE, where))


def default_policies() -> list[PolicyConfig]:
    # a random key, not the public DEFAULT_KEY (default_key.py)
    return [PolicyConfig(DEFAULT_KEY_NAME, default_key.current(), frozenset({"Listen", "Send", "Manage"}))]


def parse_config(data: dict[str, Any]) -> EmulatorConfig:
    """Validate a parsed Config.json; raises ConfigError naming the offending path."""
    if not isinstance(data, dict) or not isinstance(data.get("UserConfig"), dict):
        raise ConfigError('the file must be a JSON object with a "UserConfig" object')
    namespaces = data["UserConfig"].get("Namespaces")
    if not isinstance(namespaces, list) or not namespaces:
        raise ConfigError("UserConfig.Namespaces must be a non-empty list")
    out: list[NamespaceConfig] = []
    seen: set[str] = set()
    for i, ns in enumerate(namespaces):
        where = f"UserConfig.Namespaces[{i}]"
        if not isinstance(ns, dict) or not ns.get("Name"):
            raise ConfigError(f"{where} needs a Name")
        name = str(ns["Name"])
        if name.lower() in seen:
            raise ConfigError(f"{where}: namespace {name!r} is declared twice")
        seen.add(name.lower())
        port = ns.get("Port")
        out.append(
            NamespaceConfig(
                name=name,
                port=int(port) if port is not None else None,
                policies=_policies(ns.get("SharedAccessPolicies"), where) or default_policies(),
                topics=[_topic(t, f"{where}.Topics[{j}]") for j, t in enumerate(ns.get("Topics") or [])],
                queues=[_queue(q, f"{where}.Queues[{j}]") for j, q in enumerate(ns.get("Queues") or [])],
                max_message_bytes=int(ns.get("MaxMessageSizeInKilobytes", 256)) * 1024,
                max_entity_bytes=int(ns.get("MaxSizeInMegabytes", 100)) * 1024 * 1024,
            )
        )
    return EmulatorConfig(out)


def load_config(path: str | Path | None) -> EmulatorConfig:
    """Load a Config.json; ``None`` gives one namespace with the topic ``socketio``."""
    if path is None:
        return EmulatorConfig(
            [NamespaceConfig(DEFAULT_NAMESPACE, policies=default_policies(), topics=[TopicConfig(DEFAULT_TOPIC)])]
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return parse_config(data)
