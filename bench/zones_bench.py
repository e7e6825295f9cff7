# ruff: noqa: B023 - each lambda is timed at once, inside its loop iteration
"""Cost of the proof of origin (not a test): µs to sign and to verify one Service Bus message.

    .venv/bin/python bench/zones_bench.py            # ~10 s; prints a Markdown table

For messages of 1, 10 and 100 chat emits (≈ 0.3, 3 and 30 KB) and one of ~200 KB: the time to
sign (:meth:`BusGuard.sign`), to check the proof of origin (:meth:`BusGuard.check_message`: the
canonical-prefix check, Ed25519 verify and the property check) and to police every envelope,
next to the time to decode the body (``Batch.decode``), which every receiver pays anyway.
Bounded: at most ``--seconds`` per cell.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from socketio_servicebus.wire.envelope import Batch, Envelope, Kind, pack_batches  # noqa: E402
from socketio_servicebus.zones import BusGuard  # noqa: E402
from tests.support.zones import make_zones  # noqa: E402


def emits(n: int, size: int = 200) -> list[Envelope]:
    return [Envelope(kind=Kind.EMIT, origin_node="factory1", origin_region="eu",
                     body={"method": "emit", "event": "chat", "data": [{"text": "x" * size, "n": i}],
                           "namespace": "/", "room": "chat:factory1", "skip_sid": None, "callback": None,
                           "host_id": "factory1", "binary": False}) for i in range(n)]


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """Median of 5 rounds of µs per call, each round ~seconds/5."""
    rounds = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if time.perf_counter() - t0 >= seconds / 5:
                break
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=0.6, help="time per cell (default 0.6)")
    a = p.parse_args()
    z = make_zones()
    site, cloud = BusGuard(z.zone_set("factory1")), BusGuard(z.zone_set("cloud"))
    print("| message | bytes | decode µs | sign µs | verify µs | police µs (all envelopes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, envs in (("1 emit", emits(1)), ("10 emits", emits(10)), ("100 emits", emits(100)),
                        ("1 emit of ~200 KB", emits(1, 200_000))):
        ((batch, body),) = pack_batches(envs)
        props: dict[str, Any] = {str(k): v for k, v in batch.application_properties().items()}
        props.update(site.sign(batch, body))
        zone, verdict = cloud.check_message(body, props, batch)
        assert zone is not None and verdict.ok
        decoded = Batch.decode(body)
        t_dec = per_call_us(lambda: Batch.decode(body), a.seconds)
        t_sign = per_call_us(lambda: site.sign(batch, body), a.seconds)
        t_ver = per_call_us(lambda: cloud.check_message(body, props, decoded), a.seconds)
        t_pol = per_call_us(lambda: [cloud.police(zone, e) for e in decoded.envelopes], a.seconds)
        print(f"| {label} | {len(body):,} | {t_dec:.1f} | {t_sign:.1f} | {t_ver:.1f} | {t_pol:.1f} |")


if __name__ == "__main__":
    main()
