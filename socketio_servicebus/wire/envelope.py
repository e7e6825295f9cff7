"""Wire format for socketio-servicebus (pure: no I/O).

One Service Bus message carries one :class:`Batch` of :class:`Envelope` s,
encoded as versioned, compact UTF-8 JSON (never pickle)::

    {"v":1,"hops":0,"visited":["eu"],"envelopes":[
      {"v":1,"id":"9f0c...","k":"emit","on":"node-a","or":"eu","ts":1732634400.5,
       "b":{"method":"emit","event":"chat","data":["hi"],...}}]}

All envelopes in a batch share :func:`batch_key` (origin node/region, kind,
namespace, persist, target node and region); ``hops`` and ``visited`` live on the batch.
That makes :func:`application_properties` (what subscription SQL rules filter
on) well defined for the whole message.  See ``docs/wire-format.md``.

Encoding entry points: :meth:`Batch.encode` / :func:`encode_batch`, or
:func:`encode_envelope` + :func:`assemble_batch` when a batcher already holds
per-envelope bytes (sizes are exact: see :func:`batch_size`).
Decoding: :meth:`Batch.decode` / :func:`decode_batch`; they raise only
:class:`EnvelopeError` for any input.
"""

from __future__ import annotations

import enum
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from socketio_servicebus.topology import (
    PROP_HOPS,
    PROP_KIND,
    PROP_NAMESPACE,
    PROP_ORIGIN_NODE,
    PROP_ORIGIN_REGION,
    PROP_PERSIST,
    PROP_ROUTE_DONE,
    PROP_TARGET_NODE,
    PROP_TARGET_REGION,
    PROP_VISITED,
)
from socketio_servicebus.wire import codec as wire
from socketio_servicebus.wire.codec import MAX_DEPTH, EnvelopeError, EnvelopeTooLarge

__all__ = [
    "VERSION",
    "MAX_DEPTH",
    "MAX_TRACEPARENT_LEN",
    "MAX_TRACESTATE_LEN",
    "MAX_BATCH_BYTES",
    "MAX_ENVELOPES",
    "SERVICEBUS_MAX_MESSAGE_BYTES",
    "DEFAULT_BATCH_BYTES",
    "BATCH_OVERHEAD",
    "ENVELOPE_SEPARATOR_BYTES",
    "Kind",
    "SOCKETIO_KINDS",
    "Envelope",
    "Batch",
    "BatchKey",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "batch_key",
    "encode_envelope",
    "envelope_size",
    "check_size",
    "batch_overhead",
    "batch_size",
    "assemble_batch",
    "encode_batch",
    "decode_batch",
    "pack_batches",
    "application_properties",
]

#: Wire format version written by this code and the only one it accepts.
VERSION = 1
#: Default decode limit on the raw message body.
MAX_BATCH_BYTES = 1024 * 1024
#: Hard cap on envelopes per batch (decode may only tighten it).
MAX_ENVELOPES = 10_000
#: Service Bus Standard tier maximum message size (headers included).
SERVICEBUS_MAX_MESSAGE_BYTES = 256 * 1024
#: Default body budget for a batch: Standard max minus 8 KiB for AMQP
#: headers and application properties.
DEFAULT_BATCH_BYTES = SERVICEBUS_MAX_MESSAGE_BYTES - 8 * 1024
#: Bytes between two encoded envelopes inside a batch (the comma).
ENVELOPE_SEPARATOR_BYTES = 1

_MAX_ID_LEN = 128
#: Longest ``traceparent`` / ``tracestate`` kept (W3C: 55 chars for version 00; tracestate
#: "SHOULD" stay within 512).  Longer values from the wire are dropped, never rejected.
MAX_TRACEPARENT_LEN = 128
MAX_TRACESTATE_LEN = 512


#: Service Bus application properties, typed as ``ServiceBusMessage`` accepts them.
AppProperties = dict[str | bytes, int | float | bytes | bool | str | uuid.UUID]

class Kind(enum.StrEnum):
    """Envelope kinds.  The first six are python-socketio pub/sub ``method`` s."""

    EMIT = "emit"
    CALLBACK = "callback"
    DISCONNECT = "disconnect"
    ENTER_ROOM = "enter_room"
    LEAVE_ROOM = "leave_room"
    CLOSE_ROOM = "close_room"
    HEARTBEAT = "heartbeat"
    REQUEST = "request"
    RESPONSE = "response"


#: Kinds whose body is a python-socketio AsyncPubSubManager message dict.
SOCKETIO_KINDS = frozenset(
    {Kind.EMIT, Kind.CALLBACK, Kind.DISCONNECT, Kind.ENTER_ROOM, Kind.LEAVE_ROOM, Kind.CLOSE_ROOM}
)
_KINDS: dict[str, Kind] = {k.value: k for k in Kind}

#: ``(origin_node, origin_region, kind, ns, persist, target_node, target_region)``
BatchKey = tuple[str, str, Kind, str, bool, str | None, str | None]


def _bad(name: str, why: str) -> EnvelopeError:
    return EnvelopeError(f"bad-field:{name}", f"{name} {why}")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One pub/sub message.  Keyword-only; ``id`` and ``ts`` are generated.

    ``body`` is the python-socketio message dict (for :data:`SOCKETIO_KINDS`)
    or a request/response/heartbeat payload.  It may contain raw ``bytes``
    (tagged on the wire, restored on decode); tuples come back as lists.
    The dataclass is frozen but ``body`` is a plain dict: don't mutate it
    after handing the envelope to a sender.
    """

    v: int = VERSION
    id: str = field(default_factory=_new_id)
    kind: Kind
    origin_node: str
    origin_region: str
    ns: str = "/"
    ts: float = field(default_factory=time.time)
    persist: bool = False
    target_node: str | None = None
    #: Region of ``target_node`` (only with a target): the router forwards the message there when
    #: it is not the region it was sent in. Absent, a targeted message stays in its region.
    target_region: str | None = None
    body: dict[str, Any] = field(hash=False)
    #: W3C trace context of the emit (``socketio_servicebus.tracing``); None when not traced.
    traceparent: str | None = field(default=None, hash=False, compare=False)
    tracestate: str | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        v = self.v
        if type(v) is not int:
            raise _bad("v", "must be an int")
        if v != VERSION:
            raise EnvelopeError("bad-version", f"envelope version {v} not supported (want {VERSION})")
        i = self.id
        if type(i) is not str or not 0 < len(i) <= _MAX_ID_LEN:
            raise _bad("id", f"must be a non-empty str of at most {_MAX_ID_LEN} chars")
        k = self.kind
        kind = _KINDS.get(k) if isinstance(k, str) else None
        if kind is None:
            raise _bad("kind", f"unknown kind {k!r}")
        if kind is not k:
            object.__setattr__(self, "kind", kind)
        n = self.origin_node
        if type(n) is not str or not n:
            raise _bad("origin_node", "must be a non-empty str")
        r = self.origin_region
        if type(r) is not str or not r or "," in r:
            raise _bad("origin_region", "must be a non-empty str without ','")
        ns = self.ns
        if type(ns) is not str or not ns.startswith("/"):
            raise _bad("ns", "must be a str starting with '/'")
        ts = self.ts
        if type(ts) is not float:
            if type(ts) is not int:
                raise _bad("ts", "must be a number")
            ts = float(ts)
            object.__setattr__(self, "ts", ts)
        if not (ts >= 0.0 and math.isfinite(ts)):
            raise _bad("ts", "must be finite and >= 0")
        if type(self.persist) is not bool:
            raise _bad("persist", "must be a bool")
        t = self.target_node
        if t is not None and (type(t) is not str or not t):
            raise _bad("target_node", "must be None or a non-empty str")
        tr = self.target_region
        if tr is not None:
            if type(tr) is not str or not tr or "," in tr:
                raise _bad("target_region", "must be None or a non-empty str without ','")
            if t is None:
                raise _bad("target_region", "is only allowed with a target_node")
        if not isinstance(self.body, dict):
            raise _bad("body", "must be a dict")
        tp = self.traceparent
        if tp is not None and (type(tp) is not str or not 0 < len(tp) <= MAX_TRACEPARENT_LEN):
            raise _bad("traceparent", f"must be None or a non-empty str of at most {MAX_TRACEPARENT_LEN} chars")
        tst = self.tracestate
        if tst is not None and (type(tst) is not str or len(tst) > MAX_TRACESTATE_LEN):
            raise _bad("tracestate", f"must be None or a str of at most {MAX_TRACESTATE_LEN} chars")

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this envelope (short keys, defaults omitted)."""
        d: dict[str, Any] = {
            "v": self.v,
            "id": self.id,
            "k": self.kind.value,
            "on": self.origin_node,
            "or": self.origin_region,
            "ts": self.ts,
        }
        if self.ns != "/":
            d["ns"] = self.ns
        if self.persist:
            d["p"] = True
        if self.target_node is not None:
            d["tn"] = self.target_node
        if self.target_region is not None:
            d["tr"] = self.target_region
        if self.traceparent is not None:
            d["tp"] = self.traceparent
            if self.tracestate:
                d["tst"] = self.tracestate
        d["b"] = self.body
        return d

    @classmethod
    def from_wire(cls, d: Any) -> Envelope:
        """Build from a decoded (and tag-restored) JSON object; strict."""
        if type(d) is not dict:
            raise EnvelopeError("bad-shape", "envelope must be an object")
        try:
            return cls(
                v=d["v"],
                id=d["id"],
                kind=d["k"],
                origin_node=d["on"],
                origin_region=d["or"],
                ns=d.get("ns", "/"),
                ts=d["ts"],
                persist=d.get("p", False),
                target_node=d.get("tn"),
                target_region=d.get("tr"),
                body=d["b"],
                traceparent=_trace_field(d.get("tp"), MAX_TRACEPARENT_LEN),
                tracestate=_trace_field(d.get("tst"), MAX_TRACESTATE_LEN),
            )
        except KeyError as exc:
            name = _WIRE_TO_FIELD.get(exc.args[0], str(exc.args[0]))
            raise _bad(name, "is missing") from None
        except TypeError as exc:  # e.g. unhashable kind value
            raise EnvelopeError("bad-shape", str(exc)) from None


def _trace_field(value: Any, limit: int) -> str | None:
    """A trace context value from the wire, or None: a bad one is dropped, never a reason to
    refuse the envelope (W3C: an invalid ``traceparent`` only starts a new trace)."""
    if type(value) is str and 0 < len(value) <= limit:
        return value
    return None


_WIRE_TO_FIELD = {
    "v": "v",
    "id": "id",
    "k": "kind",
    "on": "origin_node",
    "or": "origin_region",
    "ts": "ts",
    "b": "body",
}


def batch_key(env: Envelope) -> BatchKey:
    """The filter-relevant fields that must be equal across one batch.

    ``(origin_node, origin_region, kind, ns, persist, target_node, target_region)``.  The
    remaining filter fields, ``hops`` and ``visited``, are batch-level.
    """
    return (env.origin_node, env.origin_region, env.kind, env.ns, env.persist, env.target_node, env.target_region)


def _check_hops_visited(hops: Any, visited: Any) -> tuple[str, ...]:
    if type(hops) is not int or hops < 0:
        raise _bad("hops", "must be an int >= 0")
    if type(visited) is not tuple:
        if type(visited) is not list:
            raise _bad("visited", "must be a list of region names")
        visited = tuple(visited)
    for r in visited:
        if type(r) is not str or not r or "," in r:
            raise _bad("visited", "entries must be non-empty str without ','")
    return tuple(visited)


@dataclass(frozen=True, slots=True)
class Batch:
    """A homogeneous group of envelopes = one Service Bus message.

    ``hops`` starts at 0 and is incremented by the router on each forward;
    ``visited`` lists the regions the message has been published in.
    """

    envelopes: tuple[Envelope, ...]
    hops: int = 0
    visited: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        envs = self.envelopes
        if type(envs) is not tuple:
            envs = tuple(envs)
            object.__setattr__(self, "envelopes", envs)
        if not envs:
            raise EnvelopeError("empty-batch", "a batch needs at least one envelope")
        if len(envs) > MAX_ENVELOPES:
            raise EnvelopeError("too-many", f"{len(envs)} envelopes > {MAX_ENVELOPES}")
        first = envs[0]
        if type(first) is not Envelope:
            raise EnvelopeError("bad-shape", "batch items must be Envelope")
        key = batch_key(first)
        for e in envs:
            if type(e) is not Envelope:
                raise EnvelopeError("bad-shape", "batch items must be Envelope")
            if (e.origin_node, e.origin_region, e.kind, e.ns, e.persist, e.target_node, e.target_region) != key:
                raise EnvelopeError("mixed-batch", f"envelope {e.id} differs in batch_key from {first.id}")
        visited = _check_hops_visited(self.hops, self.visited)
        if visited is not self.visited:
            object.__setattr__(self, "visited", visited)

    @property
    def key(self) -> BatchKey:
        return batch_key(self.envelopes[0])

    def forwarded(self, region: str) -> Batch:
        """Copy for the router's next hop: ``hops + 1`` and ``region`` appended to visited."""
        return Batch(self.envelopes, self.hops + 1, self.visited + (region,))

    def encode(self) -> bytes:
        """Encode to the UTF-8 JSON message body."""
        return assemble_batch(
            [encode_envelope(e) for e in self.envelopes], hops=self.hops, visited=self.visited
        )

    def encoded_size(self) -> int:
        return len(self.encode())

    @classmethod
    def decode(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        max_bytes: int = MAX_BATCH_BYTES,
        max_envelopes: int = MAX_ENVELOPES,
        max_depth: int = MAX_DEPTH,
    ) -> Batch:
        """Strictly decode a message body.  Raises only :class:`EnvelopeError`."""
        try:
            return _decode(data, max_bytes, max_envelopes, max_depth)
        except EnvelopeError:
            raise
        except RecursionError:  # pragma: no cover - defensive
            raise EnvelopeError("too-deep", "nesting too deep") from None
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - translated: the contract is EnvelopeError only
            raise EnvelopeError("bad-shape", f"{type(exc).__name__}: {exc}"[:200]) from None

    def application_properties(self, *, route_done: bool = False) -> AppProperties:
        """Service Bus application properties for this message (see docs table)."""
        e = self.envelopes[0]
        props: AppProperties = {
            PROP_ORIGIN_NODE: e.origin_node,
            PROP_ORIGIN_REGION: e.origin_region,
            PROP_KIND: e.kind.value,
            PROP_NAMESPACE: e.ns,
            PROP_PERSIST: e.persist,
            PROP_HOPS: self.hops,
        }
        if e.target_node is not None:
            props[PROP_TARGET_NODE] = e.target_node
        if e.target_region is not None:
            props[PROP_TARGET_REGION] = e.target_region
        if self.visited:
            props[PROP_VISITED] = ",".join(self.visited)
        if route_done:
            props[PROP_ROUTE_DONE] = True
        return props


def _decode(data: Any, max_bytes: int, max_envelopes: int, max_depth: int) -> Batch:
    obj = wire.loads(data, max_bytes, max_depth)
    if type(obj) is not dict:
        raise EnvelopeError("bad-shape", "batch must be a JSON object")
    if "v" not in obj:
        raise _bad("v", "is missing")
    v = obj["v"]
    if type(v) is not int:
        raise _bad("v", "must be an int")
    if v != VERSION:
        raise EnvelopeError("bad-version", f"batch version {v} not supported (want {VERSION})")
    raw = obj.get("envelopes")
    if type(raw) is not list:
        raise EnvelopeError("bad-shape", "batch.envelopes must be an array")
    n = len(raw)
    if n > max_envelopes or n > MAX_ENVELOPES:
        raise EnvelopeError("too-many", f"{n} envelopes > {min(max_envelopes, MAX_ENVELOPES)}")
    if not n:
        raise EnvelopeError("empty-batch", "batch.envelopes is empty")
    restore = wire.needs_restore(data)
    envs = []
    from_wire = Envelope.from_wire
    for i, d in enumerate(raw):
        try:
            if restore and type(d) is dict and "b" in d:
                d = dict(d, b=wire.restore(d["b"]))
            envs.append(from_wire(d))
        except EnvelopeError as exc:
            raise type(exc)(exc.reason, f"envelopes[{i}]: {exc.description}") from None
    return Batch(tuple(envs), obj.get("hops", 0), obj.get("visited", ()))


# --------------------------------------------------------------------------
# sizes


def encode_envelope(env: Envelope) -> bytes:
    """The exact bytes ``env`` occupies inside a batch."""
    # the envelope object sits at depth 3 of the document: batch{ envelopes[ env{
    return wire.dumps(env.to_wire(), MAX_DEPTH - 2)


def envelope_size(env: Envelope) -> int:
    """``len(encode_envelope(env))``."""
    return len(encode_envelope(env))


def batch_overhead(hops: int = 0, visited: Sequence[str] = ()) -> int:
    """Bytes of a batch excluding envelopes and separators."""
    return len(_batch_prefix(hops, tuple(visited))) + 2


def _batch_prefix(hops: int, visited: tuple[str, ...]) -> bytes:
    _check_hops_visited(hops, visited)
    return b'{"v":%d,"hops":%d,"visited":%s,"envelopes":[' % (VERSION, hops, wire.dumps_plain(list(visited)))


#: ``batch_overhead(0, ())``; each visited region adds its JSON string length
#: (+1 comma after the first).
BATCH_OVERHEAD = batch_overhead()


def batch_size(envelope_sizes: Iterable[int], hops: int = 0, visited: Sequence[str] = ()) -> int:
    """Exact encoded size of a batch made of envelopes of the given sizes."""
    total = n = 0
    for s in envelope_sizes:
        total += s
        n += 1
    return batch_overhead(hops, visited) + total + max(n - 1, 0) * ENVELOPE_SEPARATOR_BYTES


def check_size(
    env: Envelope, max_bytes: int = DEFAULT_BATCH_BYTES, *, hops: int = 0, visited: Sequence[str] = ()
) -> int:
    """Return ``envelope_size(env)``; raise :class:`EnvelopeTooLarge` if a
    batch holding only ``env`` would exceed ``max_bytes``."""
    size = envelope_size(env)
    total = size + batch_overhead(hops, visited)
    if total > max_bytes:
        raise EnvelopeTooLarge(
            f"envelope {env.id}: batch of {total} bytes > limit {max_bytes}", total, max_bytes
        )
    return size


def assemble_batch(encoded: Sequence[bytes], *, hops: int = 0, visited: Sequence[str] = ()) -> bytes:
    """Join already-encoded envelopes (from :func:`encode_envelope`) into a batch.

    Trusted fast path: homogeneity is *not* re-checked here.
    """
    return _batch_prefix(hops, tuple(visited)) + b",".join(encoded) + b"]}"


def encode_batch(envelopes: Iterable[Envelope], *, hops: int = 0, visited: Sequence[str] = ()) -> bytes:
    """``Batch(tuple(envelopes), hops, visited).encode()``."""
    return Batch(tuple(envelopes), hops, tuple(visited)).encode()


def decode_batch(data: bytes | bytearray | memoryview, **limits: int) -> list[Envelope]:
    """``list(Batch.decode(data, **limits).envelopes)``."""
    return list(Batch.decode(data, **limits).envelopes)


def pack_batches(
    envelopes: Iterable[Envelope],
    *,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    max_envelopes: int = MAX_ENVELOPES,
    hops: int = 0,
    visited: Sequence[str] | None = None,
    preserve_order: bool = True,
) -> list[tuple[Batch, bytes]]:
    """Group envelopes into size-bounded homogeneous batches, encoding each once.

    Returns ``[(batch, body_bytes), ...]``.  With ``preserve_order`` (default)
    only *consecutive* envelopes with equal :func:`batch_key` share a batch,
    so the overall send order is kept; otherwise all envelopes of a key are
    grouped (order kept within a key).  ``visited`` defaults to
    ``(origin_region,)`` of each batch.  Raises :class:`EnvelopeTooLarge` if
    one envelope alone exceeds ``max_bytes``.
    """
    max_envelopes = min(max_envelopes, MAX_ENVELOPES)
    groups: dict[Any, list[Envelope]] = {}
    runs: list[list[Envelope]] = []
    prev_key: Any = object()
    for e in envelopes:
        k = batch_key(e) if type(e) is Envelope else None
        if k is None:
            raise EnvelopeError("bad-shape", "pack_batches takes Envelope items")
        if preserve_order:
            if k != prev_key:
                runs.append([])
                prev_key = k
            runs[-1].append(e)
        else:
            groups.setdefault(k, []).append(e)
    if not preserve_order:
        runs = list(groups.values())

    out: list[tuple[Batch, bytes]] = []
    for run in runs:
        vis = tuple(visited) if visited is not None else (run[0].origin_region,)
        overhead = batch_overhead(hops, vis)
        cur: list[Envelope] = []
        cur_enc: list[bytes] = []
        cur_size = overhead - ENVELOPE_SEPARATOR_BYTES
        for e in run:
            enc = encode_envelope(e)
            if overhead + len(enc) > max_bytes:
                raise EnvelopeTooLarge(
                    f"envelope {e.id}: batch of {overhead + len(enc)} bytes > limit {max_bytes}",
                    overhead + len(enc),
                    max_bytes,
                )
            add = len(enc) + ENVELOPE_SEPARATOR_BYTES
            if cur and (cur_size + add > max_bytes or len(cur) >= max_envelopes):
                out.append((Batch(tuple(cur), hops, vis), assemble_batch(cur_enc, hops=hops, visited=vis)))
                cur, cur_enc, cur_size = [], [], overhead - ENVELOPE_SEPARATOR_BYTES
            cur.append(e)
            cur_enc.append(enc)
            cur_size += add
        if cur:
            out.append((Batch(tuple(cur), hops, vis), assemble_batch(cur_enc, hops=hops, visited=vis)))
    return out


def application_properties(
    batch: Batch | Sequence[Envelope], *, route_done: bool = False
) -> AppProperties:
    """Application properties for a message carrying ``batch``.

    Given a plain sequence of envelopes it is treated as a fresh batch
    (``hops=0``, ``visited=()``, so no ``sio_visited``); pass a
    :class:`Batch` for forwarded messages.  Raises ``mixed-batch`` /
    ``empty-batch`` like :class:`Batch`.
    """
    if not isinstance(batch, Batch):
        batch = Batch(tuple(batch))
    return batch.application_properties(route_done=route_done)
