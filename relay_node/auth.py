"""Connection authorization: a JWT in ``auth={"token": ...}`` and/or an app callback.

:class:`Authorizer` is called for every socket.io ``connect`` before the apps' own connect
handlers. It either returns the claims to keep for the connection (``{}`` when auth is off) or
raises :class:`socketio.exceptions.ConnectionRefusedError` with ``unauthorized: <reason>``; the
client receives that as a ``connect_error``. Nothing is accepted by default once auth is on.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from socketio.exceptions import ConnectionRefusedError  # type: ignore[import-untyped]

from .config import RelayConfig
from .loading import load_ref

log = logging.getLogger("relay_node.auth")

Callback = Callable[[dict[str, Any], Any], "Awaitable[bool | dict[str, Any]] | bool | dict[str, Any]"]
MAX_TOKEN_CHARS = 8192


def refuse(reason: str) -> ConnectionRefusedError:
    return ConnectionRefusedError(f"unauthorized: {reason}")


def token_from(environ: dict[str, Any], auth: Any) -> str | None:
    """The JWT from ``auth.token``, else from an ``Authorization: Bearer`` header."""
    if isinstance(auth, dict) and auth.get("token") is not None:
        token = auth["token"]
        return token if isinstance(token, str) else None
    header = environ.get("HTTP_AUTHORIZATION") or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


class Authorizer:
    def __init__(
        self,
        *,
        jwt_key: str | None = None,
        jwt_public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        callback: Callback | None = None,
        leeway: float = 0.0,
    ):
        self.keys: list[tuple[str, str]] = []
        if jwt_key:
            self.keys.append(("HS256", jwt_key))
        if jwt_public_key:
            self.keys.append(("RS256", jwt_public_key))
        self.audience = audience
        self.issuer = issuer
        self.callback = callback
        self.leeway = leeway
        self.refused = 0
        self.accepted = 0

    @classmethod
    def from_config(cls, cfg: RelayConfig) -> Authorizer:
        return cls(
            jwt_key=cfg.auth_jwt_key,
            jwt_public_key=cfg.auth_jwt_public_key,
            audience=cfg.auth_jwt_audience,
            issuer=cfg.auth_jwt_issuer,
            callback=load_ref(cfg.auth_callback, "--auth-callback") if cfg.auth_callback else None,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.callback)

    def verify_jwt(self, token: str | None) -> dict[str, Any]:
        if not token:
            raise refuse("a token is required: connect with auth={token: <JWT>}")
        if len(token) > MAX_TOKEN_CHARS:
            raise refuse("token too long")
        # tokens must expire: a leaked never-expiring token would be valid forever
        options: Any = {"require": ["exp"]}
        last: Exception | None = None
        for alg, key in self.keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                    leeway=self.leeway, options=options,
                )
                return dict(claims)
            except jwt.ExpiredSignatureError:
                raise refuse("token expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise refuse(f"token has no {exc.claim!r} claim") from None
            except jwt.InvalidTokenError as exc:
                last = exc
        raise refuse(f"invalid token ({type(last).__name__ if last else 'no key'})")

    async def __call__(self, environ: dict[str, Any], auth: Any) -> dict[str, Any]:
        try:
            claims = await self._check(environ, auth)
        except ConnectionRefusedError:
            self.refused += 1
            raise
        self.accepted += 1
        return claims

    async def _check(self, environ: dict[str, Any], auth: Any) -> dict[str, Any]:
        if not self.enabled:
            return {}
        claims: dict[str, Any] = {}
        if self.keys:
            claims = self.verify_jwt(token_from(environ, auth))
        if self.callback is not None:
            try:
                result = self.callback(environ, auth)
                if inspect.isawaitable(result):
                    result = await result
            except ConnectionRefusedError:
                raise
            except Exception:
                log.exception("auth callback failed; refusing the connection")
                raise refuse("authorization callback failed") from None
            if result is True:
                pass
            elif isinstance(result, dict):
                claims = {**claims, **result}
            else:
                raise refuse("rejected by the authorization callback")
        return claims
