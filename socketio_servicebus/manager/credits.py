"""Credit-aware batching: the least batch window that keeps the fleet within a credit budget.

Pure (the caller passes the time and the counts). ``BatchingOptions(credit_budget=1000)``
makes the manager run :meth:`CreditGovernor.update` every :data:`UPDATE_INTERVAL` seconds with
its own emit rate (envelopes queued, averaged over a few seconds: the linger's own estimate
decays in 0.1 s and is too jumpy at a few emits per second) and the number of nodes it knows
from heartbeats. The window comes from :func:`socketio_servicebus.sizing.window_for_budget`,
the same model the sizing command prints: every node is assumed to emit like this one, each
message costs a send, one filter evaluation per subscription (the nodes' and
``extra_subscriptions``) and one receive per other node and extra subscription; heartbeats and
subscription checks come off the budget first. The outbox's linger takes it as its floor,
capped at ``send_interval``. :func:`steer` is that loop (the manager's ``credit-budget`` task).
"""

from __future__ import annotations

import asyncio
import math
import time

from socketio_servicebus.manager.cluster import Cluster
from socketio_servicebus.manager.options import BatchingOptions, ClusterOptions
from socketio_servicebus.manager.outbox import Outbox
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.sizing import Fleet, fixed_credits_per_second, window_for_budget

__all__ = ["UPDATE_INTERVAL", "CreditGovernor", "steer"]

#: seconds between updates of the window
UPDATE_INTERVAL = 0.5
#: time constant of the emit rate estimate, seconds
RATE_TAU = 2.0


class CreditGovernor:
    def __init__(self, budget: float, *, extra_subscriptions: int = 0, cap: float,
                 heartbeat_interval: float = 5.0, subscription_check_interval: float = 60.0) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.budget = budget
        self.extra = extra_subscriptions
        self.cap = cap
        self.heartbeat_interval = heartbeat_interval
        self.subscription_check_interval = subscription_check_interval
        self.rate = 0.0
        self._count: int | None = None
        self._t = 0.0

    def update(self, now: float, queued_total: int, nodes: int) -> float:
        """The window (seconds, at most ``cap``) given ``queued_total`` envelopes queued since
        the start and ``nodes`` nodes in the fleet."""
        if self._count is None:
            self._count, self._t = queued_total, now
            return 0.0
        dt = now - self._t
        if dt <= 0:
            return self._window(nodes)
        instant = (queued_total - self._count) / dt
        weight = 1.0 - math.exp(-dt / RATE_TAU)
        self.rate += (instant - self.rate) * weight
        self._count, self._t = queued_total, now
        return self._window(nodes)

    def _window(self, nodes: int) -> float:
        n = max(1, nodes)
        fleet = Fleet(nodes=n, emits_per_second=self.rate, function_subscriptions=self.extra,
                      heartbeat_interval=self.heartbeat_interval,
                      subscription_check_interval=self.subscription_check_interval)
        window = window_for_budget(own_rate=self.rate, nodes=n, subscriptions=n + self.extra,
                                   receivers=n - 1 + self.extra, budget=self.budget,
                                   fixed=sum(fixed_credits_per_second(fleet).values()))
        return min(window, self.cap)


async def steer(batching: BatchingOptions, cl: ClusterOptions, outbox: Outbox, cluster: Cluster,
                metrics: ManagerMetrics) -> None:
    """Credit-aware batching (``BatchingOptions.credit_budget``): keep the outbox's least
    window at what the fleet's estimated spend asks for, every :data:`UPDATE_INTERVAL` seconds."""
    assert batching.credit_budget is not None
    governor = CreditGovernor(batching.credit_budget, extra_subscriptions=batching.extra_subscriptions,
                              cap=batching.send_interval, heartbeat_interval=cl.heartbeat_interval,
                              subscription_check_interval=cl.subscription_check_interval)
    while True:
        window = governor.update(time.monotonic(), outbox.queued_total, cluster.server_count())
        outbox.linger.floor = window
        metrics.credit_window_seconds_last = window
        await asyncio.sleep(UPDATE_INTERVAL)
