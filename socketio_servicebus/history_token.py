"""History tokens: short-lived, room-scoped bearer tokens for the Functions history API (pure, stdlib).

A relay node mints one for a socket that is in the room (``relay:history_token``); the page sends
it as ``Authorization: Bearer <token>`` to ``GET /api/history``, and the Function App verifies it
with the same shared key (app setting ``SIO_HISTORY_TOKEN_KEY``). Threat model and rotation:
``docs/security.md``.

The format is a compact JWS/JWT with HS256 (RFC 7515/7519), so any JWT library can verify or
mint one with the key; it is written here with ``hmac``/``hashlib`` so that the Function App needs
no JWT dependency. Header ``{"alg": "HS256", "typ": "JWT", "kid": <key id>}``; claims:

* ``aud`` = ``"sio-history"`` (a token for anything else signed with the same key is refused),
* ``ns``, ``room``: the only namespace/room it opens,
* ``since``: the history API serves nothing older than this (seconds since the epoch): the time
  the socket joined the room, or ``0`` when the node's ``authorize_room`` hook granted the whole
  history (``"read-history"``); a token without it is refused,
* ``sub`` (the user from the connection's claims, if any), ``sid`` (the socket it was minted
  for), ``iss`` (the minting node): for audit logs; the API does not check them against anything,
* ``iat``, ``exp`` (required; lifetime at most :data:`MAX_TTL`), ``jti``.

``kid`` is derived from the key (:func:`key_id`), so rotation needs no second setting: the
verifier holds the current and the previous key and picks by ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from socketio_servicebus.errors import KeyConfigError, TokenError

__all__ = [
    "AUDIENCE",
    "DEFAULT_TTL",
    "MAX_TTL",
    "MIN_KEY_CHARS",
    "LEEWAY",
    "HistoryClaims",
    "HistoryKeys",
    "KeyConfigError",
    "TokenError",
    "key_id",
    "mint",
    "verify",
]

AUDIENCE = "sio-history"
#: Default lifetime of a token, seconds: long enough to page through a gap after a reconnect.
DEFAULT_TTL = 300
#: Longest lifetime a verifier accepts (``exp - iat``), seconds.
MAX_TTL = 3600
#: Clock skew tolerated between the minting node and the Function App, seconds.
LEEWAY = 30
#: A shared key shorter than this is a configuration error (HS256 wants >= 256 bits of key).
MIN_KEY_CHARS = 32
MAX_TOKEN_CHARS = 4096
_MAX_FIELD_CHARS = 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class HistoryClaims:
    ns: str
    room: str
    exp: int
    iat: int
    sub: str | None = None
    sid: str | None = None
    iss: str | None = None
    kid: str | None = None
    #: oldest event time the token opens (seconds since the epoch); ``0`` = the whole history
    since: float = 0.0
    #: room prefixes the signing key may open (a site's scoped key); ``None`` = any room
    scope: tuple[str, ...] | None = None

    @property
    def whole_history(self) -> bool:
        return self.since <= 0

    def covers(self, ns: str, room: str | None) -> bool:
        return (self.ns == ns and room is not None and self.room == room
                and (self.scope is None or any(room.startswith(p) for p in self.scope)))


def key_id(key: str) -> str:
    """A short public id of ``key`` (the first 48 bits of a domain-separated SHA-256)."""
    return hashlib.sha256(b"sio-history-kid\x00" + key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class HistoryKeys:
    """The keys a verifier accepts: the current one and, during a rotation, the previous one."""

    current: str | None = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    #: site keys, each confined to room prefixes: ``((key, ("chat:factory1",)), ...)``
    scoped: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), repr=False)

    @classmethod
    def from_settings(cls, current: str | None, previous: str | None = None, *,
                      names: tuple[str, str] = ("SIO_HISTORY_TOKEN_KEY", "SIO_HISTORY_TOKEN_KEY_PREVIOUS"),
                      ) -> HistoryKeys:
        """Raises :class:`KeyConfigError` for a key shorter than :data:`MIN_KEY_CHARS` (never shows it)."""
        current = (current or "").strip() or None
        previous = (previous or "").strip() or None
        for name, value in zip(names, (current, previous), strict=True):
            if value is not None and len(value) < MIN_KEY_CHARS:
                raise KeyConfigError(
                    f"{name} is {len(value)} characters long; use at least {MIN_KEY_CHARS} random characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        return cls(current, previous)

    @property
    def configured(self) -> bool:
        return self.current is not None

    def by_kid(self) -> dict[str, str]:
        out = {key_id(k): k for k, _ in self.scoped}
        out.update({key_id(k): k for k in (self.previous, self.current) if k is not None})
        return out

    def scope(self, kid: str | None) -> tuple[str, ...] | None:
        """The room prefixes of a scoped key's ``kid``; ``None`` for the unscoped keys."""
        if kid is None or kid in {key_id(k) for k in (self.previous, self.current) if k is not None}:
            return None
        for k, prefixes in self.scoped:
            if key_id(k) == kid:
                return prefixes
        return None

    def with_scoped(self, text: str | None, *, name: str = "SIO_HISTORY_TOKEN_SCOPED_KEYS") -> HistoryKeys:
        """These keys plus site keys from ``text``: JSON ``[{"key": "...", "rooms": ["chat:factory1"]}]``.

        Raises :class:`KeyConfigError` (naming ``name``, never a key) for a document that cannot be used.
        """
        if not (text or "").strip():
            return self
        try:
            doc = json.loads(str(text))
        except ValueError:
            raise KeyConfigError(f"{name} is not valid JSON") from None
        scoped: list[tuple[str, tuple[str, ...]]] = []
        for i, item in enumerate(doc if isinstance(doc, list) else [None]):
            key = item.get("key") if isinstance(item, dict) else None
            rooms = item.get("rooms") if isinstance(item, dict) else None
            if (not isinstance(key, str) or not isinstance(rooms, list) or not rooms
                    or not all(isinstance(r, str) and r for r in rooms)):
                raise KeyConfigError(f'{name} entry #{i}: want {{"key": "<secret>", "rooms": ["<prefix>", ...]}}')
            if len(key.strip()) < MIN_KEY_CHARS:
                raise KeyConfigError(f"{name} entry #{i}: the key is {len(key.strip())} characters long; "
                                     f"use at least {MIN_KEY_CHARS}")
            scoped.append((key.strip(), tuple(rooms)))
        return HistoryKeys(self.current, self.previous, (*self.scoped, *scoped))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1 or not _B64URL.match(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # non-canonical (stray low bits in the last character): not what a signer wrote
        raise ValueError("not canonical base64url")
    return data


def _checked_key(key: object) -> str:
    """``key`` if it is a ``str`` of at least :data:`MIN_KEY_CHARS`; raises :class:`KeyConfigError`."""
    if not isinstance(key, str):
        raise KeyConfigError(f"a history token key must be a str, not {type(key).__name__}")
    if len(key) < MIN_KEY_CHARS:
        raise KeyConfigError(f"a history token key is {len(key)} characters long; use at least {MIN_KEY_CHARS}")
    return key


def _sign(key: str, signing_input: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), signing_input, hashlib.sha256).digest()


def mint(
    key: str,
    *,
    ns: str,
    room: str,
    since: float,
    sub: str | None = None,
    sid: str | None = None,
    issuer: str | None = None,
    ttl: float = DEFAULT_TTL,
    now: float | None = None,
) -> str:
    """A token for ``room`` in ``ns``, valid for ``ttl`` seconds from ``now``, opening the events
    from ``since`` on (``0`` = the whole history: grant it only when the app says so)."""
    _checked_key(key)
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since < float("inf"):
        raise ValueError("since must be a time (seconds since the epoch) or 0 for the whole history")
    if not ns.startswith("/") or not room:
        raise ValueError("ns must start with '/' and room must not be empty")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be in (0, {MAX_TTL}] seconds")
    iat = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT", "kid": key_id(key)}
    claims: dict[str, Any] = {"aud": AUDIENCE, "ns": ns, "room": room, "iat": iat, "exp": iat + int(ttl),
                              "since": round(float(since), 3), "jti": os.urandom(9).hex()}
    for name, value in (("sub", sub), ("sid", sid), ("iss", issuer)):
        if value:
            claims[name] = str(value)[:_MAX_FIELD_CHARS]
    signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()))
    return signing_input + "." + _b64(_sign(key, signing_input.encode("ascii")))


def _invalid(reason: str) -> TokenError:
    return TokenError(401, reason)


def verify(token: str | None, keys: HistoryKeys | Sequence[str], *, now: float | None = None,
           leeway: float = LEEWAY) -> HistoryClaims:
    """The claims of a valid token; raises :class:`TokenError` (401) otherwise.

    Checks, in order: shape, header (``alg`` HS256 only, a known ``kid``), signature (constant
    time), then the claims (``aud``, ``exp`` with ``leeway``, ``iat`` not in the future, lifetime
    at most :data:`MAX_TTL`, ``ns``/``room`` strings). Whether the token covers the requested room is
    :meth:`HistoryClaims.covers` (403 when not).

    ``keys`` is a :class:`HistoryKeys` or a sequence of ``str`` keys, each of at least
    :data:`MIN_KEY_CHARS`; a bare ``str`` (which would iterate as one-character keys) or a short
    key raises :class:`KeyConfigError`: a caller's mistake, not a refused token.
    """
    if isinstance(keys, (str, bytes, bytearray)):
        raise KeyConfigError("verify() takes HistoryKeys or a list of keys, not one str (it would iterate "
                             "as one-character keys)")
    if not isinstance(keys, HistoryKeys):
        keys = [_checked_key(k) for k in keys]
    if not token:
        raise _invalid("a history token is required: Authorization: Bearer <token>")
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid("token too long")
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
        raise _invalid("malformed token")
    try:
        header = json.loads(_unb64(parts[0]))
    except ValueError:
        raise _invalid("malformed token header") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise _invalid("token algorithm must be HS256")
    by_kid = keys.by_kid() if isinstance(keys, HistoryKeys) else {key_id(k): k for k in keys}
    kid = header.get("kid")
    candidates = [by_kid[kid]] if isinstance(kid, str) and kid in by_kid else []
    if not candidates:
        raise _invalid("token signed with an unknown key (kid)")
    try:
        signature = _unb64(parts[2])
    except ValueError:
        raise _invalid("malformed token signature") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(hmac.compare_digest(_sign(k, signing_input), signature) for k in candidates):
        raise _invalid("bad token signature")
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        raise _invalid("malformed token claims") from None
    if not isinstance(claims, dict):
        raise _invalid("malformed token claims")
    if claims.get("aud") != AUDIENCE:
        raise _invalid(f"token audience is not {AUDIENCE!r}")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or isinstance(exp, bool) or not isinstance(iat, int) or isinstance(iat, bool):
        raise _invalid("token needs integer 'exp' and 'iat' claims")
    t = time.time() if now is None else now
    if exp + leeway <= t:
        raise _invalid("token expired")
    if iat - leeway > t:
        raise _invalid("token issued in the future")
    if exp - iat > MAX_TTL:
        raise _invalid(f"token lifetime over {MAX_TTL} s")
    ns, room = claims.get("ns"), claims.get("room")
    if not isinstance(ns, str) or not isinstance(room, str) or not ns.startswith("/") or not room:
        raise _invalid("token needs 'ns' and 'room' claims")

    since = claims.get("since")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since < float("inf"):
        raise _invalid("token needs a 'since' claim")

    def opt(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) else None

    return HistoryClaims(ns=ns, room=room, exp=exp, iat=iat, sub=opt("sub"), sid=opt("sid"), iss=opt("iss"),
                         kid=kid if isinstance(kid, str) else None, since=float(since),
                         scope=keys.scope(kid) if isinstance(keys, HistoryKeys) else None)
