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
"""

from __future__ import annotations

import math
import operator
import re
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from servicebus_emulator.errors import FilterError

MAX_EXPRESSION_LENGTH: Final = 1024  # Service Bus limit for filter and action text
MAX_DEPTH: Final = 64  # parentheses/NOT/unary nesting, and depth of the compiled tree

Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


def _error(pos: int, detail: str) -> FilterError:
    return FilterError(f"invalid SQL expression at position {pos}: {detail}", pos)


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

_KEYWORDS: Final = frozenset(
    {"AND", "OR", "NOT", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE", "EXISTS"}
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


def _user_getter(name: str) -> Evaluator:
    lname = name.lower()

    def get(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        value = user.get(name, _MISSING)
        if value is _MISSING:
            key = _folded_key(user, lname)
            return None if key is None else user[key]
        return value

    return get


def _system_getter(key: str) -> Evaluator:
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
_KINDS: Final[dict[type, str]] = {bool: "bool", int: "num", float: "num", Decimal: "num", str: "str"}


def value_kind(value: Any) -> object:
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "num"
    if isinstance(value, str):
        return "str"
    return type(value)


_COMPARE_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_MIRRORED: Final = {"=": "=", "<>": "<>", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


def _compare(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool | None:
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


def _arith(symbol: str, a: Any, b: Any) -> Any:
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


# --------------------------------------------------------------------------- lexer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num str ident qident kw op eof
    value: Any
    pos: int
    text: str


_TOKEN_RE: Final = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<str>'(?:[^']|'')*')
      | (?P<bracket>\[(?:[^\]]|\]\])*\])
      | (?P<dquote>"(?:[^"]|"")*")
      | (?P<ident>[^\W\d]\w*)
      | (?P<op><>|!=|>=|<=|[=<>+\-*/%(),.;])""",
    re.VERBOSE,
)
_UNCLOSED: Final = {
    "'": "unclosed string literal",
    "[": "unclosed delimited identifier [..]",
    '"': 'unclosed quoted identifier ".."',
}


def _number(text: str, pos: int) -> int | float:
    if any(c in text for c in ".eE"):
        value = float(text)
        if math.isinf(value):
            raise _error(pos, f"numeric constant {text} is out of range")
        return value
    number = int(text)
    if number > 2**63 - 1:
        raise _error(pos, f"integer constant {text} exceeds the 64-bit range")
    return number


def tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; keywords are recognised case-insensitively."""
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            raise _error(pos, _UNCLOSED.get(ch, f"unexpected character {ch!r}"))
        kind, raw = m.lastgroup or "", m.group()
        if kind == "num":
            tokens.append(_Token("num", _number(raw, pos), pos, raw))
        elif kind == "str":
            tokens.append(_Token("str", raw[1:-1].replace("''", "'"), pos, raw))
        elif kind == "bracket":
            tokens.append(_Token("qident", raw[1:-1].replace("]]", "]"), pos, raw))
        elif kind == "dquote":
            tokens.append(_Token("qident", raw[1:-1].replace('""', '"'), pos, raw))
        elif kind == "ident":
            upper = raw.upper()
            if upper in _KEYWORDS:
                tokens.append(_Token("kw", upper, pos, raw))
            else:
                tokens.append(_Token("ident", raw, pos, raw))
        elif kind == "op":
            tokens.append(_Token("op", raw, pos, raw))
        pos = m.end()
    tokens.append(_Token("eof", None, end, "end of expression"))
    return tokens


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class PropertyRef:
    """A resolved ``[sys.|user.]name`` reference."""

    scope: str  # "sys" or "user"
    name: str  # user: name as written; sys: key in the system mapping


@dataclass(frozen=True, slots=True)
class _Node:
    fn: Evaluator
    depth: int = 0
    const: bool = False
    value: Any = None
    boolish: bool = True  # may evaluate to a boolean (False: number/string/guid only)
    prop: PropertyRef | None = None


def _const(value: Any) -> _Node:
    def fn(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        return value

    boolish = value is None or isinstance(value, bool)
    return _Node(fn, const=True, value=value, boolish=boolish)


def _prop_node(ref: PropertyRef) -> _Node:
    getter = _user_getter(ref.name) if ref.scope == "user" else _system_getter(ref.name)
    return _Node(getter, depth=1, prop=ref)


_EMPTY: Final[Mapping[str, Any]] = {}


def _make(fn: Evaluator, children: list[_Node], pos: int, boolish: bool = True) -> _Node:
    """Wrap ``fn`` as a node: fold it when all children are constant, bound its depth."""
    if all(child.const for child in children):
        return _const(fn(_EMPTY, _EMPTY))
    depth = 1 + max(child.depth for child in children)
    if depth > MAX_DEPTH:
        raise _error(pos, f"expression nested deeper than {MAX_DEPTH} levels")
    return _Node(fn, depth=depth, boolish=boolish)


def _compare_node(symbol: str, left: _Node, right: _Node, pos: int) -> _Node:
    if left.const and not right.const:
        left, right, symbol = right, left, _MIRRORED[symbol]
    op = _COMPARE_OPS[symbol]
    if right.const and not left.const:
        return _make(_compare_const(op, left.fn, right.value), [left], pos)
    lf, rf = left.fn, right.fn

    def compare(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        return _compare(op, lf(system, user), rf(system, user))

    return _make(compare, [left, right], pos)


def _compare_const(op: Callable[[Any, Any], bool], get: Evaluator, constant: Any) -> Evaluator:
    """Hot path for ``property <op> literal``: the literal's kind is known up front."""
    if constant is None:
        return lambda system, user: None
    kind = value_kind(constant)
    if kind == "bool" and op is not operator.eq and op is not operator.ne:
        return lambda system, user: None
    kinds_get = _KINDS.get

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


def _and_node(nodes: list[_Node], pos: int) -> _Node:
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

    return _make(conjunction, nodes, pos)


def _or_node(nodes: list[_Node], pos: int) -> _Node:
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

    return _make(disjunction, nodes, pos)


def _not_node(node: _Node, pos: int) -> _Node:
    fn = node.fn

    def negation(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value = fn(system, user)
        if value is True:
            return False
        return True if value is False else None

    return _make(negation, [node], pos)


def _in_node(left: _Node, items: list[_Node], pos: int) -> _Node:
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

        return _make(member, [left], pos)
    fns = tuple(item.fn for item in items)

    def member_dynamic(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
        value = get(system, user)
        if value is None:
            return None
        result: bool | None = False
        for fn in fns:
            equal = _compare(operator.eq, value, fn(system, user))
            if equal is True:
                return True
            if equal is None:
                result = None
        return result

    return _make(member_dynamic, [left, *items], pos)


def _like_node(left: _Node, pattern: _Node, escape: _Node | None, pos: int) -> _Node:
    get = left.fn
    if pattern.const and (escape is None or escape.const):
        esc = None if escape is None else escape.value
        if not isinstance(pattern.value, str):
            raise _error(pos, "LIKE pattern must be a string")
        if esc is not None and (not isinstance(esc, str) or len(esc) != 1):
            raise _error(pos, "ESCAPE must be a single-character string")
        regex = like_regex(pattern.value, esc)
        if regex is None:
            raise _error(pos, "LIKE pattern ends with its escape character")
        fullmatch = regex.fullmatch

        def like(system: Mapping[str, Any], user: Mapping[str, Any]) -> bool | None:
            value = get(system, user)
            return fullmatch(value) is not None if isinstance(value, str) else None

        return _make(like, [left], pos)
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
    return _make(like_dynamic, children, pos)


def _arith_node(symbol: str, left: _Node, right: _Node, pos: int) -> _Node:
    lf, rf = left.fn, right.fn

    def arith(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        return _arith(symbol, lf(system, user), rf(system, user))

    return _make(arith, [left, right], pos, boolish=False)


def _unary_node(symbol: str, node: _Node, pos: int) -> _Node:
    fn = node.fn

    def unary(system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
        value = fn(system, user)
        if value_kind(value) != "num":
            return None
        return -value if symbol == "-" else value

    return _make(unary, [node], pos, boolish=False)


def _resolve_dynamic(reference: Any, system: Mapping[str, Any], user: Mapping[str, Any]) -> Any:
    """``property(expr)`` with a computed name: resolve the name per message."""
    if not isinstance(reference, str):
        return None
    scope, dot, name = reference.partition(".")
    if dot and scope.lower() == "sys":
        key = SYSTEM_PROPERTIES.get(name.lower())
        return None if key is None else _system_getter(key)(system, user)
    if dot and scope.lower() == "user":
        reference = name
    return _user_getter(reference)(system, user)


# --------------------------------------------------------------------------- parser


class _Parser:
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
    def tok(self) -> _Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
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

    def expect(self, kind: str, value: Any, what: str) -> _Token:
        if not self.at(kind, value):
            raise self.unexpected(f"expected {what}")
        return self.advance()

    def unexpected(self, expected: str) -> FilterError:
        token = self.tok
        found = "end of expression" if token.kind == "eof" else repr(token.text)
        return _error(token.pos, f"{expected}, found {found}")

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise _error(self.tok.pos, f"expression nested deeper than {MAX_DEPTH} levels")

    def leave(self) -> None:
        self.nesting -= 1

    # -- entry points
    def parse_filter(self) -> _Node:
        node = self.predicate()
        if not self.at("eof"):
            raise self.unexpected("expected an operator or end of expression")
        if not node.boolish or (node.const and node.value is not None and not isinstance(node.value, bool)):
            raise _error(0, "the filter is a value, not a condition (e.g. add '= ...')")
        return node

    def predicate(self) -> _Node:
        return self.disjunction()

    # -- grammar
    def require_condition(self, node: _Node, pos: int) -> _Node:
        if not node.boolish:
            raise _error(pos, "expected a condition, found a numeric/string expression")
        return node

    def condition(self, parse: Callable[[], _Node]) -> _Node:
        pos = self.tok.pos
        return self.require_condition(parse(), pos)

    def disjunction(self) -> _Node:
        pos = self.tok.pos
        nodes = [self.conjunction()]
        while self.accept("kw", "OR"):
            nodes.append(self.condition(self.conjunction))
        if len(nodes) == 1:
            return nodes[0]
        self.require_condition(nodes[0], pos)
        return _or_node(nodes, pos)

    def conjunction(self) -> _Node:
        pos = self.tok.pos
        nodes = [self.negation()]
        while self.accept("kw", "AND"):
            nodes.append(self.condition(self.negation))
        if len(nodes) == 1:
            return nodes[0]
        self.require_condition(nodes[0], pos)
        return _and_node(nodes, pos)

    def negation(self) -> _Node:
        pos = self.tok.pos
        if not self.accept("kw", "NOT"):
            return self.comparison()
        self.enter()
        operand = self.condition(self.negation)
        self.leave()
        return _not_node(operand, pos)

    def comparison(self) -> _Node:
        pos = self.tok.pos
        if self.accept("kw", "EXISTS"):
            return self.exists(pos)
        left = self.additive()
        token = self.tok
        if token.kind == "op" and token.value in _COMPARE_OPS:
            self.advance()
            return _compare_node(token.value, left, self.additive(), token.pos)
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
        return _not_node(node, token.pos) if negated else node

    def exists(self, pos: int) -> _Node:
        self.expect("op", "(", "'(' after EXISTS")
        ref_pos = self.tok.pos
        ref = self.property_ref()
        if ref is None:
            raise _error(ref_pos, "EXISTS takes a property name")
        self.expect("op", ")", "')' to close EXISTS(")
        name = ref.name
        if ref.scope == "sys":
            getter = _system_getter(name)
            return _Node(lambda system, user: getter(system, user) is not None, depth=1)
        return _Node(lambda system, user: find_user_key(user, name) is not None, depth=1)

    def is_null(self, operand: _Node, negated: bool, pos: int) -> _Node:
        fn = operand.fn
        if negated:
            return _make(lambda system, user: fn(system, user) is not None, [operand], pos)
        return _make(lambda system, user: fn(system, user) is None, [operand], pos)

    def in_list(self, left: _Node, pos: int) -> _Node:
        self.expect("op", "(", "'(' after IN")
        items = [self.additive()]
        while self.accept("op", ","):
            items.append(self.additive())
        self.expect("op", ")", "',' or ')' in the IN list")
        return _in_node(left, items, pos)

    def like(self, left: _Node, pos: int) -> _Node:
        pattern = self.additive()
        escape = self.additive() if self.accept("kw", "ESCAPE") else None
        return _like_node(left, pattern, escape, pos)

    def additive(self) -> _Node:
        node = self.multiplicative()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            token = self.advance()
            node = _arith_node(token.value, node, self.multiplicative(), token.pos)
        return node

    def multiplicative(self) -> _Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "%"):
            token = self.advance()
            node = _arith_node(token.value, node, self.unary(), token.pos)
        return node

    def unary(self) -> _Node:
        token = self.tok
        if token.kind == "op" and token.value in ("+", "-"):
            self.advance()
            self.enter()
            operand = self.unary()
            self.leave()
            return _unary_node(token.value, operand, token.pos)
        return self.primary()

    def primary(self) -> _Node:
        token = self.tok
        if token.kind in ("num", "str"):
            self.advance()
            return _const(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE", "NULL"):
            self.advance()
            return _const({"TRUE": True, "FALSE": False, "NULL": None}[token.value])
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
        return _prop_node(ref)

    def function(self) -> _Node:
        token = self.advance()
        self.advance()  # "("
        name = token.value.lower()
        if name == "newid":
            self.expect("op", ")", "')' after newid(")
            return _Node(lambda system, user: uuid.uuid4(), depth=1, boolish=False)
        if name in ("property", "p"):
            argument = self.additive()
            self.expect("op", ")", f"')' to close {token.value}(")
            if argument.const:
                return _prop_node(self.resolve_name(argument.value, token.pos))
            fn = argument.fn
            return _make(
                lambda system, user: _resolve_dynamic(fn(system, user), system, user), [argument], token.pos
            )
        raise _error(
            token.pos, f"unknown function {token.value}(); supported: newid(), property(name), p(name)"
        )

    def resolve_name(self, reference: Any, pos: int) -> PropertyRef:
        if not isinstance(reference, str):
            raise _error(pos, "property() takes a string name")
        scope, dot, name = reference.partition(".")
        if dot and scope.lower() in ("sys", "user"):
            return self.scoped(scope.lower(), name, pos)
        return PropertyRef("user", reference)

    def scoped(self, scope: str, name: str, pos: int) -> PropertyRef:
        if scope == "user":
            return PropertyRef("user", name)
        key = SYSTEM_PROPERTIES.get(name.lower())
        if key is None:
            raise _error(pos, f"unknown system property sys.{name}")
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
                raise _error(ref_pos, f"system property {ref.name} is read-only")
            if verb == "SET":
                self.expect("op", "=", "'=' after the SET target")
                steps.append(_set_step(ref, self.predicate().fn))
            else:
                steps.append(_remove_step(ref))
        if not steps:
            raise _error(0, "the action has no SET or REMOVE statement")
        return steps


def _set_step(
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


def _remove_step(ref: PropertyRef) -> Callable[[MutableMapping[str, Any], MutableMapping[str, Any]], None]:
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


# --------------------------------------------------------------------------- public


def compile_predicate(expression: str) -> Evaluator:
    """Parse a SQL filter to ``fn(system, user) -> True | False | None``."""
    if not isinstance(expression, str):
        raise FilterError("invalid SQL expression: expected a string")
    if not expression.strip():
        raise FilterError("invalid SQL expression: the expression is empty", 0)
    try:
        return _Parser(expression).parse_filter().fn
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
            self._steps = tuple(_Parser(expression).parse_action())
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
