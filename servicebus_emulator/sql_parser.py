"""The parser of the SQL filter and rule-action language: tokens -> compiled nodes.

A recursive-descent parser that checks the grammar and the limits (length, nesting, known
system properties, settable targets) and builds the closures of
:mod:`servicebus_emulator.sql_nodes`; no tree is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, MutableMapping
from typing import Any, Final

from servicebus_emulator.errors import FilterError
from servicebus_emulator.sql_lexer import Token, sql_error, tokenize
from servicebus_emulator.sql_nodes import (
    MAX_DEPTH,
    Node,
    PropertyRef,
    and_node,
    arith_node,
    compare_node,
    const_node,
    in_node,
    like_node,
    make_node,
    not_node,
    or_node,
    prop_node,
    remove_step,
    set_step,
    unary_node,
)
from servicebus_emulator.sql_values import (
    COMPARE_OPS,
    SETTABLE_SYSTEM_KEYS,
    SYSTEM_PROPERTIES,
    find_user_key,
    resolve_dynamic,
    system_getter,
)

MAX_EXPRESSION_LENGTH: Final = 1024  # Service Bus limit for filter and action text


class Parser:
    """Recursive-descent parser that emits closures; precedence, low to high:
    OR, AND, NOT, comparison/IS/IN/LIKE/EXISTS, + -, * / %, unary + -, primary."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise FilterError(
                f"invalid SQL expression: {len(text)} characters exceeds the "
                f"{MAX_EXPRESSION_LENGTH}-character limit",
                MAX_EXPRESSION_LENGTH,
            )
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.tok
        return token.kind == kind and (value is None or token.value == value)

    def accept(self, kind: str, value: Any = None) -> bool:
        if self.at(kind, value):
            self.advance()
            return True
        return False

    def expect(self, kind: str, value: Any, what: str) -> Token:
        if not self.at(kind, value):
            raise self.unexpected(f"expected {what}")
        return self.advance()

    def unexpected(self, expected: str) -> FilterError:
        token = self.tok
        found = "end of expression" if token.kind == "eof" else repr(token.text)
        return sql_error(token.pos, f"{expected}, found {found}")

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise sql_error(self.tok.pos, f"expression nested deeper than {MAX_DEPTH} levels")

    def leave(self) -> None:
        self.nesting -= 1

    # -- entry points
    def parse_filter(self) -> Node:
        node = self.predicate()
        if not self.at("eof"):
            raise self.unexpected("expected an operator or end of expression")
        if not node.boolish or (node.const and node.value is not None and not isinstance(node.value, bool)):
            raise sql_error(0, "the filter is a value, not a condition (e.g. add '= ...')")
        return node

    def predicate(self) -> Node:
        return self.disjunction()

    # -- grammar
    def require_condition(self, node: Node, pos: int) -> Node:
        if not node.boolish:
            raise sql_error(pos, "expected a condition, found a numeric/string expression")
        return node

    def condition(self, parse: Callable[[], Node]) -> Node:
        pos = self.tok.pos
        return self.require_condition(parse(), pos)

    def disjunction(self) -> Node:
        pos = self.tok.pos
        nodes = [self.conjunction()]
        while self.accept("kw", "OR"):
            nodes.append(self.condition(self.conjunction))
        if len(nodes) == 1:
            return nodes[0]
        self.require_condition(nodes[0], pos)
        return or_node(nodes, pos)

    def conjunction(self) -> Node:
        pos = self.tok.pos
        nodes = [self.negation()]
        while self.accept("kw", "AND"):
            nodes.append(self.condition(self.negation))
        if len(nodes) == 1:
            return nodes[0]
        self.require_condition(nodes[0], pos)
        return and_node(nodes, pos)

    def negation(self) -> Node:
        pos = self.tok.pos
        if not self.accept("kw", "NOT"):
            return self.comparison()
        self.enter()
        operand = self.condition(self.negation)
        self.leave()
        return not_node(operand, pos)

    def comparison(self) -> Node:
        pos = self.tok.pos
        if self.accept("kw", "EXISTS"):
            return self.exists(pos)
        left = self.additive()
        token = self.tok
        if token.kind == "op" and token.value in COMPARE_OPS:
            self.advance()
            return compare_node(token.value, left, self.additive(), token.pos)
        if self.accept("kw", "IS"):
            negated = self.accept("kw", "NOT")
            self.expect("kw", "NULL", "NULL after IS [NOT]")
            return self.is_null(left, negated, token.pos)
        negated = self.at("kw", "NOT") and self.peek().kind == "kw" and self.peek().value in ("IN", "LIKE")
        if negated:
            self.advance()
        if self.accept("kw", "IN"):
            node = self.in_list(left, token.pos)
        elif self.accept("kw", "LIKE"):
            node = self.like(left, token.pos)
        else:
            return left
        return not_node(node, token.pos) if negated else node

    def exists(self, pos: int) -> Node:
        self.expect("op", "(", "'(' after EXISTS")
        ref_pos = self.tok.pos
        ref = self.property_ref()
        if ref is None:
            raise sql_error(ref_pos, "EXISTS takes a property name")
        self.expect("op", ")", "')' to close EXISTS(")
        name = ref.name
        if ref.scope == "sys":
            getter = system_getter(name)
            return Node(lambda system, user: getter(system, user) is not None, depth=1)
        return Node(lambda system, user: find_user_key(user, name) is not None, depth=1)

    def is_null(self, operand: Node, negated: bool, pos: int) -> Node:
        fn = operand.fn
        if negated:
            return make_node(lambda system, user: fn(system, user) is not None, [operand], pos)
        return make_node(lambda system, user: fn(system, user) is None, [operand], pos)

    def in_list(self, left: Node, pos: int) -> Node:
        self.expect("op", "(", "'(' after IN")
        items = [self.additive()]
        while self.accept("op", ","):
            items.append(self.additive())
        self.expect("op", ")", "',' or ')' in the IN list")
        return in_node(left, items, pos)

    def like(self, left: Node, pos: int) -> Node:
        pattern = self.additive()
        escape = self.additive() if self.accept("kw", "ESCAPE") else None
        return like_node(left, pattern, escape, pos)

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            token = self.advance()
            node = arith_node(token.value, node, self.multiplicative(), token.pos)
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "%"):
            token = self.advance()
            node = arith_node(token.value, node, self.unary(), token.pos)
        return node

    def unary(self) -> Node:
        token = self.tok
        if token.kind == "op" and token.value in ("+", "-"):
            self.advance()
            self.enter()
            operand = self.unary()
            self.leave()
            return unary_node(token.value, operand, token.pos)
        return self.primary()

    def primary(self) -> Node:
        token = self.tok
        if token.kind in ("num", "str"):
            self.advance()
            return const_node(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE", "NULL"):
            self.advance()
            return const_node({"TRUE": True, "FALSE": False, "NULL": None}[token.value])
        if self.accept("op", "("):
            self.enter()
            node = self.predicate()
            self.expect("op", ")", "')'")
            self.leave()
            return node
        if token.kind == "ident" and self.peek().kind == "op" and self.peek().value == "(":
            return self.function()
        ref = self.property_ref()
        if ref is None:
            raise self.unexpected("expected a value, property or '('")
        return prop_node(ref)

    def function(self) -> Node:
        token = self.advance()
        self.advance()  # "("
        name = token.value.lower()
        if name == "newid":
            self.expect("op", ")", "')' after newid(")
            return Node(lambda system, user: uuid.uuid4(), depth=1, boolish=False)
        if name in ("property", "p"):
            argument = self.additive()
            self.expect("op", ")", f"')' to close {token.value}(")
            if argument.const:
                return prop_node(self.resolve_name(argument.value, token.pos))
            fn = argument.fn
            return make_node(
                lambda system, user: resolve_dynamic(fn(system, user), system, user), [argument], token.pos
            )
        raise sql_error(
            token.pos, f"unknown function {token.value}(); supported: newid(), property(name), p(name)"
        )

    def resolve_name(self, reference: Any, pos: int) -> PropertyRef:
        if not isinstance(reference, str):
            raise sql_error(pos, "property() takes a string name")
        scope, dot, name = reference.partition(".")
        if dot and scope.lower() in ("sys", "user"):
            return self.scoped(scope.lower(), name, pos)
        return PropertyRef("user", reference)

    def scoped(self, scope: str, name: str, pos: int) -> PropertyRef:
        if scope == "user":
            return PropertyRef("user", name)
        key = SYSTEM_PROPERTIES.get(name.lower())
        if key is None:
            raise sql_error(pos, f"unknown system property sys.{name}")
        return PropertyRef("sys", key)

    def property_ref(self) -> PropertyRef | None:
        """``[scope.]name`` or None when the current token cannot start a property."""
        token = self.tok
        if token.kind not in ("ident", "qident"):
            return None
        self.advance()
        if self.at("op", ".") and str(token.value).lower() in ("sys", "user"):
            self.advance()
            name_token = self.tok
            if name_token.kind not in ("ident", "qident", "kw"):
                raise self.unexpected(f"expected a property name after '{token.text}.'")
            self.advance()
            name = name_token.text if name_token.kind == "kw" else name_token.value
            return self.scoped(str(token.value).lower(), name, name_token.pos)
        return PropertyRef("user", token.value)

    # -- rule actions
    def parse_action(self) -> list[Callable[[MutableMapping[str, Any], MutableMapping[str, Any]], None]]:
        steps: list[Callable[[MutableMapping[str, Any], MutableMapping[str, Any]], None]] = []
        while True:
            while self.accept("op", ";"):
                pass
            if self.at("eof"):
                break
            token = self.tok
            verb = str(token.value).upper() if token.kind == "ident" else ""
            if verb not in ("SET", "REMOVE"):
                raise self.unexpected("expected SET or REMOVE")
            self.advance()
            ref_pos = self.tok.pos
            ref = self.property_ref()
            if ref is None:
                raise self.unexpected(f"expected a property name after {verb}")
            if ref.scope == "sys" and ref.name not in SETTABLE_SYSTEM_KEYS:
                raise sql_error(ref_pos, f"system property {ref.name} is read-only")
            if verb == "SET":
                self.expect("op", "=", "'=' after the SET target")
                steps.append(set_step(ref, self.predicate().fn))
            else:
                steps.append(remove_step(ref))
        if not steps:
            raise sql_error(0, "the action has no SET or REMOVE statement")
        return steps
