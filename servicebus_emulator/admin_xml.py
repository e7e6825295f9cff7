"""ATOM/XML bodies of the Service Bus management API, as the ``azure-servicebus`` SDK writes them
and reads them back. Pure: no I/O, no engine objects.

What the SDK (7.15, ``azure/servicebus/management``) sends and expects:

- Requests: ``<entry xmlns=Atom><content type="application/xml"><TopicDescription xmlns=SB>...``
  (the SDK's XML workaround policy strips the ``ns1:`` prefix, so the description elements are in
  the Service Bus namespace as default namespace). Rule filters and actions carry ``xsi:type``
  (``SqlFilter``, ``CorrelationFilter``, ``TrueFilter``, ``FalseFilter``, ``SqlRuleAction``,
  ``EmptyRuleAction``); key/value parameters are ``<KeyValueOfstringanyType><Key/><Value
  xsi:type="d6p1:int"/>`` with the XML-schema type after a prefix.
- Responses: an Atom ``entry`` (or a ``feed`` of entries for lists, with a second ``link`` whose
  ``href`` carries ``$skip``/``$top`` when another page exists). The SDK reads the entity name from
  ``<title>``. Rules must always carry both ``Filter`` and ``Action`` (the SDK dereferences both),
  key/value ``Value`` elements need an ``xsi:type`` with a prefix, and message counts live in
  ``<CountDetails>`` whose children are in the ``2011/06/servicebus`` namespace.
- Errors: ``<Error><Code>404</Code><Detail>...</Detail></Error>``; the SDK puts ``Detail`` in the
  message of HttpResponseError (and appends the body to the mapped 401/404/409 errors).

Elements are written by hand (not with ``ElementTree.tostring``) so that the namespace prefixes
are exactly the service's, and without touching ElementTree's global prefix registry, which the SDK
relies on when it serialises its own requests in the same process.
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .config import NEVER, ConfigError, RuleConfig, format_duration, parse_duration
from .errors import AdminXmlError, BodyTooLarge

ATOM_NS = "http://www.w3.org/2005/Atom"
SB_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS_NS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSD_NS = "http://www.w3.org/2001/XMLSchema"

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_RULE_NAME = "$Default"

TOPIC = "TopicDescription"
QUEUE = "QueueDescription"
SUBSCRIPTION = "SubscriptionDescription"
RULE = "RuleDescription"

# Field tables in the service's (DataContract) element order. Kinds: str, int, bool, duration,
# time (epoch seconds), counts (dict), authrules (always written empty). Read-only kinds are
# written but never read from requests.
TOPIC_FIELDS: list[tuple[str, str]] = [
    ("DefaultMessageTimeToLive", "duration"),
    ("MaxSizeInMegabytes", "int"),
    ("RequiresDuplicateDetection", "bool"),
    ("DuplicateDetectionHistoryTimeWindow", "duration"),
    ("EnableBatchedOperations", "bool"),
    ("SizeInBytes", "int"),
    ("FilteringMessagesBeforePublishing", "bool"),
    ("IsAnonymousAccessible", "bool"),
    ("AuthorizationRules", "authrules"),
    ("Status", "str"),
    ("CreatedAt", "time"),
    ("UpdatedAt", "time"),
    ("AccessedAt", "time"),
    ("SupportOrdering", "bool"),
    ("CountDetails", "counts"),
    ("SubscriptionCount", "int"),
    ("AutoDeleteOnIdle", "duration"),
    ("EnablePartitioning", "bool"),
    ("EntityAvailabilityStatus", "str"),
    ("EnableExpress", "bool"),
    ("UserMetadata", "str"),
    ("MaxMessageSizeInKilobytes", "int"),
]

QUEUE_FIELDS: list[tuple[str, str]] = [
    ("LockDuration", "duration"),
    ("MaxSizeInMegabytes", "int"),
    ("RequiresDuplicateDetection", "bool"),
    ("RequiresSession", "bool"),
    ("DefaultMessageTimeToLive", "duration"),
    ("DeadLetteringOnMessageExpiration", "bool"),
    ("DuplicateDetectionHistoryTimeWindow", "duration"),
    ("MaxDeliveryCount", "int"),
    ("EnableBatchedOperations", "bool"),
    ("SizeInBytes", "int"),
    ("MessageCount", "int"),
    ("IsAnonymousAccessible", "bool"),
    ("AuthorizationRules", "authrules"),
    ("Status", "str"),
    ("ForwardTo", "str"),
    ("CreatedAt", "time"),
    ("UpdatedAt", "time"),
    ("AccessedAt", "time"),
    ("SupportOrdering", "bool"),
    ("CountDetails", "counts"),
    ("AutoDeleteOnIdle", "duration"),
    ("EnablePartitioning", "bool"),
    ("EntityAvailabilityStatus", "str"),
    ("EnableExpress", "bool"),
    ("ForwardDeadLetteredMessagesTo", "str"),
    ("UserMetadata", "str"),
    ("MaxMessageSizeInKilobytes", "int"),
]

SUBSCRIPTION_FIELDS: list[tuple[str, str]] = [
    ("LockDuration", "duration"),
    ("RequiresSession", "bool"),
    ("DefaultMessageTimeToLive", "duration"),
    ("DeadLetteringOnMessageExpiration", "bool"),
    ("DeadLetteringOnFilterEvaluationExceptions", "bool"),
    ("MessageCount", "int"),
    ("MaxDeliveryCount", "int"),
    ("EnableBatchedOperations", "bool"),
    ("Status", "str"),
    ("ForwardTo", "str"),
    ("CreatedAt", "time"),
    ("UpdatedAt", "time"),
    ("AccessedAt", "time"),
    ("CountDetails", "counts"),
    ("UserMetadata", "str"),
    ("ForwardDeadLetteredMessagesTo", "str"),
    ("AutoDeleteOnIdle", "duration"),
    ("EntityAvailabilityStatus", "str"),
]

FIELDS = {TOPIC: TOPIC_FIELDS, QUEUE: QUEUE_FIELDS, SUBSCRIPTION: SUBSCRIPTION_FIELDS}
_READABLE = {"str", "int", "bool", "duration"}

COUNT_NAMES = (
    "ActiveMessageCount",
    "DeadLetterMessageCount",
    "ScheduledMessageCount",
    "TransferMessageCount",
    "TransferDeadLetterMessageCount",
)


# -- time -------------------------------------------------------------------------------------
def format_time(epoch: float) -> str:
    """``2024-05-01T12:00:00.123456Z`` (the SDK parses it with its iso-8601 deserializer)."""
    moment = _dt.datetime.fromtimestamp(epoch, _dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- parsing ----------------------------------------------------------------------------------
def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml(body: bytes) -> ET.Element:
    """Parse a request body: at most 1 MiB, UTF-8, and no DTD (so no entity expansion at all)."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdminXmlError("The request body must be UTF-8 encoded XML.") from exc
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise AdminXmlError("The request body must not contain a DOCTYPE or ENTITY declaration.")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise AdminXmlError(f"The request body is not well-formed XML: {exc}.") from exc


def parse_entry(body: bytes) -> ET.Element:
    """The description element (``TopicDescription``...) inside ``<entry><content>``."""
    root = parse_xml(body)
    if root.tag != f"{{{ATOM_NS}}}entry":
        raise AdminXmlError(f"Expected an Atom <entry> element, got <{local_name(root.tag)}>.")
    content = root.find(f"{{{ATOM_NS}}}content")
    if content is None:
        raise AdminXmlError("The Atom <entry> has no <content> element.")
    children = list(content)
    if len(children) != 1:
        raise AdminXmlError("The Atom <content> must hold exactly one entity description.")
    desc = children[0]
    if desc.tag.startswith("{") and not desc.tag.startswith(f"{{{SB_NS}}}"):
        raise AdminXmlError(f"<{local_name(desc.tag)}> is not in the Service Bus namespace {SB_NS}.")
    return desc


def _child(parent: ET.Element, name: str) -> ET.Element | None:
    for child in parent:
        if local_name(child.tag) == name:
            return child
    return None


def _convert(name: str, kind: str, text: str) -> Any:
    value = text.strip()
    if kind == "str":
        return text
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise AdminXmlError(f"{name}: {value!r} is not an integer.") from None
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            raise AdminXmlError(f"{name}: {value!r} is not a boolean (true or false).")
        return value.lower() == "true"
    if kind == "duration":
        try:
            return parse_duration(value, name)
        except ConfigError as exc:
            raise AdminXmlError(str(exc)) from None
    raise AssertionError(kind)


def read_fields(desc: ET.Element, table: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The writable fields present in a description, converted (``duration`` → seconds)."""
    out: dict[str, Any] = {}
    for name, kind in table:
        if kind not in _READABLE:
            continue
        el = _child(desc, name)
        if el is None:
            continue
        out[name] = _convert(name, kind, el.text or "")
    return out


# -- typed key/values (rule parameters and correlation properties) -----------------------------
@dataclass
class TypedValue:
    """A ``<Value xsi:type="d6p1:int">5</Value>``: its schema type, its text, its Python value."""

    xsd_type: str
    text: str
    value: Any

    @classmethod
    def parse(cls, name: str, xsd_type: str, text: str) -> TypedValue:
        kind = xsd_type.rsplit(":", 1)[-1] or "string"
        try:
            if kind in ("int", "long", "short", "byte", "unsignedInt", "unsignedLong", "unsignedShort",
                        "unsignedByte"):
                value: Any = int(text)
            elif kind in ("double", "float", "decimal"):
                value = float(text)
            elif kind == "boolean":
                if text.strip().lower() not in ("true", "false"):
                    raise ValueError(text)
                value = text.strip().lower() == "true"
            elif kind == "dateTime":
                value = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            elif kind == "duration":
                value = _dt.timedelta(seconds=parse_duration(text.strip(), name))
            else:
                kind, value = "string", text
        except (ValueError, ConfigError):
            raise AdminXmlError(f"{name}: {text!r} is not a valid {kind}.") from None
        return cls(kind, text, value)

    @classmethod
    def of(cls, value: Any) -> TypedValue:
        """From a Python value (rules loaded from Config.json)."""
        if isinstance(value, bool):
            return cls("boolean", "true" if value else "false", value)
        if isinstance(value, int):
            return cls("int" if -(2**31) <= value < 2**31 else "long", str(value), value)
        if isinstance(value, float):
            return cls("double", repr(value), value)
        return cls("string", str(value), str(value))


def _read_key_values(parent: ET.Element | None, where: str) -> dict[str, TypedValue]:
    out: dict[str, TypedValue] = {}
    if parent is None:
        return out
    for item in parent:
        key_el, value_el = _child(item, "Key"), _child(item, "Value")
        if key_el is None or not (key_el.text or "").strip():
            raise AdminXmlError(f"{where}: every <{local_name(item.tag)}> needs a non-empty <Key>.")
        key = (key_el.text or "").strip()
        if value_el is None:
            raise AdminXmlError(f"{where}: {key!r} has no <Value>.")
        xsd_type = value_el.get(f"{{{XSI_NS}}}type", "string")
        out[key] = TypedValue.parse(f"{where} {key!r}", xsd_type, value_el.text or "")
    return out


# -- rules ------------------------------------------------------------------------------------
CORRELATION_FIELDS = (
    "CorrelationId",
    "MessageId",
    "To",
    "ReplyTo",
    "Label",
    "SessionId",
    "ReplyToSessionId",
    "ContentType",
)
FILTER_TYPES = ("SqlFilter", "CorrelationFilter", "TrueFilter", "FalseFilter")
ACTION_TYPES = ("SqlRuleAction", "EmptyRuleAction")


@dataclass
class RuleSpec:
    """A rule as the management API describes it (what a GET must give back)."""

    name: str
    filter_type: str = "TrueFilter"
    sql: str = "1=1"
    sql_parameters: dict[str, TypedValue] = field(default_factory=dict)
    correlation: dict[str, str] = field(default_factory=dict)
    properties: dict[str, TypedValue] = field(default_factory=dict)
    action_sql: str | None = None
    action_parameters: dict[str, TypedValue] = field(default_factory=dict)

    def to_rule_config(self) -> RuleConfig:
        """The engine's rule: SQL parameters substituted as literals, True/False as SQL."""
        action = None
        if self.action_sql is not None:
            action = substitute_parameters(self.action_sql, self.action_parameters)
        if self.filter_type == "CorrelationFilter":
            correlation: dict[str, Any] = dict(self.correlation)
            correlation["Properties"] = {k: v.value for k, v in self.properties.items()}
            return RuleConfig(self.name, "Correlation", correlation=correlation, action=action)
        if self.filter_type == "TrueFilter":
            sql = "1=1"
        elif self.filter_type == "FalseFilter":
            sql = "1=0"
        else:
            sql = substitute_parameters(self.sql, self.sql_parameters)
        return RuleConfig(self.name, "Sql", sql=sql, action=action)

    @classmethod
    def from_config(cls, config: RuleConfig) -> RuleSpec:
        """Describe a rule that came from Config.json (no parameters there)."""
        spec = cls(config.name, action_sql=config.action)
        if config.filter_type == "Correlation":
            spec.filter_type = "CorrelationFilter"
            spec.sql = ""
            for key in CORRELATION_FIELDS:
                value = config.correlation.get(key)
                if key == "Label" and value in (None, ""):
                    value = config.correlation.get("Subject")
                if value not in (None, ""):
                    spec.correlation[key] = str(value)
            props = config.correlation.get("Properties") or {}
            spec.properties = {str(k): TypedValue.of(v) for k, v in props.items()}
        else:
            compact = re.sub(r"\s+", "", config.sql)
            spec.filter_type = {"1=1": "TrueFilter", "1=0": "FalseFilter"}.get(compact, "SqlFilter")
            spec.sql = config.sql
        return spec


def parse_rule(desc: ET.Element, name: str) -> RuleSpec:
    """A ``RuleDescription`` (or a subscription's ``DefaultRuleDescription``)."""
    spec = RuleSpec(name)
    flt = _child(desc, "Filter")
    if flt is not None:
        kind = flt.get(f"{{{XSI_NS}}}type", "").rsplit(":", 1)[-1]
        if kind not in FILTER_TYPES:
            raise AdminXmlError(
                f"Rule {name!r}: unknown filter type {kind!r}; expected one of {', '.join(FILTER_TYPES)}."
            )
        spec.filter_type = kind
        if kind == "CorrelationFilter":
            spec.sql = ""
            for key in CORRELATION_FIELDS:
                el = _child(flt, key)
                if el is not None and el.text:
                    spec.correlation[key] = el.text
            spec.properties = _read_key_values(_child(flt, "Properties"), f"Rule {name!r} filter property")
        else:
            expr = _child(flt, "SqlExpression")
            spec.sql = (expr.text or "") if expr is not None else ""
            if kind == "SqlFilter" and not spec.sql.strip():
                raise AdminXmlError(f"Rule {name!r}: a SqlFilter needs a non-empty SqlExpression.")
            spec.sql_parameters = _read_key_values(_child(flt, "Parameters"), f"Rule {name!r} filter parameter")
            if kind == "TrueFilter":
                spec.sql = "1=1"
            elif kind == "FalseFilter" and not spec.sql.strip():
                spec.sql = "1=0"
    action = _child(desc, "Action")
    if action is not None:
        kind = action.get(f"{{{XSI_NS}}}type", "").rsplit(":", 1)[-1]
        if kind not in ACTION_TYPES:
            raise AdminXmlError(
                f"Rule {name!r}: unknown action type {kind!r}; expected SqlRuleAction or EmptyRuleAction."
            )
        if kind == "SqlRuleAction":
            expr = _child(action, "SqlExpression")
            text = (expr.text or "") if expr is not None else ""
            if not text.strip():
                raise AdminXmlError(f"Rule {name!r}: a SqlRuleAction needs a non-empty SqlExpression.")
            spec.action_sql = text
            spec.action_parameters = _read_key_values(
                _child(action, "Parameters"), f"Rule {name!r} action parameter"
            )
    return spec


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


_IDENT = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")


def substitute_parameters(expression: str, parameters: Mapping[str, TypedValue]) -> str:
    """Replace ``@name`` outside string literals and ``[quoted]`` names by the parameter's literal.

    Parameter keys may be given with or without ``@`` and match case-insensitively; an ``@name``
    without a parameter stays as is (the SQL parser then reports it).
    """
    if not parameters:
        return expression
    values = {("@" + k.lstrip("@")).lower(): v.value for k, v in parameters.items()}
    out: list[str] = []
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch == "'":
            j = i + 1
            while j < n:
                if expression[j] == "'":
                    if j + 1 < n and expression[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append(expression[i : j + 1])
            i = j + 1
        elif ch == "[":
            j = expression.find("]", i)
            j = n - 1 if j < 0 else j
            out.append(expression[i : j + 1])
            i = j + 1
        elif ch == "@":
            match = _IDENT.match(expression, i)
            if match and match.group(0).lower() in values:
                out.append(_sql_literal(values[match.group(0).lower()]))
                i = match.end()
            else:
                out.append(ch)
                i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# -- writing ----------------------------------------------------------------------------------
def _text(name: str, value: str, attrs: str = "") -> str:
    return f"<{name}{attrs}>{escape(value)}</{name}>"


def _format(kind: str, value: Any) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    if kind == "duration":
        return format_duration(min(float(value), NEVER))
    if kind == "time":
        return format_time(float(value))
    return str(value)


def _key_values(values: Mapping[str, TypedValue], wrapper: str = "Parameters") -> str:
    items = "".join(
        "<KeyValueOfstringanyType>"
        + _text("Key", key)
        + _text("Value", tv.text, f' xmlns:d6p1="{XSD_NS}" i:type="d6p1:{tv.xsd_type}"')
        + "</KeyValueOfstringanyType>"
        for key, tv in values.items()
    )
    return f"<{wrapper}>{items}</{wrapper}>" if items else ""


def _counts(counts: Mapping[str, int]) -> str:
    inner = "".join(
        _text(f"d2p1:{name}", str(int(counts.get(name, 0)))) for name in COUNT_NAMES
    )
    return f'<CountDetails xmlns:d2p1="{COUNTS_NS}">{inner}</CountDetails>'


def description_xml(kind: str, values: Mapping[str, Any]) -> str:
    """``<TopicDescription>``/``<QueueDescription>``/``<SubscriptionDescription>``; None values are left out."""
    parts: list[str] = []
    for name, field_kind in FIELDS[kind]:
        value = values.get(name)
        if value is None:
            continue
        if field_kind == "counts":
            parts.append(_counts(value))
        elif field_kind == "authrules":
            parts.append("<AuthorizationRules/>")
        else:
            parts.append(_text(name, _format(field_kind, value)))
    return f'<{kind} xmlns="{SB_NS}" xmlns:i="{XSI_NS}">' + "".join(parts) + f"</{kind}>"


def _rule_body(spec: RuleSpec, created_at: float | None) -> str:
    if spec.filter_type == "CorrelationFilter":
        inner = "".join(_text(k, v) for k, v in spec.correlation.items())
        props = _key_values(spec.properties, "Properties")
        flt = f'<Filter i:type="CorrelationFilter">{inner}{props}</Filter>'
    else:
        flt = (
            f'<Filter i:type="{spec.filter_type}">'
            + _text("SqlExpression", spec.sql)
            + "<CompatibilityLevel>20</CompatibilityLevel>"
            + _key_values(spec.sql_parameters)
            + "</Filter>"
        )
    if spec.action_sql is None:
        action = '<Action i:type="EmptyRuleAction"/>'
    else:
        action = (
            '<Action i:type="SqlRuleAction">'
            + _text("SqlExpression", spec.action_sql)
            + "<CompatibilityLevel>20</CompatibilityLevel>"
            + _key_values(spec.action_parameters)
            + "</Action>"
        )
    created = _text("CreatedAt", format_time(created_at)) if created_at is not None else ""
    return flt + action + created + _text("Name", spec.name)


def rule_description_xml(spec: RuleSpec, created_at: float | None) -> str:
    return f'<RuleDescription xmlns="{SB_NS}" xmlns:i="{XSI_NS}">{_rule_body(spec, created_at)}</RuleDescription>'


def namespace_info_xml(name: str, created: float, modified: float) -> str:
    return (
        f'<NamespaceInfo xmlns="{SB_NS}" xmlns:i="{XSI_NS}">'
        + _text("CreatedTime", format_time(created))
        + _text("MessagingSKU", "Standard")
        + _text("ModifiedTime", format_time(modified))
        + _text("Name", name)
        + _text("NamespaceType", "Messaging")
        + "</NamespaceInfo>"
    )


def _entry_inner(*, href: str, title: str, published: float, updated: float, author: str | None,
                 content: str) -> str:
    return (
        _text("id", href)
        + _text("title", title, ' type="text"')
        + _text("published", format_time(published))
        + _text("updated", format_time(updated))
        + (f"<author>{_text('name', author)}</author>" if author else "")
        + f'<link rel="self" href={quoteattr(href)}/>'
        + f'<content type="application/xml">{content}</content>'
    )


def entry_xml(*, href: str, title: str, published: float, updated: float, content: str,
              author: str | None = None) -> bytes:
    """One Atom entry around a description (the answer to GET and PUT)."""
    inner = _entry_inner(href=href, title=title, published=published, updated=updated,
                         author=author, content=content)
    return (f'<?xml version="1.0" encoding="utf-8"?><entry xmlns="{ATOM_NS}">{inner}</entry>').encode()


@dataclass
class FeedEntry:
    href: str
    title: str
    published: float
    updated: float
    content: str


def feed_xml(*, href: str, title: str, updated: float, entries: list[FeedEntry],
             next_href: str | None = None) -> bytes:
    """An Atom feed; the SDK pages on as long as the feed has a second (``next``) link."""
    links = f'<link rel="self" href={quoteattr(href)}/>'
    if next_href:
        links += f'<link rel="next" href={quoteattr(next_href)}/>'
    body = "".join(
        "<entry>" + _entry_inner(href=e.href, title=e.title, published=e.published, updated=e.updated,
                                 author=None, content=e.content) + "</entry>"
        for e in entries
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="{ATOM_NS}">'
        + _text("title", title, ' type="text"')
        + _text("id", href)
        + _text("updated", format_time(updated))
        + links
        + body
        + "</feed>"
    ).encode()


def error_xml(code: int, detail: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        + _text("Code", str(code))
        + _text("Detail", detail)
        + "</Error>"
    ).encode()


__all__ = [
    "ATOM_NS",
    "AdminXmlError",
    "BodyTooLarge",
    "FeedEntry",
    "MAX_BODY_BYTES",
    "QUEUE",
    "RULE",
    "RuleSpec",
    "SB_NS",
    "SUBSCRIPTION",
    "TOPIC",
    "TypedValue",
    "description_xml",
    "entry_xml",
    "error_xml",
    "feed_xml",
    "namespace_info_xml",
    "parse_entry",
    "parse_rule",
    "read_fields",
    "rule_description_xml",
    "substitute_parameters",
]
