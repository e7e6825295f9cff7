"""Low-level JSON codec for the wire format (pure, no I/O).

This module knows nothing about envelopes; it provides

* :class:`EnvelopeError` / :class:`EnvelopeTooLarge` (re-exported by
  :mod:`socketio_servicebus.wire.envelope`),
* :func:`dumps` - compact UTF-8 JSON with the tagged ``{"_b64": ...}`` form for
  raw ``bytes`` and the ``{"_esc": ...}`` escape for user dicts that would
  otherwise look like a tag,
* :func:`loads` - strict bounded parsing that only ever raises
  :class:`EnvelopeError`,
* :func:`restore` - the inverse of the tagging done by :func:`dumps`.

Tagging rules (see docs/wire-format.md, "Raw bytes"):

* ``bytes`` / ``bytearray`` / ``memoryview``  ->  ``{"_b64": "<base64>"}``
* a dict whose *only* key is ``"_b64"`` or ``"_esc"``  ->  ``{"_esc": dict}``
* everything else is plain JSON; tuples become lists.

The fast path never walks the value in Python: it serialises with the C
encoder and only falls back to a tagging walk when the encoder meets bytes
(``TypeError``) or when the output contains a literal ``"_b64"`` / ``"_esc"``
string token.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from socketio_servicebus.errors import EnvelopeError, EnvelopeTooLarge

__all__ = [
    "MAX_DEPTH",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "dumps",
    "dumps_plain",
    "loads",
    "restore",
    "needs_restore",
    "depth",
]

#: Maximum nesting depth of a whole decoded document (arrays and objects).
MAX_DEPTH = 64

TAG_B64 = "_b64"
TAG_ESC = "_esc"
_TAGS = (TAG_B64, TAG_ESC)
_TAG_TOKENS = ('"_b64"', '"_esc"')
_TAG_TOKENS_B = (b'"_b64"', b'"_esc"')


_ENC_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ENC_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    f = float(text)
    if f - f != 0.0:  # inf (e.g. "1e999"); NaN can't come from a JSON number
        raise ValueError(f"number out of range: {text[:40]}")
    return f


_DEC = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


# --------------------------------------------------------------------------
# encoding


def _prepare(obj: Any) -> Any:
    """Return a JSON-ready copy of ``obj`` with bytes tagged and tags escaped."""
    t = type(obj)
    if t is dict or isinstance(obj, dict):
        out = {k: _prepare(v) for k, v in obj.items()}
        if len(out) == 1 and next(iter(out)) in _TAGS:
            return {TAG_ESC: out}
        return out
    if t is list or t is tuple or isinstance(obj, (list, tuple)):
        return [_prepare(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {TAG_B64: base64.b64encode(obj).decode("ascii")}
    return obj


def _to_bytes(s: str, obj: Any) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (legal in a Python str, not in UTF-8): fall back to
        # \\uXXXX escapes, which JSON can carry and json.loads restores.
        return _ENC_ASCII.encode(obj).encode("ascii")


def dumps_plain(obj: Any) -> bytes:
    """Compact UTF-8 JSON for trusted, tag-free values (no bytes tagging)."""
    try:
        return _to_bytes(_ENC_UTF8.encode(obj), obj)
    except RecursionError:
        raise EnvelopeError("too-deep", "value nested too deeply to encode") from None
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("not-serializable", str(exc)) from None


def dumps(obj: Any, max_depth: int = MAX_DEPTH) -> bytes:
    """Encode ``obj`` to compact UTF-8 JSON applying the tagging rules.

    Raises :class:`EnvelopeError` (``not-serializable`` or ``too-deep``) if the
    value cannot be represented or nests deeper than ``max_depth``.
    """
    prepared = obj
    try:
        try:
            s = _ENC_UTF8.encode(obj)
            slow = _TAG_TOKENS[0] in s or _TAG_TOKENS[1] in s
        except TypeError:  # bytes (or something really unserialisable)
            slow = True
        if slow:
            prepared = _prepare(obj)
            s = _ENC_UTF8.encode(prepared)
        if s.count("[") + s.count("{") > max_depth and depth(prepared) > max_depth:
            raise EnvelopeError("too-deep", f"nesting deeper than {max_depth}")
        return _to_bytes(s, prepared)
    except RecursionError:
        raise EnvelopeError("too-deep", "value nested too deeply to encode") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError("not-serializable", str(exc)) from None


# --------------------------------------------------------------------------
# decoding


def depth(obj: Any) -> int:
    """Nesting depth of a JSON-like value (scalars 0, ``[]``/``{}`` 1).

    Iterative, level by level, so it cannot hit the recursion limit.
    """
    level = [obj] if isinstance(obj, (dict, list, tuple)) else []
    d = 0
    while level:
        d += 1
        nxt = []
        for o in level:
            for x in o.values() if isinstance(o, dict) else o:
                if isinstance(x, (dict, list, tuple)):
                    nxt.append(x)
        level = nxt
    return d


def _json_depth_exceeds(obj: Any, max_depth: int) -> bool:
    """Fast variant of :func:`depth` for freshly parsed JSON (exact dict/list)."""
    level = [obj] if type(obj) is dict or type(obj) is list else []
    d = 0
    while level:
        d += 1
        if d > max_depth:
            return True
        level = [
            x
            for o in level
            for x in (o.values() if type(o) is dict else o)
            if type(x) is dict or type(x) is list
        ]
    return False


def loads(data: bytes | bytearray | memoryview, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse bounded, strict UTF-8 JSON.  Only ever raises :class:`EnvelopeError`.

    Checks, in order: input type (``not-bytes``), size (``too-large``), UTF-8
    and JSON syntax incl. NaN/Infinity, floats overflowing to infinity and
    integers over Python's digit limit (``not-json``), nesting depth (``too-deep``).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError("not-bytes", f"expected bytes, got {type(data).__name__}")
    try:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
    except (ValueError, TypeError):  # pragma: no cover - released or exotic memoryview
        raise EnvelopeError("not-bytes", "unreadable buffer") from None
    if size > max_bytes:
        raise EnvelopeError("too-large", f"{size} bytes > limit {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except (UnicodeDecodeError, ValueError, TypeError):
        raise EnvelopeError("not-json", "body is not valid UTF-8") from None
    try:
        obj = _DEC.decode(text)
    except RecursionError:
        raise EnvelopeError("too-deep", "nesting too deep for the parser") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, int digit limit, NaN
        raise EnvelopeError("not-json", str(exc)[:200]) from None
    # Cheap bound first: depth can't exceed the number of opening brackets.
    if text.count("[") + text.count("{") > max_depth and _json_depth_exceeds(obj, max_depth):
        raise EnvelopeError("too-deep", f"nesting deeper than {max_depth}")
    return obj


def needs_restore(data: bytes | bytearray | memoryview) -> bool:
    """Whether the raw document contains tag tokens (so :func:`restore` is needed)."""
    raw = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    return _TAG_TOKENS_B[0] in raw or _TAG_TOKENS_B[1] in raw


def restore(obj: Any) -> Any:
    """Undo :func:`dumps` tagging: ``{"_b64": s}`` -> bytes, ``{"_esc": d}`` -> d.

    Must only be called on depth-checked values (it recurses).  Raises
    :class:`EnvelopeError` ``bad-tag`` for malformed tags.
    """
    t = type(obj)
    if t is dict:
        if len(obj) == 1:
            ((k, v),) = obj.items()
            if k == TAG_B64:
                if type(v) is not str:
                    raise EnvelopeError("bad-tag", "_b64 value must be a string")
                try:
                    return base64.b64decode(v.encode("ascii"), validate=True)
                except (binascii.Error, ValueError, UnicodeEncodeError):
                    raise EnvelopeError("bad-tag", "_b64 value is not valid base64") from None
            if k == TAG_ESC:
                if type(v) is not dict:
                    raise EnvelopeError("bad-tag", "_esc value must be an object")
                return {k2: restore(v2) for k2, v2 in v.items()}
        return {k: restore(v) for k, v in obj.items()}
    if t is list:
        return [restore(v) for v in obj]
    return obj
