"""Adaptive batch window ("linger") of the outbox: pure, the clock is passed in.

Kafka's ``linger.ms`` makes every record wait a fixed time for companions. Here the window
adapts to the observed emit rate instead:

* below ``target / budget`` envelopes/s (800/s with the defaults) the window is 0: an envelope
  leaves as soon as the sender is free, and only what arrives while a send is in flight shares
  the next message (Nagle-like). A quiet node, or a busy one at a few hundred emits/s, adds no
  latency;
* above it the window is ``target / rate``: the time in which about ``target`` envelopes arrive,
  so each Service Bus message carries about ``target`` envelopes (0.08 messages per emit with
  the defaults) and the window shrinks as the rate grows; it never exceeds ``budget``;
* the window is counted from the arrival of the oldest waiting envelope, so ``budget`` bounds
  the time any envelope waits for companions (the send itself comes on top).

The rate is an exponentially decayed count of arrivals (time constant ``tau``): it follows a
change of load within a few ``tau`` and forgets a burst just as fast.
"""

from __future__ import annotations

import math

__all__ = ["Linger"]


class Linger:
    """How long the oldest waiting envelope may wait for more before the outbox sends.

    :param budget: the longest wait, seconds (``0`` disables lingering: always send at once).
    :param target: envelopes per Service Bus message aimed at when lingering.
    :param tau: time constant of the rate estimate, seconds.
    """

    __slots__ = ("budget", "target", "tau", "_count", "_t")

    def __init__(self, budget: float, *, target: int = 12, tau: float = 0.1) -> None:
        if budget < 0 or target < 1 or tau <= 0:
            raise ValueError("budget >= 0, target >= 1 and tau > 0 are required")
        self.budget = budget
        self.target = target
        self.tau = tau
        self._count = 0.0  # arrivals, each decayed by exp(-age / tau), as of time _t
        self._t = 0.0

    def arrived(self, now: float, n: int = 1) -> None:
        """Record ``n`` envelopes queued at ``now`` (monotonic seconds)."""
        if self._count:
            self._count *= math.exp(-max(0.0, now - self._t) / self.tau)
        self._count += n
        self._t = now

    def rate(self, now: float) -> float:
        """Estimated arrivals per second at ``now``."""
        if not self._count:
            return 0.0
        return self._count * math.exp(-max(0.0, now - self._t) / self.tau) / self.tau

    def window(self, now: float) -> float:
        """Seconds the oldest waiting envelope may wait for companions (``0``: send now)."""
        if self.budget <= 0.0:
            return 0.0
        r = self.rate(now)
        if r * self.budget < self.target:
            return 0.0  # even the whole budget would not gather a full batch: do not wait
        return min(self.budget, self.target / r)

    def wait(self, now: float, oldest: float, queued: int) -> float:
        """Seconds to wait before sending ``queued`` envelopes, the oldest queued at ``oldest``."""
        if queued >= self.target:
            return 0.0
        return max(0.0, oldest + self.window(now) - now)
