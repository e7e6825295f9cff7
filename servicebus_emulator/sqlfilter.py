"""The Service Bus SQL filter and SQL rule-action language, compiled once to closures.

Rules are evaluated for every message x every subscription, so the text is parsed a
single time at rule creation into nested closures ``fn(system, user) -> value``; no
tree is walked and no token is looked at on the hot path. Constant sub-expressions
are folded and ``prop <op> constant`` comparisons get a specialised closure.

Semantics (from the Service Bus "SQL filter syntax" reference, which says operators
follow C# semantics; decisions where the reference is silent are marked *decision*):

* Three-valued logic. ``None`` is the SQL *unknown*: a missing user property and a
  property whose value is NULL both evaluate to it. Comparisons, arithmetic and LIKE
  with an unknown operand are unknown; AND/OR/NOT use the SQL truth tables. A filter
  matches only when the whole expression is TRUE.
* ``x IS NULL`` is TRUE for a missing property; ``EXISTS(x)`` tells the two apart.
* Property names are case-insensitive (documented). User properties are looked up by
  exact key first, then case-insensitively. Keywords and ``sys`` names too.
* String comparison is ordinal and case-sensitive, as C# ``string ==`` is; LIKE also.
* Values of different kinds (number/string/bool/datetime/...) never compare: the
  result is unknown, never an exception. int and float compare and compute together;
  bool is not a number (C# has no bool<->long conversion).
* Integer ``/`` and ``%`` truncate toward zero like C# ``long``. *decision*: division
  or modulo by zero is unknown instead of an error at match time.
* Referencing a system property Service Bus does not have is a FilterError at
  creation; a known one missing from the message is NULL.

The language lives in four modules; this one is its public face (the filter and action
objects, and every public name of the four, re-exported):

* :mod:`~servicebus_emulator.sql_lexer`: text -> tokens, and the syntax error;
* :mod:`~servicebus_emulator.sql_values`: property lookup and the three-valued operations;
* :mod:`~servicebus_emulator.sql_nodes`: each construct compiled to a closure, constant folding;
* :mod:`~servicebus_emulator.sql_parser`: the grammar, from tokens to compiled nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from servicebus_emulator.errors import FilterError
from servicebus_emulator.sql_lexer import Token, sql_error, tokenize
from servicebus_emulator.sql_nodes import MAX_DEPTH, PropertyRef
from servicebus_emulator.sql_parser import MAX_EXPRESSION_LENGTH, Parser
from servicebus_emulator.sql_values import (
    SETTABLE_SYSTEM_KEYS,
    SYSTEM_PROPERTIES,
    Evaluator,
    find_user_key,
    like_regex,
    value_kind,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "SETTABLE_SYSTEM_KEYS",
    "SYSTEM_PROPERTIES",
    "Evaluator",
    "FilterError",
    "PropertyRef",
    "SqlFilter",
    "SqlRuleAction",
    "Token",
    "compile_predicate",
    "find_user_key",
    "like_regex",
    "sql_error",
    "tokenize",
    "value_kind",
]


def compile_predicate(expression: str) -> Evaluator:
    """Parse a SQL filter to ``fn(system, user) -> True | False | None``."""
    if not isinstance(expression, str):
        raise FilterError("invalid SQL expression: expected a string")
    if not expression.strip():
        raise FilterError("invalid SQL expression: the expression is empty", 0)
    try:
        return Parser(expression).parse_filter().fn
    except RecursionError:  # only reachable when the caller's own stack is already deep
        raise FilterError("invalid SQL expression: nested too deeply") from None


class SqlFilter:
    """A parsed SQL filter. ``matches`` is TRUE-only: unknown does not match."""

    __slots__ = ("_fn", "expression")

    def __init__(self, expression: str) -> None:
        self._fn = compile_predicate(expression)
        self.expression = expression

    def matches(self, system: Mapping[str, Any], user: Mapping[str, Any]) -> bool:
        return self._fn(system, user) is True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqlFilter) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(("sql", self.expression))

    def __repr__(self) -> str:
        return f"SqlFilter({self.expression!r})"


class SqlRuleAction:
    """A parsed ``SET prop = expr; REMOVE prop`` rule action.

    ``apply`` mutates the mappings it is given, statement by statement (later statements
    see earlier effects), so callers pass the copies that become the subscription's
    message. An unknown value is stored as NULL (None).
    """

    __slots__ = ("_steps", "expression")

    def __init__(self, expression: str) -> None:
        if not isinstance(expression, str):
            raise FilterError("invalid SQL action: expected a string")
        try:
            self._steps = tuple(Parser(expression).parse_action())
        except RecursionError:
            raise FilterError("invalid SQL action: nested too deeply") from None
        self.expression = expression

    def apply(self, system: MutableMapping[str, Any], user: MutableMapping[str, Any]) -> None:
        for step in self._steps:
            step(system, user)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqlRuleAction) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(("action", self.expression))

    def __repr__(self) -> str:
        return f"SqlRuleAction({self.expression!r})"
