"""Subscription rule filters and actions: the public API the emulator's topics use.

A rule holds one filter (SQL, correlation, true or false) and optionally a SQL action.
Every filter is built, and validated, once at rule creation and exposes a single
``matches(system, user) -> bool`` that is cheap to call for every message.

``system`` holds the broker/message system properties under lower-case names without
prefix (``messageid``, ``correlationid``, ``label``, ``to``, ``replyto``, ...);
``user`` holds the application properties. The SQL language itself, and the semantic
decisions it embodies (three-valued logic, case rules), live in ``sqlfilter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

from servicebus_emulator.errors import FilterError
from servicebus_emulator.sqlfilter import (
    SqlFilter,
    SqlRuleAction,
    value_kind,
)

__all__ = [
    "CorrelationFilter",
    "FalseFilter",
    "Filter",
    "FilterError",
    "SqlFilter",
    "SqlRuleAction",
    "TrueFilter",
    "correlation_filter",
    "false_filter",
    "sql_action",
    "sql_filter",
    "true_filter",
]


@runtime_checkable
class Filter(Protocol):
    """Anything a rule can use to select messages."""

    def matches(self, system: Mapping[str, Any], user: Mapping[str, Any]) -> bool: ...


def sql_filter(expression: str) -> SqlFilter:
    """Parse a SQL filter now, so a bad rule is refused at creation (FilterError)."""
    return SqlFilter(expression)


def sql_action(expression: str) -> SqlRuleAction:
    """Parse a ``SET ...; REMOVE ...`` rule action now (FilterError when invalid)."""
    return SqlRuleAction(expression)


class TrueFilter:
    """Matches every message; Service Bus spells it ``1=1`` (the ``$Default`` rule)."""

    __slots__ = ()
    expression: Final = "1=1"

    def matches(self, system: Mapping[str, Any], user: Mapping[str, Any]) -> bool:
        return True

    def __repr__(self) -> str:
        return "TrueFilter()"


class FalseFilter:
    """Matches no message; Service Bus spells it ``1=0``."""

    __slots__ = ()
    expression: Final = "1=0"

    def matches(self, system: Mapping[str, Any], user: Mapping[str, Any]) -> bool:
        return False

    def __repr__(self) -> str:
        return "FalseFilter()"


_TRUE: Final = TrueFilter()
_FALSE: Final = FalseFilter()


def true_filter() -> TrueFilter:
    return _TRUE


def false_filter() -> FalseFilter:
    return _FALSE


# keyword argument -> key in the ``system`` mapping
_CORRELATION_FIELDS: Final[Mapping[str, str]] = {
    "correlation_id": "correlationid",
    "message_id": "messageid",
    "to": "to",
    "reply_to": "replyto",
    "label": "label",
    "session_id": "sessionid",
    "reply_to_session_id": "replytosessionid",
    "content_type": "contenttype",
}


def _same_value(actual: Any, expected: Any) -> bool:
    """Equality without cross-kind surprises: ``True`` is not ``1``, ``'1'`` is not ``1``."""
    return actual is not None and value_kind(actual) == value_kind(expected) and actual == expected


def _same_system(actual: Any, expected: Any) -> bool:
    """Ids may arrive as uuid/int/bytes over AMQP while the filter holds a string."""
    if _same_value(actual, expected):
        return True
    return (
        isinstance(expected, str)
        and actual is not None
        and not isinstance(actual, str)
        and str(actual) == expected
    )


class CorrelationFilter:
    """All given fields must equal the message's (ordinal, case-sensitive); every
    ``properties`` entry must be present under exactly that key with an equal value."""

    __slots__ = ("_system_checks", "_user_checks", "fields", "properties")

    def __init__(self, fields: Mapping[str, Any], properties: Mapping[str, Any]) -> None:
        self.fields: Mapping[str, Any] = dict(fields)
        self.properties: Mapping[str, Any] = dict(properties)
        self._system_checks = tuple((_CORRELATION_FIELDS[name], value) for name, value in self.fields.items())
        self._user_checks = tuple(self.properties.items())

    def matches(self, system: Mapping[str, Any], user: Mapping[str, Any]) -> bool:
        for key, expected in self._system_checks:
            actual = system.get(key)
            if actual is None and key == "label":
                actual = system.get("subject")
            if not _same_system(actual, expected):
                return False
        for key, expected in self._user_checks:
            if not _same_value(user.get(key), expected):
                return False
        return True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CorrelationFilter)
            and other.fields == self.fields
            and other.properties == self.properties
        )

    def __hash__(self) -> int:
        return hash(("correlation", tuple(sorted(self.fields.items()))))

    def __repr__(self) -> str:
        parts = [f"{name}={value!r}" for name, value in self.fields.items()]
        if self.properties:
            parts.append(f"properties={self.properties!r}")
        return f"CorrelationFilter({', '.join(parts)})"


def correlation_filter(
    *,
    correlation_id: Any = None,
    message_id: Any = None,
    to: str | None = None,
    reply_to: str | None = None,
    label: str | None = None,
    session_id: str | None = None,
    reply_to_session_id: str | None = None,
    content_type: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> CorrelationFilter:
    """A filter on equality of the given fields; ``None`` means "not part of the filter".

    Like Service Bus, a correlation filter that names nothing is refused (FilterError).
    """
    given = {
        "correlation_id": correlation_id,
        "message_id": message_id,
        "to": to,
        "reply_to": reply_to,
        "label": label,
        "session_id": session_id,
        "reply_to_session_id": reply_to_session_id,
        "content_type": content_type,
    }
    fields = {name: value for name, value in given.items() if value is not None}
    props = dict(properties or {})
    for key, value in props.items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"invalid correlation filter: property name {key!r} must be a non-empty string")
        if value is None:
            raise FilterError(f"invalid correlation filter: property {key!r} has no value")
    if not fields and not props:
        raise FilterError("invalid correlation filter: at least one field or property must be given")
    return CorrelationFilter(fields, props)
