"""The local stack's trace collector: OTLP/HTTP in, the last traces out, for the dashboard's trace view.

Every process of ``make run`` exports its spans here (``SIO_OTEL_EXTRA_ENDPOINTS``, see
``socketio_servicebus.otel``): ``POST /v1/traces`` with an OTLP ``ExportTraceServiceRequest``,
protobuf (``application/x-protobuf``, optionally gzip) or JSON, decoded with the
``opentelemetry-proto`` package. :class:`TraceStore` keeps the last :data:`MAX_TRACES` traces
(at most :data:`MAX_SPANS_PER_TRACE` spans each; what does not fit is counted, not silently lost)
in memory; ``/api/traces`` lists and searches them (chat message id, room, trace id, Service Bus
message id) and ``/api/traces/<id>`` returns one, with the spans of other traces that *link* to
it (a batch send that carried this emit among others), for the waterfall on ``/traces``.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["MAX_TRACES", "MAX_SPANS_PER_TRACE", "TraceStore", "decode_request", "add_routes"]

MAX_TRACES = 300
MAX_SPANS_PER_TRACE = 2000
MAX_BODY_BYTES = 8 * 1024 * 1024
#: attributes a trace is found by (besides its id)
SEARCH_KEYS = ("chat.message_id", "messaging.message.id", "socketio.room")
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(doc: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping wants base64."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise json_format.ParseError(f"{k} is not hex") from None
            out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(doc, list):
        return [_hex_ids_to_base64(v) for v in doc]
    return doc


def decode_request(body: bytes, content_type: str, content_encoding: str = "") -> list[dict[str, Any]]:
    """The spans of one OTLP export request, flattened to dicts (ids in hex, times in ns)."""
    if content_encoding.lower() == "gzip" and body[:2] == b"\x1f\x8b":  # aiohttp may have inflated it already
        body = gzip.decompress(body)
    req = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), req, ignore_unknown_fields=True)
    else:
        req.ParseFromString(body)
    spans: list[dict[str, Any]] = []
    for rs in req.resource_spans:
        res = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                attrs = _attrs(s.attributes)
                spans.append({
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex() or None,
                    "name": s.name,
                    "kind": _KINDS.get(s.kind, str(s.kind)),
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "service": res.get("service.name", "?"),
                    "instance": res.get("service.instance.id", ""),
                    "region": attrs.get("socketio.region") or res.get("cloud.region") or "",
                    "attributes": attrs,
                    "links": [{"trace_id": lk.trace_id.hex(), "span_id": lk.span_id.hex()} for lk in s.links],
                    "status": {0: "unset", 1: "ok", 2: "error"}.get(s.status.code, "unset"),
                    "status_message": s.status.message,
                })
    return spans


@dataclass
class _Trace:
    trace_id: str
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: int = 0
    keys: set[str] = field(default_factory=set)


class TraceStore:
    """The last ``max_traces`` traces, by arrival of their first span."""

    def __init__(self, *, max_traces: int = MAX_TRACES, max_spans: int = MAX_SPANS_PER_TRACE):
        self.max_traces = max_traces
        self.max_spans = max_spans
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        #: trace id -> (trace id, span id) of spans in other traces that link into it
        self._linked_from: dict[str, set[tuple[str, str]]] = {}
        self.spans_received = 0
        self.spans_dropped = 0
        self.traces_evicted = 0
        self.bad_requests = 0

    def add(self, spans: list[dict[str, Any]]) -> None:
        for span in spans:
            self.spans_received += 1
            tid = span["trace_id"]
            trace = self._traces.get(tid)
            if trace is None:
                trace = self._traces[tid] = _Trace(tid)
                while len(self._traces) > self.max_traces:
                    old, _ = self._traces.popitem(last=False)
                    self._linked_from.pop(old, None)
                    self.traces_evicted += 1
            if len(trace.spans) >= self.max_spans and span["span_id"] not in trace.spans:
                trace.dropped += 1
                self.spans_dropped += 1
                continue
            trace.spans[span["span_id"]] = span
            for key in SEARCH_KEYS:
                value = span["attributes"].get(key)
                if isinstance(value, str):
                    trace.keys.add(value.lower())
                elif isinstance(value, list):
                    trace.keys.update(str(v).lower() for v in value)
            for link in span["links"]:
                if link["trace_id"] != tid:
                    self._linked_from.setdefault(link["trace_id"], set()).add((tid, span["span_id"]))

    def _summary(self, t: _Trace) -> dict[str, Any]:
        spans = list(t.spans.values())
        start = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] for s in spans)
        ids = {s["span_id"] for s in spans}
        roots = [s for s in spans if not s["parent_span_id"] or s["parent_span_id"] not in ids]
        root = min(roots or spans, key=lambda s: s["start_ns"])
        messages = sorted({str(s["attributes"]["chat.message_id"]) for s in spans
                           if "chat.message_id" in s["attributes"]})
        rooms = sorted({str(s["attributes"]["socketio.room"]) for s in spans
                        if isinstance(s["attributes"].get("socketio.room"), str)})
        return {
            "trace_id": t.trace_id, "root": root["name"], "root_service": root["service"],
            "start_ns": start, "duration_ms": (end - start) / 1e6, "spans": len(spans), "dropped": t.dropped,
            "processes": sorted({f"{s['service']}/{s['instance']}" for s in spans}),
            "chat_message_ids": messages, "rooms": rooms,
            "errors": sum(1 for s in spans if s["status"] == "error"),
        }

    def search(self, q: str = "", limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; ``q`` matches a trace id (prefix), a chat message id, a Service Bus or
        envelope message id or a room (substring)."""
        q = q.strip().lower()
        out = []
        for t in reversed(self._traces.values()):
            if not t.spans:
                continue
            if q and not (t.trace_id.startswith(q) or any(q in k for k in t.keys)):
                continue
            out.append(self._summary(t))
            if len(out) >= limit:
                break
        return out

    def get(self, trace_id: str) -> dict[str, Any] | None:
        t = self._traces.get(trace_id.lower())
        if t is None or not t.spans:
            return None
        linked = []
        for other_tid, span_id in sorted(self._linked_from.get(t.trace_id, ())):
            other = self._traces.get(other_tid)
            if other is not None and span_id in other.spans:
                linked.append(other.spans[span_id])
        return {**self._summary(t), "span_list": sorted(t.spans.values(), key=lambda s: s["start_ns"]),
                "linked": linked}

    def stats(self) -> dict[str, int]:
        return {"traces": len(self._traces), "spans_received": self.spans_received,
                "spans_dropped": self.spans_dropped, "traces_evicted": self.traces_evicted,
                "bad_requests": self.bad_requests}


def add_routes(app: web.Application, store: TraceStore) -> None:
    """``POST /v1/traces`` (OTLP/HTTP), ``GET /api/traces?q=&limit=``, ``GET /api/traces/{id}``."""

    async def export(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            store.bad_requests += 1
            return web.Response(status=413, text="too large")
        body = await request.read()
        try:
            spans = decode_request(body, request.content_type, request.headers.get("content-encoding", ""))
        except (DecodeError, json_format.ParseError, ValueError, OSError, EOFError) as exc:
            store.bad_requests += 1
            return web.Response(status=400, text=f"not an OTLP ExportTraceServiceRequest: {exc}"[:300])
        store.add(spans)
        if "json" in request.content_type:
            return web.json_response({})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def listing(request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "50")), MAX_TRACES))
        except ValueError:
            return web.json_response({"error": "'limit' must be an integer"}, status=400)
        return web.json_response({"traces": store.search(request.query.get("q", ""), limit),
                                  "stats": store.stats()})

    async def one(request: web.Request) -> web.Response:
        trace = store.get(request.match_info["trace_id"])
        if trace is None:
            return web.json_response({"error": "no such trace (yet)"}, status=404)
        return web.json_response(trace)

    app.router.add_post("/v1/traces", export)
    app.router.add_get("/api/traces", listing)
    app.router.add_get("/api/traces/{trace_id}", one)
