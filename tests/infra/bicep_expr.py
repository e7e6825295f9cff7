"""A small evaluator for the Bicep expressions the client-auth check uses, so a test can run the
check for given parameter values without the Bicep CLI: string and number literals, parameter
names, ``empty()``, ``length()``, ``fail()``, ``!``, ``||``, ``&&``, ``<``, ``==`` and ``? :``."""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>\|\||&&|==|!=|[!?:()<,]))")


class BicepFail(Exception):
    """``fail('...')`` was evaluated: the deployment stops with this message."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read the expression at {text[pos:pos + 30]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, params: dict[str, Any]):
        self.toks = _tokens(text)
        self.i = 0
        self.params = params

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        tok = self.toks[self.i]
        if want is not None and tok[1] != want:
            raise ValueError(f"expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    # Evaluation is lazy: a branch not taken is parsed with evaluate=False (fail() must not fire there).
    def ternary(self, ev: bool) -> Any:
        cond = self.or_(ev)
        if self.peek() != "?":
            return cond
        self.take("?")
        yes = self.ternary(ev and bool(cond))
        self.take(":")
        no = self.ternary(ev and not cond)
        return yes if cond else no

    def or_(self, ev: bool) -> Any:
        left = self.and_(ev)
        while self.peek() == "||":
            self.take()
            right = self.and_(ev and not left)
            left = bool(left) or bool(right)
        return left

    def and_(self, ev: bool) -> Any:
        left = self.cmp(ev)
        while self.peek() == "&&":
            self.take()
            right = self.cmp(ev and bool(left))
            left = bool(left) and bool(right)
        return left

    def cmp(self, ev: bool) -> Any:
        left = self.unary(ev)
        if self.peek() in ("<", "==", "!="):
            op = self.take()[1]
            right = self.unary(ev)
            if not ev:
                return False
            return {"<": lambda: left < right, "==": lambda: left == right, "!=": lambda: left != right}[op]()
        return left

    def unary(self, ev: bool) -> Any:
        if self.peek() == "!":
            self.take()
            return not self.unary(ev)
        return self.atom(ev)

    def atom(self, ev: bool) -> Any:
        kind, value = self.take()
        if value == "(":
            inner = self.ternary(ev)
            self.take(")")
            return inner
        if kind == "str":
            return value[1:-1].replace("\\'", "'")
        if kind == "num":
            return int(value)
        if kind == "name" and self.peek() == "(":
            self.take("(")
            args = [self.ternary(ev)]
            while self.peek() == ",":
                self.take()
                args.append(self.ternary(ev))
            self.take(")")
            if not ev:
                return None
            if value == "fail":
                raise BicepFail(args[0])
            if value == "empty":
                return not args[0]
            if value == "length":
                return len(args[0])
            raise ValueError(f"function {value}() is not supported here")
        if kind == "name":
            if value in ("true", "false"):
                return value == "true"
            return self.params[value]
        raise ValueError(f"unexpected {value!r}")


def evaluate(text: str, params: dict[str, Any]) -> Any:
    parser = _Parser(text, params)
    result = parser.ternary(True)
    if parser.i != len(parser.toks):
        raise ValueError(f"left over: {parser.toks[parser.i:]}")
    return result
