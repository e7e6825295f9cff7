"""Counters and gauges of one :class:`~socketio_servicebus.manager.client_manager.ServiceBusManager` (pure, no I/O).

The relay node turns :meth:`ManagerMetrics.snapshot` into Prometheus metrics; every value is
a plain ``int`` or ``float`` so any exporter can take it as is.  Counters only grow; gauges
(``buffer_depth``, ``nodes``, ``lag_seconds_last``) are set by the manager.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["ManagerMetrics", "BATCH_SIZE_BUCKETS"]

#: Upper bounds of the ``batch_size`` histogram (envelopes per Service Bus message).
BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass(slots=True)
class ManagerMetrics:
    # outbound
    envelopes_published: int = 0
    messages_published: int = 0
    publish_errors: int = 0
    buffer_dropped: int = 0
    #: envelopes in messages the broker refused for good (e.g. too large for its limit)
    send_dropped: int = 0
    #: envelopes still unsent when close() gave up flushing
    close_dropped: int = 0
    #: sends Service Bus refused because the namespace is throttled (server-busy, 50009); their
    #: envelopes stayed at the head of the buffer and were sent again after the wait it asks for
    sends_throttled: int = 0
    #: 1 while the last send was refused as throttled, 0 once a send goes through (a gauge)
    throttled: int = 0
    #: envelopes dropped because they waited longer than ``Limits.max_queue_delay`` while the
    #: broker was reachable (saturated or throttled), so that latency stays bounded
    expired_dropped: int = 0
    #: emits dropped because the buffer stayed older than half of ``max_queue_delay`` for as
    #: long again (backpressure: emitters wait first, then what cannot be kept is counted)
    backpressure_dropped: int = 0
    #: the credit-aware batching window now in force, seconds (0: none; a gauge)
    credit_window_seconds_last: float = 0.0
    buffer_depth: int = 0
    # inbound
    envelopes_received: int = 0
    messages_received: int = 0
    settled: int = 0
    abandoned: int = 0
    settle_errors: int = 0
    duplicates_dropped: int = 0
    #: envelopes delivered here that were not for this node (own, or targeted at another node)
    misaddressed_dropped: int = 0
    dead_lettered: int = 0
    poison_received: int = 0
    #: messages whose handling raised (abandoned for redelivery with peek_lock; lost with
    #: receive_and_delete, where the broker already deleted them)
    processing_failures: int = 0
    reconnects: int = 0
    subscription_recreated: int = 0
    subscription_repaired: int = 0
    subscription_check_errors: int = 0
    #: receive calls that never yielded to the event loop (detached SDK link), then reconnected
    receiver_stalls: int = 0
    #: receive_and_delete: messages already in the SDK's prefetch buffer when the receiver
    #: closed (reconnect or close()); the broker had deleted them, so they are lost
    prefetch_dropped: int = 0
    #: reads of SDK internals (prefetch buffer size) that failed; the manager fell back
    sdk_probe_failures: int = 0
    # background tasks
    task_failures: int = 0
    # request/reply
    requests_sent: int = 0
    requests_timed_out: int = 0
    #: requests from other nodes answered "busy" (over max_concurrent_requests)
    requests_refused: int = 0
    # trust zones (socketio_servicebus.zones)
    #: envelopes refused by reason: unsigned, bad signature, outside the zone's policy, ...;
    #: exported as ``forged_dropped{reason=...}``
    forged_dropped: Counter[str] = field(default_factory=Counter)
    #: hellos not answered (rate limit per origin node and zone)
    hello_limited: int = 0
    #: a site's out-of-zone emits / socket operations that would have touched no socket here (a
    #: no-op anyway: python-socketio broadcasts ``to=sid`` emits and disconnects); not forgeries
    zone_untouched_dropped: int = 0
    # gauges
    nodes: int = 1
    lag_seconds_last: float = 0.0
    lag_seconds_sum: float = 0.0
    lag_seconds_count: int = 0
    batch_size_sum: int = 0
    batch_size_count: int = 0
    batch_size_buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_BUCKETS) + 1))

    def observe_batch(self, envelopes: int) -> None:
        """One Service Bus message carrying ``envelopes`` envelopes was published."""
        self.messages_published += 1
        self.envelopes_published += envelopes
        self.batch_size_sum += envelopes
        self.batch_size_count += 1
        self.batch_size_buckets[bisect.bisect_left(BATCH_SIZE_BUCKETS, envelopes)] += 1

    def observe_lag(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.lag_seconds_last = seconds
        self.lag_seconds_sum += seconds
        self.lag_seconds_count += 1

    def snapshot(self) -> dict[str, float | int]:
        """A flat copy: counters, gauges, ``batch_size_le_<n>`` cumulative buckets, averages and
        ``forged_dropped{reason=<reason>}`` per reason."""
        out: dict[str, float | int] = {}
        for f in fields(self):
            if f.name not in ("batch_size_buckets", "forged_dropped"):
                out[f.name] = getattr(self, f.name)
        for reason, count in sorted(self.forged_dropped.items()):
            out[f"forged_dropped{{reason={reason}}}"] = count
        running = 0
        for bound, count in zip((*BATCH_SIZE_BUCKETS, "inf"), self.batch_size_buckets, strict=True):
            running += count
            out[f"batch_size_le_{bound}"] = running
        out["batch_size_avg"] = self.batch_size_sum / self.batch_size_count if self.batch_size_count else 0.0
        out["lag_seconds_avg"] = self.lag_seconds_sum / self.lag_seconds_count if self.lag_seconds_count else 0.0
        return out
