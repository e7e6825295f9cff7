"""Sign on send, verify and police on receive: the one object senders and receivers hold (pure).

Relay nodes (manager), write-only emitters and the Functions (router, persist, webpubsub, emit)
all use a :class:`BusGuard` built from :func:`~socketio_servicebus.zones.config.load_zones`::

    guard = BusGuard(zones)
    props.update(guard.sign(batch, body))                 # sender
    sender, verdict = guard.check_message(body, props, batch)   # receiver: proof of origin
    verdict = guard.police(sender, env)                   # receiver: per envelope policy

Refusals are counted per reason in :attr:`BusGuard.dropped` (``forged_dropped{reason=...}``)
and the caller logs them with :func:`claimed_origin`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from socketio_servicebus.topology import (
    PROP_HOPS,
    PROP_KIND,
    PROP_NAMESPACE,
    PROP_ORIGIN_NODE,
    PROP_ORIGIN_REGION,
    PROP_PERSIST,
    PROP_TARGET_NODE,
    PROP_TARGET_REGION,
    PROP_VISITED,
)
from socketio_servicebus.wire.envelope import Batch, Envelope
from socketio_servicebus.zones.config import Zone, ZoneSet
from socketio_servicebus.zones.policy import Reason, Verdict, police
from socketio_servicebus.zones.signing import PROP_KID, PROP_ZONE, verify_signature

__all__ = ["BusGuard", "claimed_origin", "props_match"]


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def _same(got: Any, want: Any) -> bool:
    got = _text(got)
    if isinstance(want, bool):  # the Functions host may hand booleans over as "True"/"true"
        return got is want or (isinstance(got, str) and got.lower() == ("true" if want else "false"))
    if isinstance(want, int):
        return (type(got) is int and got == want) or (isinstance(got, str) and got == str(want))
    return bool(got == want)


def props_match(props: Mapping[str, Any], batch: Batch) -> str | None:
    """``None`` when the filter properties say what the body says; else the first property that
    differs (a message steered to a subscription its body does not belong in)."""
    e = batch.envelopes[0]
    visited = ",".join(batch.visited) if batch.visited else None
    for key, want in ((PROP_ORIGIN_NODE, e.origin_node), (PROP_KIND, e.kind.value), (PROP_PERSIST, e.persist),
                      (PROP_HOPS, batch.hops), (PROP_NAMESPACE, e.ns), (PROP_ORIGIN_REGION, e.origin_region),
                      (PROP_TARGET_NODE, e.target_node), (PROP_TARGET_REGION, e.target_region),
                      (PROP_VISITED, visited)):
        got = props.get(key)
        if want is None:
            if got not in (None, "", b""):
                return key
        elif not _same(got, want):
            return key
    return None


def claimed_origin(props: Mapping[str, Any], batch: Batch | None = None) -> str:
    """``node X (region R) zone Z kid K`` as claimed, for logs (never a key or signature)."""
    node: Any = props.get(PROP_ORIGIN_NODE)
    region: Any = props.get(PROP_ORIGIN_REGION)
    if batch is not None:
        node, region = batch.envelopes[0].origin_node, batch.envelopes[0].origin_region
    return (f"node {str(node)[:80]!r} (region {str(region)[:40]!r}) zone {str(props.get(PROP_ZONE))[:40]!r} "
            f"kid {str(props.get(PROP_KID))[:16]!r}")


class BusGuard:
    def __init__(self, zones: ZoneSet, dropped: Counter[str] | None = None) -> None:
        self.zones = zones
        #: refusals by reason (a manager passes its metrics' ``forged_dropped``)
        self.dropped: Counter[str] = Counter() if dropped is None else dropped

    @property
    def local(self) -> Zone:
        return self.zones.local

    @property
    def can_sign(self) -> bool:
        return self.zones.signer is not None

    def sign(self, batch: Batch, body: bytes) -> dict[str, str]:
        """Application properties proving ``body`` (the encoding of ``batch``) comes from this zone."""
        if self.zones.signer is None:
            raise RuntimeError(f"zone {self.zones.local_zone!r}: no private key (SIO_ZONE_KEY) to sign with")
        return self.zones.signer.sign(body, batch.hops, batch.visited)

    def check_message(self, body: bytes, props: Mapping[str, Any], batch: Batch) -> tuple[Zone | None, Verdict]:
        """Proof of origin of one message: ``(signing zone, ACCEPT)`` or ``(None, refusal)``."""
        zone_name, why = verify_signature(self.zones.by_kid, props, body, batch.hops, batch.visited)
        if zone_name is None:
            return None, Verdict.refuse(Reason(why))
        zone = self.zones.zone(zone_name)
        if zone is None:  # pragma: no cover - by_kid only holds keys of known zones
            return None, Verdict.refuse(Reason.UNKNOWN_KID)
        differs = props_match(props, batch)
        if differs is not None:
            return None, Verdict.refuse(Reason.PROPS_MISMATCH, f"property {differs} differs from the body")
        return zone, Verdict(True)

    def police(self, sender: Zone, env: Envelope, receiver: Zone | None = None) -> Verdict:
        return police(sender, receiver or self.zones.local, env)

    def count(self, verdict: Verdict, n: int = 1) -> None:
        if verdict.reason is not None:
            self.dropped[verdict.reason.value] += n
