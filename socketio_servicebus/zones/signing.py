"""Proof of origin for Service Bus messages: Ed25519 signatures per trust zone (pure, no I/O).

Service Bus authenticates the *key* that sent a message but stamps nothing on it, so
``origin_node`` in an envelope is only a claim. Here every message carries, in its application
properties:

* ``sio_zone``: the trust zone that signs for the origin (``cloud``, ``factory1``, ...);
* ``sio_kid``: which of the zone's keys (:func:`key_id` of the public key: rotation by ``kid``);
* ``sio_sig``: base64url Ed25519 signature over::

      b"sio-bus-sig-v1\\0" + zone + b"\\0" + kid + b"\\0" + <envelopes part of the body>

The *envelopes part* is the body from ``"envelopes":[`` to its end: every envelope with its
``origin_node``, ``origin_region``, kind, namespace, target, persist flag and body. What the
router changes on a forward (``hops``, ``visited``) is the canonical prefix before it and is not
signed, so the router forwards the signed bytes unchanged (:func:`forward_body`) and a site's
message stays attributable to that site in every region. A body whose prefix is not the canonical
one for its own ``hops``/``visited`` is refused (``noncanonical``), so the unsigned part can never
change what the envelopes say. Wire details: ``docs/wire-format.md``; threat model:
``docs/security.md``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from socketio_servicebus.wire.envelope import assemble_batch

__all__ = [
    "PROP_SIG",
    "PROP_ZONE",
    "PROP_KID",
    "ZoneKeyError",
    "ZoneKey",
    "PublicKey",
    "key_id",
    "signed_part",
    "forward_body",
    "signing_input",
    "verify_signature",
    "b64",
    "unb64",
]

PROP_SIG = "sio_sig"
PROP_ZONE = "sio_zone"
PROP_KID = "sio_kid"
_DOMAIN = b"sio-bus-sig-v1\x00"
_SIG_BYTES = 64
_KEY_BYTES = 32


class ZoneKeyError(ValueError):
    """A zone key that cannot be used (wrong length, not base64, ...); never shows the key."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ZoneKeyError("not base64url") from None


def key_id(public_raw: bytes) -> str:
    """A short public id of a zone public key (first 48 bits of a domain-separated SHA-256)."""
    return hashlib.sha256(b"sio-zone-kid\x00" + public_raw).hexdigest()[:12]


@functools.lru_cache(maxsize=256)
def _prefix_of(hops: int, visited: tuple[str, ...]) -> bytes:
    # assemble_batch of no envelopes is prefix + b"]}": the same bytes every sender writes
    return assemble_batch([], hops=hops, visited=visited)[:-2]


def _prefix(hops: int, visited: Sequence[str]) -> bytes:
    return _prefix_of(hops, tuple(visited))


def signed_part(body: bytes, hops: int, visited: Sequence[str]) -> bytes | None:
    """The signed bytes of ``body`` (``None`` if its prefix is not the canonical one)."""
    prefix = _prefix(hops, visited)
    if not body.startswith(prefix):
        return None
    return body[len(prefix):]


def forward_body(body: bytes, hops: int, visited: Sequence[str], new_hops: int,
                 new_visited: Sequence[str]) -> bytes | None:
    """``body`` with the routing prefix replaced, the signed part kept byte for byte."""
    part = signed_part(body, hops, visited)
    return None if part is None else _prefix(new_hops, new_visited) + part


def signing_input(zone: str, kid: str, part: bytes) -> bytes:
    return b"".join((_DOMAIN, zone.encode("utf-8"), b"\x00", kid.encode("ascii", "replace"), b"\x00", part))


@dataclass(frozen=True)
class PublicKey:
    zone: str
    raw: bytes = field(repr=False)
    kid: str = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _KEY_BYTES:
            raise ZoneKeyError(f"zone {self.zone!r}: a public key is {_KEY_BYTES} bytes, got {len(self.raw)}")
        object.__setattr__(self, "kid", key_id(self.raw))
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.raw))

    @classmethod
    def from_text(cls, zone: str, text: str) -> PublicKey:
        return cls(zone, unb64(text))

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def text(self) -> str:
        return b64(self.raw)


@dataclass(frozen=True)
class ZoneKey:
    """A zone's private key (Ed25519 seed), as held by the signers of that zone."""

    zone: str
    _private: Ed25519PrivateKey = field(repr=False)
    public: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        raw = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        object.__setattr__(self, "public", PublicKey(self.zone, raw))

    @classmethod
    def generate(cls, zone: str) -> ZoneKey:
        return cls(zone, Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, zone: str, text: str) -> ZoneKey:
        """From the base64url 32-byte seed (what ``SIO_ZONE_KEY`` holds)."""
        seed = unb64(text)
        if len(seed) != _KEY_BYTES:
            raise ZoneKeyError(f"zone {zone!r}: a private key is a {_KEY_BYTES}-byte seed, got {len(seed)} bytes")
        return cls(zone, Ed25519PrivateKey.from_private_bytes(seed))

    def text(self) -> str:
        return b64(self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, body: bytes, hops: int = 0, visited: Sequence[str] = ()) -> dict[str, str]:
        """The application properties that prove ``body`` comes from this zone."""
        part = signed_part(body, hops, visited)
        if part is None:
            raise ValueError("not a canonical batch body")
        sig = self._private.sign(signing_input(self.zone, self.kid, part))
        return {PROP_ZONE: self.zone, PROP_KID: self.kid, PROP_SIG: b64(sig)}


def verify_signature(keys: Mapping[str, PublicKey], props: Mapping[str, Any], body: bytes, hops: int,
                     visited: Sequence[str]) -> tuple[str | None, str]:
    """``(zone, "")`` when ``props`` carry a valid signature by a key in ``keys`` (kid -> key) for
    the zone they name, else ``(None, reason)``: ``unsigned``, ``unknown-kid``, ``zone-mismatch``
    (the kid is another zone's key), ``bad-signature``, ``noncanonical``."""
    zone, kid, sig = props.get(PROP_ZONE), props.get(PROP_KID), props.get(PROP_SIG)
    if not isinstance(zone, str) or not isinstance(kid, str) or not isinstance(sig, str):
        return None, "unsigned"
    key = keys.get(kid)
    if key is None:
        return None, "unknown-kid"
    if key.zone != zone:
        return None, "zone-mismatch"
    try:
        raw_sig = unb64(sig)
    except ZoneKeyError:
        return None, "bad-signature"
    if len(raw_sig) != _SIG_BYTES:
        return None, "bad-signature"
    part = signed_part(body, hops, visited)
    if part is None:
        return None, "noncanonical"
    if not key.verify(raw_sig, signing_input(zone, kid, part)):
        return None, "bad-signature"
    return zone, ""
