"""Access tokens as Web PubSub checks them: HS256 JWTs signed with the hub's access key.

Two kinds, both made by ``azure-messaging-webpubsubservice`` with the key of the connection
string (the key string itself is the HMAC secret):

* REST calls carry ``Authorization: Bearer <jwt>`` whose ``aud`` is the request URL as the SDK
  built it, ``exp`` one minute ahead. The SDK percent-encodes a group name (``chat:room`` ->
  ``chat%3Aroom``) and its HTTP client may send the character unencoded, so the URLs are compared
  decoded: scheme, host, port, path and query must match;
* clients connect with ``?access_token=<jwt>`` from ``get_client_access_token``: ``aud`` is
  ``<endpoint>/client/hubs/<hub>``, ``sub`` the user id, ``role`` a list of permissions and
  ``webpubsub.group`` the groups joined on connect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from yarl import URL

__all__ = ["ClientGrant", "TokenError", "client_grant", "verify_rest_token", "can_join_leave", "can_send_to"]

#: clock skew allowed on ``exp`` / ``nbf`` / ``iat``
LEEWAY_SECONDS = 5
MAX_TOKEN_CHARS = 8192


class TokenError(ValueError):
    """A token the service refuses (the message says why; it is sent back to the caller)."""


@dataclass(frozen=True)
class ClientGrant:
    user_id: str | None
    roles: frozenset[str]
    groups: tuple[str, ...]


def _canonical(url: str) -> tuple[str, str, int | None, str, tuple[tuple[str, str], ...]]:
    u = URL(url)
    return (u.scheme.lower(), (u.host or "").lower(), u.port, u.path.rstrip("/"), tuple(sorted(u.query.items())))


def _decode(token: str, key: str, audiences: Iterable[str]) -> dict[str, object]:
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("missing or oversized access token")
    try:
        claims: dict[str, object] = jwt.decode(
            token, key, algorithms=["HS256"], leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "aud"], "verify_aud": False},
        )
        aud = claims["aud"]
        wanted = {_canonical(a) for a in audiences}
        if not any(isinstance(a, str) and _canonical(a) in wanted for a in (aud if isinstance(aud, list) else [aud])):
            raise jwt.InvalidAudienceError("audience mismatch")
    except jwt.ExpiredSignatureError:
        raise TokenError("access token expired") from None
    except jwt.InvalidAudienceError:
        raise TokenError("access token audience does not match this URL") from None
    except jwt.InvalidSignatureError:
        raise TokenError("access token signature does not match the access key") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid access token: {exc}") from None
    return claims


def verify_rest_token(authorization: str | None, key: str, url: str) -> None:
    """Check a data-plane call's bearer token; ``url`` is the full request URL (with query)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("missing bearer token")
    _decode(token.strip(), key, [url])


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TokenError("role and webpubsub.group claims must be strings or lists of strings")


def client_grant(token: str, key: str, audiences: Iterable[str]) -> ClientGrant:
    """The permissions of a client token (``audiences``: the client URLs it may name)."""
    claims = _decode(token, key, audiences)
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenError("sub must be a string")
    return ClientGrant(
        user_id=sub or None,
        roles=frozenset(_strings(claims.get("role"))),
        groups=tuple(dict.fromkeys(_strings(claims.get("webpubsub.group")))),
    )


def can_join_leave(grant_roles: frozenset[str], group: str) -> bool:
    return "webpubsub.joinLeaveGroup" in grant_roles or f"webpubsub.joinLeaveGroup.{group}" in grant_roles


def can_send_to(grant_roles: frozenset[str], group: str) -> bool:
    return "webpubsub.sendToGroup" in grant_roles or f"webpubsub.sendToGroup.{group}" in grant_roles
