"""Access tokens as Web PubSub checks them: HS256 JWTs signed with the hub's access key.

Two kinds, both made by ``azure-messaging-webpubsubservice`` with the key of the connection
string (the key string itself is the HMAC secret):

* REST calls carry ``Authorization: Bearer <jwt>`` whose ``aud`` is the request URL exactly as
  the SDK built it (scheme, host, path, query), ``exp`` one minute ahead;
* clients connect with ``?access_token=<jwt>`` from ``get_client_access_token``: ``aud`` is
  ``<endpoint>/client/hubs/<hub>``, ``sub`` the user id, ``role`` a list of permissions and
  ``webpubsub.group`` the groups joined on connect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import jwt

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


def _decode(token: str, key: str, audiences: Iterable[str]) -> dict[str, object]:
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("missing or oversized access token")
    try:
        claims: dict[str, object] = jwt.decode(
            token, key, algorithms=["HS256"], audience=list(audiences), leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "aud"]},
        )
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
