"""The compiled nodes of the SQL filter language: each construct as a closure ``fn(system, user)``.

The parser (:mod:`servicebus_emulator.sql_parser`) calls one builder per construct. A builder
folds constant sub-expressions, specialises ``prop <op> constant`` comparisons, applies the
AND/OR/NOT truth tables of three-valued logic and bounds the depth of the compiled tree.
Rule-action statements (SET/REMOVE) are compiled here too.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from servicebus_emulator.sql_lexer import sql_error
from servicebus_emulator.sql_values import (
    COMPARE_OPS,
    KINDS,
    MIRRORED,
    Evaluator,
    arithmetic,
    compare_values,
    find_user_key,
    like_regex,
    system_getter,
    user_getter,
    value_kind,
)

MAX_DEPTH: Final = 64  # parentheses/NOT/unary nesting, and depth of the compiled tree


@dataclass(frozen=True, slots=True)
class PropertyRef:
    """A resolved ``[sys.|user.]name`` reference."""

    scope: str  # "sys" or "user"
    name: str  # user: name as written; sys: key in the system mapping


@dataclass(frozen=True, slots=True)
class Node:
    fn: Evaluator
    depth: int = 0
    const: bool = False
    value: Any = None
    boolish: bool = True  # may evaluate to a boolean (False: number/string/guid only)
    prop: PropertyRef | None = None


def const_node(value: Any) -> Node:
    def fn(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        return value

    boolish = value is None or isinstance(value, bool)
    return Node(fn, const=True, value=value, boolish=boolish)


def prop_node(ref: PropertyRef) -> Node:
    getter = user_getter(ref.name) if ref.scope == "user" else system_getter(ref.name)
    return Node(getter, depth=1, prop=ref)


_EMPTY: Final[Mapping[str, Any]] = {}


def make_node(fn: Evaluator, children: list[Node], pos: int, boolish: bool = True) -> Node:
    """Wrap ``fn`` as a node: fold it when all children are constant, bound its depth."""
    if all(child.const for child in children):
        return const_node(fn(_EMPTY, _EMPTY))
    depth = 1 + max(child.depth for child in children)
    if depth > MAX_DEPTH:
        raise sql_error(pos, f"expression nested deeper than {MAX_DEPTH} levels")
    return Node(fn, depth=depth, boolish=boolish)


def compare_node(symbol: str, left: Node, right: Node, pos: int) -> Node:
    if left.const and not right.const:
        left, right, symbol = right, left, MIRRORED[symbol]
    op = COMPARE_OPS[symbol]
    if right.const and not left.const:
        return make_node(_compare_const(op, left.fn, right.value), [left], pos)
    lf, rf = left.fn, right.fn

    def compare(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        return compare_values(op, lf(system, user), rf(system, user))

    return make_node(compare, [left, right], pos)


def _compare_const(op: Callable[[Any, Any], bool], get: Evaluator, constant: Any) -> Evaluator:
    """Hot path for ``property <op> literal``: the literal's kind is known up front."""
    if constant is None:
        return lambda system, user: None
    kind = value_kind(constant)
    if kind == "bool" and op is not operator.eq and op is not operator.ne:
        return lambda system, user: None
    kinds_get = KINDS.get

    def compare(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value = get(system, user)
        if value is None:
            return None
        if (kinds_get(type(value)) or value_kind(value)) != kind:
            return None
        try:
            return bool(op(value, constant))
        except TypeError:
            return None

    return compare


def and_node(nodes: list[Node], pos: int) -> Node:
    fns = tuple(node.fn for node in nodes)

    def conjunction(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        result: bool | None = True
        for fn in fns:
            value = fn(system, user)
            if value is False:
                return False
            if value is not True:
                result = None
        return result

    return make_node(conjunction, nodes, pos)


def or_node(nodes: list[Node], pos: int) -> Node:
    fns = tuple(node.fn for node in nodes)

    def disjunction(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        result: bool | None = False
        for fn in fns:
            value = fn(system, user)
            if value is True:
                return True
            if value is not False:
                result = None
        return result

    return make_node(disjunction, nodes, pos)


def not_node(node: Node, pos: int) -> Node:
    fn = node.fn

    def negation(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value = fn(system, user)
        if value is True:
            return False
        return True if value is False else None

    return make_node(negation, [node], pos)


def in_node(left: Node, items: list[Node], pos: int) -> Node:
    get = left.fn
    if all(item.const for item in items):
        buckets: dict[object, set[Any]] = {}
        for item in items:
            if item.value is not None:
                buckets.setdefault(value_kind(item.value), set()).add(item.value)
        frozen = {kind: frozenset(values) for kind, values in buckets.items()}
        miss: bool | None = None if any(item.value is None for item in items) else False

        def member(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
            value = get(system, user)
            if value is None:
                return None
            bucket = frozen.get(value_kind(value))
            if bucket is not None and value in bucket:
                return True
            return miss

        return make_node(member, [left], pos)
    fns = tuple(item.fn for item in items)

    def member_dynamic(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value = get(system, user)
        if value is None:
            return None
        result: bool | None = False
        for fn in fns:
            equal = compare_values(operator.eq, value, fn(system, user))
            if equal is True:
                return True
            if equal is None:
                result = None
        return result

    return make_node(member_dynamic, [left, *items], pos)


def like_node(left: Node, pattern: Node, escape: Node | None, pos: int) -> Node:
    get = left.fn
    if pattern.const and (escape is None or escape.const):
        esc = None if escape is None else escape.value
        if not isinstance(pattern.value, str):
            raise sql_error(pos, "LIKE pattern must be a string")
        if esc is not None and (not isinstance(esc, str) or len(esc) != 1):
            raise sql_error(pos, "ESCAPE must be a single-character string")
        regex = like_regex(pattern.value, esc)
        if regex is None:
            raise sql_error(pos, "LIKE pattern ends with its escape character")
        fullmatch = regex.fullmatch

        def like(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
            value = get(system, user)
            return fullmatch(value) is not None if isinstance(value, str) else None

        return make_node(like, [left], pos)
    pf = pattern.fn
    ef = None if escape is None else escape.fn

    def like_dynamic(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value, pat = get(system, user), pf(system, user)
        esc = None if ef is None else ef(system, user)
        if not isinstance(value, str) or not isinstance(pat, str):
            return None
        if esc is not None and (not isinstance(esc, str) or len(esc) != 1):
            return None
        regex = like_regex(pat, esc)
        return None if regex is None else regex.fullmatch(value) is not None

    children = [left, pattern] if escape is None else [left, pattern, escape]
    return make_node(like_dynamic, children, pos)


def arith_node(symbol: str, left: Node, right: Node, pos: int) -> Node:
    lf, rf = left.fn, right.fn

    def arith(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        return arithmetic(symbol, lf(system, user), rf(system, user))

    return make_node(arith, [left, right], pos, boolish=False)


def unary_node(symbol: str, node: Node, pos: int) -> Node:
    fn = node.fn

    def unary(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        value = fn(system, user)
        if value_kind(value) != "num":
            return None
        return -value if symbol == "-" else value

    return make_node(unary, [node], pos, boolish=False)


def set_step(
    ref: PropertyRef, fn: Evaluator
) -> Callable[[MutableMapping[str, Any], MutableMapping[str, Any]], None]:
    name = ref.name
    if ref.scope == "sys":

        def set_system(system: MutableMapping[str, Any], user: MutableMapping[str, Any]) -> None:
            system[name] = fn(system, user)

        return set_system

    def set_user(system: MutableMapping[str, Any], user: MutableMapping[str, Any]) -> None:
        value = fn(system, user)
        user[find_user_key(user, name) or name] = value

    return set_user


def remove_step(ref: PropertyRef) -> Callable[[MutableMapping[str, Any], MutableMapping[str, Any]], None]:
    name = ref.name
    if ref.scope == "sys":

        def remove_system(system: MutableMapping[str, Any], user: MutableMapping[str, Any]) -> None:
            system.pop(name, None)

        return remove_system

    def remove_user(system: MutableMapping[str, Any], user: MutableMapping[str, Any]) -> None:
        key = find_user_key(user, name)
        if key is not None:
            del user[key]

    return remove_user
