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
* the same window applies at any rate while the link is saturated: from the moment sends were
  in flight for at least ``busy`` (80 %) of the last ~``tau`` seconds (a starved CPU or a slow
  broker makes each send long) until that share falls below a third of it (hysteresis: the
  window itself lowers the share, and the mode must not flap); one more envelope per message
  then costs less than one more message;
* the window is counted from the arrival of the oldest waiting envelope, so ``budget`` bounds
  the time any envelope waits for companions (the send itself comes on top).

* a ``floor`` set from outside (credit-aware batching, see ``manager/credits.py``) is the
  least window at any rate, still at most ``budget``: the fleet's credit spend asks for it.

The rate and the link's busy time are exponentially decayed (time constant ``tau``): they follow
a change of load within a few ``tau`` and forget a burst just as fast.
"""

from __future__ import annotations

import math

__all__ = ["Linger"]


class Linger:
    """How long the oldest waiting envelope may wait for more before the outbox sends.

    :param budget: the longest wait, seconds (``0`` disables lingering: always send at once).
    :param target: envelopes per Service Bus message aimed at when lingering.
    :param tau: time constant of the rate and utilisation estimates, seconds.
    :param busy: link utilisation (share of time with a send in flight) from which the window
        applies whatever the rate (above 1: never).
    """

    __slots__ = ("budget", "target", "tau", "busy", "floor", "_count", "_t", "_busy_time", "_tb", "_saturated")

    def __init__(self, budget: float, *, target: int = 12, tau: float = 0.1, busy: float = 0.8) -> None:
        if budget < 0 or target < 1 or tau <= 0 or busy <= 0:
            raise ValueError("budget >= 0, target >= 1, tau > 0 and busy > 0 are required")
        self.budget = budget
        self.target = target
        self.tau = tau
        self.busy = busy
        #: the least window, seconds (credit-aware batching); 0: none
        self.floor = 0.0
        self._count = 0.0  # arrivals, each decayed by exp(-age / tau), as of time _t
        self._t = 0.0
        self._busy_time = 0.0  # seconds with a send in flight, decayed likewise, as of time _tb
        self._tb = 0.0
        self._saturated = False

    def arrived(self, now: float, n: int = 1) -> None:
        """Record ``n`` envelopes queued at ``now`` (monotonic seconds)."""
        if self._count:
            self._count *= math.exp(-max(0.0, now - self._t) / self.tau)
        self._count += n
        self._t = now

    def sent(self, start: float, end: float) -> None:
        """Record a send that was in flight from ``start`` to ``end``."""
        if self._busy_time:
            self._busy_time *= math.exp(-max(0.0, end - self._tb) / self.tau)
        self._busy_time += max(0.0, end - start)
        self._tb = end

    def utilisation(self, now: float) -> float:
        """Share of the recent time (~``tau``) with a send in flight, 0..1."""
        if not self._busy_time:
            return 0.0
        return min(1.0, self._busy_time * math.exp(-max(0.0, now - self._tb) / self.tau) / self.tau)

    def rate(self, now: float) -> float:
        """Estimated arrivals per second at ``now``."""
        if not self._count:
            return 0.0
        return self._count * math.exp(-max(0.0, now - self._t) / self.tau) / self.tau

    def window(self, now: float) -> float:
        """Seconds the oldest waiting envelope may wait for companions (``0``: send now).

        Updates the saturation state (hysteresis), so call it once per send decision.
        """
        if self.budget <= 0.0:
            return 0.0
        return min(self.budget, max(self._adaptive(now), self.floor))

    def _adaptive(self, now: float) -> float:
        r = self.rate(now)
        if r <= 0.0:
            return 0.0
        u = self.utilisation(now)
        if u >= self.busy:
            self._saturated = True
        elif u < self.busy / 3:
            self._saturated = False
        if r * self.budget < self.target and not self._saturated:
            return 0.0  # a free link, and even the whole budget would not gather a full batch
        return min(self.budget, self.target / r)

    def wait(self, now: float, oldest: float, queued: int) -> float:
        """Seconds to wait before sending ``queued`` envelopes, the oldest queued at ``oldest``."""
        if queued >= self.target and (self.floor <= 0.0 or queued >= self.floor * self.rate(now)):
            return 0.0
        return max(0.0, oldest + self.window(now) - now)
