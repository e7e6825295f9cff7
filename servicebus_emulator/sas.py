"""Shared access signature verification.

A token reads ``SharedAccessSignature sr=<url-encoded uri>&sig=<base64 HMAC-SHA256>&se=<expiry>
&skn=<key name>``; the signature is computed over ``"<url-encoded uri>\\n<expiry>"`` with the
policy's key. A namespace-level policy covers every entity; a topic-level policy covers that
topic and what lies under it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus

from .config import PolicyConfig
from .errors import Unauthorized


@dataclass(frozen=True)
class Grant:
    """What one verified token allows."""

    rights: frozenset[str]
    scope: tuple[str, ...]  # entity path parts (lower-case) the token's uri covers; () = namespace
    expires_at: float
    key_name: str

    def covers(self, parts: list[str], right: str, now: float | None = None) -> bool:
        if (now if now is not None else time.time()) >= self.expires_at:
            return False
        lowered = tuple(p.lower() for p in parts)
        return right in self.rights and lowered[: len(self.scope)] == self.scope


def _scope_of(uri: str) -> tuple[str, ...]:
    text = uri.split("://", 1)[-1]
    path = text.split("/", 1)[1] if "/" in text else ""
    return tuple(p.lower() for p in path.split("/") if p)


def verify_token(
    token: str,
    namespace_policies: list[PolicyConfig],
    entity_policies: dict[str, list[PolicyConfig]],
    now: float | None = None,
) -> Grant:
    """Check a SAS token; raise Unauthorized with a reason the SDK user can act on."""
    now = time.time() if now is None else now
    prefix = "SharedAccessSignature "
    if not isinstance(token, str) or not token.startswith(prefix):
        raise Unauthorized("InvalidSignature: the token is not a SharedAccessSignature token.")
    try:
        fields = dict(parse_qsl(token[len(prefix):], keep_blank_values=True, strict_parsing=True))
        uri, sig, expiry, key_name = fields["sr"], fields["sig"], int(fields["se"]), fields["skn"]
    except (KeyError, ValueError) as exc:
        raise Unauthorized("InvalidSignature: the token lacks sr, sig, se or skn.") from exc
    if expiry <= now:
        raise Unauthorized(f"ExpiredToken: the token expired at {expiry} (now {int(now)}).")
    scope = _scope_of(uri)
    candidates = [p for p in namespace_policies if p.name == key_name]
    if scope:
        candidates += [p for p in entity_policies.get(scope[0], []) if p.name == key_name]
    if not candidates:
        raise Unauthorized(f"InvalidSignature: the key name {key_name!r} is not known for {uri}.")
    signed = f"{quote_plus(uri)}\n{expiry}".encode()
    for policy in candidates:
        expected = base64.b64encode(hmac.new(policy.key.encode(), signed, hashlib.sha256).digest()).decode()
        if hmac.compare_digest(expected, sig):
            is_entity_policy = policy not in namespace_policies
            if is_entity_policy and not scope:
                raise Unauthorized(f"InvalidSignature: {key_name!r} is an entity-level key; it cannot sign {uri}.")
            return Grant(policy.rights, scope, float(expiry), key_name)
    raise Unauthorized(f"InvalidSignature: the signature of the token for {key_name!r} does not match.")
