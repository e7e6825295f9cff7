"""Values in the SQL filter language: property lookup and SQL's three-valued operations.

``None`` is the SQL *unknown*. Comparisons and arithmetic on NULLs or on values of different
kinds are unknown, never an exception. The full list of semantic decisions is in
:mod:`servicebus_emulator.sqlfilter`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


# --------------------------------------------------------------------------- names

# Lower-case SQL name -> key in the ``system`` mapping. ``subject`` is the AMQP-era name
# of ``Label``. Names are the public BrokeredMessage/ServiceBusMessage properties.
SYSTEM_PROPERTIES: Final[Mapping[str, str]] = {
    "messageid": "messageid",
    "correlationid": "correlationid",
    "label": "label",
    "subject": "label",
    "to": "to",
    "replyto": "replyto",
    "contenttype": "contenttype",
    "sessionid": "sessionid",
    "replytosessionid": "replytosessionid",
    "partitionkey": "partitionkey",
    "sequencenumber": "sequencenumber",
    "enqueuedsequencenumber": "enqueuedsequencenumber",
    "enqueuedtimeutc": "enqueuedtimeutc",
    "expiresatutc": "expiresatutc",
    "deliverycount": "deliverycount",
    "size": "size",
    "timetolive": "timetolive",
    "scheduledenqueuetimeutc": "scheduledenqueuetimeutc",
    "deadlettersource": "deadlettersource",
}

# System properties a rule action may SET/REMOVE; the rest are assigned by the broker.
SETTABLE_SYSTEM_KEYS: Final = frozenset(
    {
        "messageid",
        "correlationid",
        "label",
        "to",
        "replyto",
        "contenttype",
        "sessionid",
        "replytosessionid",
        "partitionkey",
        "timetolive",
        "scheduledenqueuetimeutc",
    }
)

_MISSING: Final = object()


def _folded_key(user: Mapping[str, Any], lname: str) -> str | None:
    # The length test skips most keys cheaply (this runs for every absent property).
    size = len(lname)
    for key in user:
        if isinstance(key, str) and len(key) == size and key.lower() == lname:
            return key
    return None


def find_user_key(user: Mapping[str, Any], name: str) -> str | None:
    """The key of ``user`` that property ``name`` refers to: exact, else case-insensitive."""
    return name if name in user else _folded_key(user, name.lower())


def user_getter(name: str) -> Evaluator:
    lname = name.lower()

    def get(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        value = user.get(name, _MISSING)
        if value is _MISSING:
            key = _folded_key(user, lname)
            return None if key is None else user[key]
        return value

    return get


def system_getter(key: str) -> Evaluator:
    if key == "label":

        def get_label(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
            value = system.get("label")
            return system.get("subject") if value is None else value

        return get_label

    def get(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        return system.get(key)

    return get


# --------------------------------------------------------------------------- values

# Comparable "kinds": values of different kinds never compare (result unknown).
KINDS: Final[dict[type, str]] = {bool: "bool", int: "num", float: "num", Decimal: "num", str: "str"}


def value_kind(value: Any) -> object:
    kind = KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "num"
    if isinstance(value, str):
        return "str"
    return type(value)


COMPARE_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
MIRRORED: Final = {"=": "=", "<>": "<>", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


def compare_values(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool | None:
    """``left op right`` in three-valued logic; unknown for NULLs and mixed kinds."""
    if left is None or right is None:
        return None
    kind = value_kind(left)
    if kind != value_kind(right):
        return None
    if kind == "bool" and op is not operator.eq and op is not operator.ne:
        return None
    try:
        return bool(op(left, right))
    except TypeError:  # e.g. naive vs aware datetime ordering
        return None


def _int_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def arithmetic(symbol: str, a: Any, b: Any) -> Any:
    """C#-like arithmetic on numbers (and ``+`` on strings); anything else is unknown."""
    if a is None or b is None:
        return None
    kind = value_kind(a)
    if kind != value_kind(b):
        return None
    if kind == "str":
        return a + b if symbol == "+" else None
    if kind != "num":
        return None
    try:
        if symbol == "+":
            return a + b
        if symbol == "-":
            return a - b
        if symbol == "*":
            return a * b
        if b == 0:
            return None
        both_int = type(a) is int and type(b) is int
        if symbol == "/":
            return _int_div(a, b) if both_int else a / b
        if both_int:
            return a - b * _int_div(a, b)
        return math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else a % b
    except (TypeError, ArithmeticError):
        return None


@lru_cache(maxsize=256)
def like_regex(pattern: str, escape: str | None) -> re.Pattern[str] | None:
    """Translate a LIKE pattern (``%``, ``_``, optional escape char) to a regex.

    ``None`` when the pattern ends in a dangling escape character.
    """
    parts: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if escape is not None and ch == escape:
            nxt = next(chars, None)
            if nxt is None:
                return None
            parts.append(re.escape(nxt))
        elif ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def resolve_dynamic(reference: Any, system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
    """``property(expr)`` with a computed name: resolve the name per message."""
    if not isinstance(reference, str):
        return None
    scope, dot, name = reference.partition(".")
    if dot and scope.lower() == "sys":
        key = SYSTEM_PROPERTIES.get(name.lower())
        return None if key is None else system_getter(key)(system, user)
    if dot and scope.lower() == "user":
        reference = name
    return user_getter(reference)(system, user)
