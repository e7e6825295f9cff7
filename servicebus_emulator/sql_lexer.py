"""The lexer of the Service Bus SQL filter language: text -> tokens, and its syntax errors.

The language and its semantics are described in :mod:`servicebus_emulator.sqlfilter`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from servicebus_emulator.errors import FilterError

_KEYWORDS: Final = frozenset(
    {"AND", "OR", "NOT", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE", "EXISTS"}
)


def sql_error(pos: int, detail: str) -> FilterError:
    return FilterError(f"invalid SQL expression at position {pos}: {detail}", pos)


@dataclass(frozen=True, slots=True)
class Token:
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
            raise sql_error(pos, f"numeric constant {text} is out of range")
        return value
    number = int(text)
    if number > 2**63 - 1:
        raise sql_error(pos, f"integer constant {text} exceeds the 64-bit range")
    return number


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; keywords are recognised case-insensitively."""
    tokens: list[Token] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            raise sql_error(pos, _UNCLOSED.get(ch, f"unexpected character {ch!r}"))
        kind, raw = m.lastgroup or "", m.group()
        if kind == "num":
            tokens.append(Token("num", _number(raw, pos), pos, raw))
        elif kind == "str":
            tokens.append(Token("str", raw[1:-1].replace("''", "'"), pos, raw))
        elif kind == "bracket":
            tokens.append(Token("qident", raw[1:-1].replace("]]", "]"), pos, raw))
        elif kind == "dquote":
            tokens.append(Token("qident", raw[1:-1].replace('""', '"'), pos, raw))
        elif kind == "ident":
            upper = raw.upper()
            if upper in _KEYWORDS:
                tokens.append(Token("kw", upper, pos, raw))
            else:
                tokens.append(Token("ident", raw, pos, raw))
        elif kind == "op":
            tokens.append(Token("op", raw, pos, raw))
        pos = m.end()
    tokens.append(Token("eof", None, end, "end of expression"))
    return tokens
