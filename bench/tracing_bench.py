"""CPU per emit of the manager's tracing hooks alone, without Service Bus or sockets.

One emit as the manager sees it: the ``emit`` span around building the envelope (with its
``traceparent``), a ``send`` span for its batch, then on a receiving node a ``receive`` span and a
``deliver`` span. Tracing off (no SDK), and with the SDK at a 1 % and 100 % parent-based ratio, its
batch span processor feeding an exporter that encodes to OTLP protobuf and drops the bytes (what
``bench/manager_bench.py``'s ``{"_otel": {"ratio": r}}`` variant installs in each node).
Process CPU time (both threads: the exporter encodes in its own), bounded loop.

    .venv/bin/python bench/tracing_bench.py [--emits 3000]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: E402

from socketio_servicebus.tracing import MessagingSpans, Tracing  # noqa: E402
from socketio_servicebus.wire.envelope import Batch, Envelope  # noqa: E402


class EncodeOnly(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


def per_emit_us(ratio: float | None, emits: int) -> float:
    provider = None
    if ratio is None:
        tracing = Tracing(enabled=False)
    else:
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        # a queue for every span of the loop: none dropped, all encoded and counted
        provider.add_span_processor(BatchSpanProcessor(EncodeOnly(), max_queue_size=4 * emits + 16))
        tracing = Tracing(tracer_provider=provider)
    spans = MessagingSpans(tracing, topic="socketio", subscription="node-b")
    body = {"method": "emit", "event": "chat", "room": "lobby", "namespace": "/", "data": [{"text": "hi"}]}
    c0 = time.process_time()
    for _ in range(emits):
        with spans.emit(body, "/"):
            env = Envelope(kind="emit", origin_node="a", origin_region="r", body=body)
            trace = spans.envelope_context()
            if trace is not None:
                env = dataclasses.replace(env, traceparent=trace[0], tracestate=trace[1])
        batch = Batch((env,))
        with spans.send([batch]):
            pass
        with spans.receive(batch, env.id) as receive:
            if receive is not None:
                with spans.deliver(env, receive, 50):
                    pass
    if provider is not None:
        provider.shutdown()  # flush: the encoding of the last batches counts too
    return (time.process_time() - c0) / emits * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emits", type=int, default=3000)
    a = p.parse_args()
    for label, ratio in (("off", None), ("1 %", 0.01), ("100 %", 1.0)):
        print(f"{label:>6}: {per_emit_us(ratio, a.emits):7.1f} us CPU per emit (emit + send + receive + deliver)")


if __name__ == "__main__":
    main()
