"""Mutational fuzzer for the envelope decoder (``socketio_servicebus.wire.envelope.Batch.decode``), no atheris needed.

    python bench/fuzz_envelope.py [--seconds 60] [--iterations N] [--seed S] [--report out.json]

Starts from valid batches (every kind, bytes tags, escapes, forwarded batches, a large one) and
a few hostile seeds (deep nesting, huge numbers, lone surrogates), and mutates them at byte
level (delete, insert, flip, splice, duplicate ranges, nest, inflate numbers). For every input it
checks the decoder's contract:

* it raises nothing but ``EnvelopeError`` (anything else is reported with the input);
* whatever it accepts re-encodes and decodes to the same batch;
* one input takes at most ``--max-input-ms`` (default 1000) - slower ones are reported.

Interesting inputs (a new error reason, or accepted) join the corpus. The run is bounded by time
and iterations; peak memory is measured with ``tracemalloc`` on a sample of inputs (every
``--trace-every``th, to keep the run fast). Exit code 1 if anything unexpected was found. The
report (``--report``) is JSON: iterations, seconds, reasons seen, accepted, unexpected (with
base64 inputs), slowest input in ms, peak MiB.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from socketio_servicebus.wire.envelope import Batch, Envelope, EnvelopeError, Kind  # noqa: E402


def _env(**kw: object) -> Envelope:
    base: dict[str, object] = {"kind": Kind.EMIT, "origin_node": "n1", "origin_region": "eu",
                               "body": {"method": "emit", "event": "chat", "data": ["hi"], "namespace": "/",
                                        "room": "r", "skip_sid": None, "callback": None, "host_id": "n1"}}
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


def seeds() -> list[bytes]:
    out = [
        Batch((_env(), _env(body={"t": "héllo", "raw": b"\x00\x01", "esc": {"_b64": "x"}}))).encode(),
        Batch((_env(kind=Kind.REQUEST, target_node="n2", ns="/a", persist=True, body={"q": [1, 2.5, None]}),)).encode(),
        Batch((_env(kind=Kind.HEARTBEAT, body={"clients": 3, "hello": True}),), 2, ("eu", "us")).encode(),
        Batch((_env(kind=Kind.RESPONSE, target_node="n9", body={"rid": "x", "ok": True, "data": [{"sid": "s"}]}),)).encode(),
        Batch(tuple(_env(body={"method": "emit", "event": "e", "data": [i]}) for i in range(50))).encode(),
    ]
    out += [
        b'{"v":1,"e":[' + b"[" * 200 + b"]" * 200 + b"]}",
        b'{"v":1,"h":0,"e":[{"v":1,"id":"x","k":"emit","on":"n","or":"r","ts":1e308,"b":{"_esc":{"_b64":"@@"}}}]}',
        b'{"v":1,"e":[{"v":1,"id":"\\ud800","k":"emit","on":"n","or":"r","ts":0,"b":{}}]}',
    ]
    return out


ALPHABET = b'{}[]",:0123456789.eE+-truefalsn\\u_b64esc \x00\xff\xc3\xa9\xed\xa0\x80'
TOKENS = [b'"v":1', b'"v":2', b'"e":[]', b'"h":-1', b'"vi":["eu","eu"]', b'"_b64":"AAAA"', b'"_esc":{}', b"1e999",
          b"-0", b"NaN", b"Infinity", b"null", b'"\\u0000"', b"9" * 400, b'"k":"nope"', b'"ts":-1', b'"p":"yes"']


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[min(pos, len(data) - 1): min(pos, len(data) - 1) + rng.randint(1, 8)]
        elif op == 1:
            data.insert(pos, rng.choice(ALPHABET))
        elif op == 2 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 3:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            data[pos:pos] = other[start: start + rng.randrange(64)]
        elif op == 4:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 5 and len(data) > 2:  # duplicate a range
            a = rng.randrange(len(data))
            b = min(len(data), a + rng.randint(1, 256))
            data[pos:pos] = data[a:b] * rng.randint(1, 8)
        elif op == 6:  # wrap in nesting
            n = rng.choice((10, 63, 64, 65, 1000, 20000))
            data[pos:pos] = b"[" * n + b"0" + b"]" * n
        elif op == 7 and data:  # bit flip
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << rng.randrange(8)
        else:  # truncate
            del data[pos:]
    return bytes(data[: 2 * 1024 * 1024])


def run(seconds: float, iterations: int, seed: int, max_input_ms: float, trace_every: int) -> dict[str, object]:
    rng = random.Random(seed)
    corpus = seeds()
    reasons: Counter[str] = Counter()
    unexpected: list[dict[str, str]] = []
    slow: list[dict[str, object]] = []
    accepted = 0
    slowest = 0.0
    peak = 0
    start = time.monotonic()
    n = 0
    while n < iterations and time.monotonic() - start < seconds:
        n += 1
        data = mutate(rng, corpus)
        traced = trace_every > 0 and n % trace_every == 0
        if traced:
            tracemalloc.start()
        t0 = time.perf_counter()
        try:
            batch = Batch.decode(data)
            again = Batch.decode(batch.encode())
            if again != batch:
                unexpected.append({"error": "re-encode changed the batch", "input": base64.b64encode(data).decode()})
            accepted += 1
            if len(corpus) < 500:
                corpus.append(data)
        except EnvelopeError as exc:
            if exc.reason not in reasons and len(corpus) < 500:
                corpus.append(data)
            reasons[exc.reason] += 1
        except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
            unexpected.append({"error": f"{type(exc).__name__}: {exc}"[:300], "input": base64.b64encode(data).decode()})
        ms = (time.perf_counter() - t0) * 1000
        if traced:
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            ms_note = " (traced)"
        else:
            ms_note = ""
        slowest = max(slowest, ms)
        if ms > max_input_ms:
            slow.append({"ms": round(ms, 1), "bytes": len(data), "note": ms_note.strip(),
                         "input": base64.b64encode(data[:4096]).decode()})
    return {
        "iterations": n, "seconds": round(time.monotonic() - start, 2), "seed": seed, "accepted": accepted,
        "reasons": dict(reasons.most_common()), "unexpected": unexpected[:20] + slow[:20],
        "max_input_ms": round(slowest, 2), "peak_mb": round(peak / 2**20, 2), "corpus": len(corpus),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--iterations", type=int, default=10**9)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--max-input-ms", type=float, default=1000.0)
    p.add_argument("--trace-every", type=int, default=50, help="measure memory on every Nth input (0 = never)")
    p.add_argument("--report", type=Path)
    args = p.parse_args(argv)
    result = run(args.seconds, args.iterations, args.seed, args.max_input_ms, args.trace_every)
    text = json.dumps(result, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k != "unexpected"}
    print(json.dumps(summary), flush=True)
    for item in result["unexpected"]:  # type: ignore[union-attr]
        print("UNEXPECTED", json.dumps(item)[:400], flush=True)
    return 1 if result["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
