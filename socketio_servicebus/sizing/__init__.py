"""What a fleet of ServiceBusManager nodes costs on Azure Service Bus: credits, operations, money.

Pure (no I/O, nothing of the project imported). The same formulas serve the command line

    python -m socketio_servicebus.sizing --nodes 20 --regions 2 --emits-per-second 5 \\
        --payload 200 --room-share 0.3 [--function-subscriptions 3] [--window-ms 50]

and the manager's credit-aware batching (:func:`window_for_budget`). docs/scale.md gives the
formulas with their sources and a worked example.

The model, per namespace (one per region) and per second:

* every node sends ``E / b`` Service Bus messages for its ``E`` emits (``b`` envelopes per
  message: 1 below the adaptive window's threshold, more when a window batches them, at most
  what fits in 256 KB) and one heartbeat per ``heartbeat_interval``;
* each message sent to the topic costs 1 credit (send), 1 per filter evaluation (one rule per
  subscription: ``N`` node subscriptions plus ``K`` function subscriptions) and 1 per receive
  (``N - 1`` other nodes, their rules exclude the sender; plus the ``K`` function
  subscriptions for emits; heartbeats reach the nodes only);
* with ``R`` regions, each emit is forwarded by the router into the ``R - 1`` other namespaces,
  where it costs a send, ``N + K`` filter evaluations and ``N`` receives;
* every node re-reads its subscription's rules once per ``subscription_check_interval``
  (one management operation, 10 credits).

Rooms do not change the bill: a node's subscription rule selects by origin and target node,
never by room (the receiving node resolves the room), so ``room_share`` only changes what the
clients receive, and is reported as such.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CREDITS",
    "PRICES",
    "Prices",
    "Fleet",
    "Estimate",
    "batch_size",
    "credits_per_message",
    "fixed_credits_per_second",
    "estimate",
    "main",
    "window_for_budget",
]

#: Credits per operation, Standard tier (Microsoft Learn, "Throttling operations on Azure
#: Service Bus", service-bus-throttling, read 2026-12): 1,000 credits per second per namespace.
CREDITS = {
    "per_second": 1000,
    "send": 1,  # per message
    "receive": 1,  # per message
    "peek": 1,  # per message
    "filter": 1,  # per filter evaluation of a topic message
    "management": 10,  # create/read/update/delete of an entity
}

#: Prices: USD, pay-as-you-go, from https://azure.microsoft.com/pricing/details/service-bus/
#: (the structure was checked in 2026-12; the dollar figures are those the page listed when
#: last read, 2024, East US). Standard: a base charge per hour with 13 M operations a month
#: included, then per-million bands; Premium: a fixed price per messaging unit and hour.
#: Check the page before quoting a figure to anyone.
@dataclass(frozen=True, slots=True)
class Prices:
    source: str
    hours_per_month: int
    standard_base_per_hour: float
    #: (operations per month up to, USD per million operations in this band)
    standard_bands: tuple[tuple[float, float], ...]
    premium_mu_per_hour: float
    premium_mu_steps: tuple[int, ...]


PRICES = Prices(
    source="https://azure.microsoft.com/pricing/details/service-bus/ (USD, East US; figures as last read 2024)",
    hours_per_month=730,
    standard_base_per_hour=0.0135,
    standard_bands=((13e6, 0.0), (100e6, 0.80), (2_500e6, 0.50), (math.inf, 0.20)),
    premium_mu_per_hour=0.928,
    premium_mu_steps=(1, 2, 4, 8, 16),
)

#: Premium has no credits: it is limited by its messaging units' CPU and memory, and Microsoft
#: publishes no operations-per-MU figure. The model assumes one MU carries the credit load of
#: ``PREMIUM_CREDITS_PER_MU`` per second and plans for ``PREMIUM_MAX_CPU`` of it (Microsoft
#: advises scaling out above 70 % CPU). An assumption: measure your own workload.
PREMIUM_CREDITS_PER_MU = 4000
PREMIUM_MAX_CPU = 0.7

#: Envelope overhead over its payload (JSON frame, ids, properties), bytes; and the most a
#: message carries (Standard's 256 KB).
ENVELOPE_OVERHEAD = 120
MAX_MESSAGE_BYTES = 256 * 1024
#: The adaptive window's defaults (manager/linger.py): ~12 envelopes per message once the
#: rate fills a window of ``send_interval``.
LINGER_TARGET = 12
#: Share of the budget a fleet plans to spend (the rest absorbs bursts and management calls).
UTILISATION = 0.8
SECONDS_PER_MONTH = PRICES.hours_per_month * 3600


@dataclass(frozen=True, slots=True)
class Fleet:
    """A fleet in each region; rates are per node."""

    nodes: int
    emits_per_second: float
    regions: int = 1
    payload: int = 100
    room_share: float = 0.0
    #: subscriptions other than the nodes' (router, persist, webpubsub: 3 in the local stack)
    function_subscriptions: int = 0
    heartbeat_interval: float = 5.0
    subscription_check_interval: float = 60.0
    send_interval: float = 0.015
    #: a fixed batching window, seconds; None: the manager's default adaptive window
    window: float | None = None


def batch_size(emits_per_second: float, *, window: float | None, send_interval: float = 0.015,
               payload: int = 100) -> float:
    """Envelopes per Service Bus message at ``emits_per_second`` from one node."""
    cap = max(1.0, MAX_MESSAGE_BYTES // (payload + ENVELOPE_OVERHEAD))
    if window is None:  # the adaptive window: nothing below target/send_interval, then ~target
        b = 1.0 if emits_per_second * send_interval < LINGER_TARGET else float(LINGER_TARGET)
    else:
        b = max(1.0, emits_per_second * window)
    return min(b, cap)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Per namespace (one region) unless named otherwise."""

    credits_per_second: float
    credits_by_kind: dict[str, float]
    messages_per_emit: float
    operations_per_month: float
    standard_budget: float
    standard_holds: bool
    headroom: float  # share of the Standard budget left (negative: over)
    window_needed: float | None  # seconds; None: cannot fit by batching
    premium_mus: int | None  # None: more than 16
    standard_monthly_cost: float  # all regions
    premium_monthly_cost: float | None  # all regions
    room_share: float


def credits_per_message(fleet: Fleet) -> dict[str, float]:
    """What one emit message a node sends costs its namespace, with the copies the routers
    bring into the other regions' namespaces counted as if spent here (regions are symmetric)."""
    n, k, r = fleet.nodes, fleet.function_subscriptions, fleet.regions
    subs = n + k
    out = {"send": 1.0, "filter": float(subs), "receive": float(n - 1 + k), "management": 0.0}
    if r > 1:  # each other region forwards its emits here: a send, subs filters, n receives
        out["send"] += r - 1
        out["filter"] += (r - 1) * subs
        out["receive"] += (r - 1) * n
    return {kind: v * CREDITS[kind] for kind, v in out.items()}


def fixed_credits_per_second(fleet: Fleet) -> dict[str, float]:
    """What the fleet of one region spends with no emit: heartbeats and subscription checks."""
    n, subs = fleet.nodes, fleet.nodes + fleet.function_subscriptions
    beats = n / fleet.heartbeat_interval if fleet.heartbeat_interval > 0 else 0.0
    checks = n / fleet.subscription_check_interval if fleet.subscription_check_interval > 0 else 0.0
    return {"send": beats * CREDITS["send"], "filter": beats * subs * CREDITS["filter"],
            "receive": beats * (n - 1) * CREDITS["receive"], "management": checks * CREDITS["management"]}


def _per_second(fleet: Fleet, b: float) -> dict[str, float]:
    messages = fleet.nodes * fleet.emits_per_second / b  # emit messages per second from the region
    per_message = credits_per_message(fleet)
    fixed = fixed_credits_per_second(fleet)
    return {kind: messages * per_message[kind] + fixed[kind] for kind in per_message}


def _standard_cost(operations: float) -> float:
    cost = PRICES.standard_base_per_hour * PRICES.hours_per_month
    low = 0.0
    for upto, per_million in PRICES.standard_bands:
        if operations > low:
            cost += (min(operations, upto) - low) / 1e6 * per_million
        low = upto
    return float(cost)


def estimate(fleet: Fleet, *, credit_budget: float = CREDITS["per_second"]) -> Estimate:
    """Credits, operations and cost of ``fleet``, and what would make it fit ``credit_budget``."""
    if fleet.nodes < 1 or fleet.regions < 1 or fleet.emits_per_second < 0:
        raise ValueError("nodes >= 1, regions >= 1 and emits_per_second >= 0 are required")
    b = batch_size(fleet.emits_per_second, window=fleet.window, send_interval=fleet.send_interval,
                   payload=fleet.payload)
    kinds = _per_second(fleet, b)
    credits = sum(kinds.values())
    # billed operations: sends and receives (filters are not billed), management calls
    ops_per_second = kinds["send"] + kinds["receive"] + kinds["management"] / CREDITS["management"]
    chunks = max(1, math.ceil((fleet.payload + ENVELOPE_OVERHEAD) * b / (64 * 1024)))  # > 64 KB: several
    operations = ops_per_second * chunks * SECONDS_PER_MONTH
    mus = None
    for step in PRICES.premium_mu_steps:
        if credits <= step * PREMIUM_CREDITS_PER_MU * PREMIUM_MAX_CPU:
            mus = step
            break
    return Estimate(
        credits_per_second=credits,
        credits_by_kind=kinds,
        messages_per_emit=1.0 / b,
        operations_per_month=operations,
        standard_budget=credit_budget,
        standard_holds=credits <= credit_budget,
        headroom=1.0 - credits / credit_budget,
        window_needed=_window_needed(fleet, credit_budget),
        premium_mus=mus,
        standard_monthly_cost=_standard_cost(operations) * fleet.regions,
        premium_monthly_cost=(mus * PRICES.premium_mu_per_hour * PRICES.hours_per_month * fleet.regions
                              if mus else None),
        room_share=fleet.room_share,
    )


def _window_needed(fleet: Fleet, credit_budget: float) -> float | None:
    """The smallest fixed window with which the fleet spends at most UTILISATION of the budget."""
    if fleet.emits_per_second <= 0:
        return 0.0
    if sum(_per_second(fleet, 1.0).values()) <= credit_budget * UTILISATION:
        return 0.0
    cap = max(1.0, MAX_MESSAGE_BYTES // (fleet.payload + ENVELOPE_OVERHEAD))
    lo, hi = 1.0, cap
    if sum(_per_second(fleet, hi).values()) > credit_budget * UTILISATION:
        return None  # even full messages do not fit
    for _ in range(60):  # spend falls as the batch grows: bisect on the batch size
        mid = (lo + hi) / 2
        if sum(_per_second(fleet, mid).values()) > credit_budget * UTILISATION:
            lo = mid
        else:
            hi = mid
    return hi / fleet.emits_per_second


def window_for_budget(*, own_rate: float, nodes: int, subscriptions: int, receivers: int, budget: float,
                      utilisation: float = UTILISATION, fixed: float = 0.0) -> float:
    """The batching window (seconds) that keeps a fleet within its share of a credit budget.

    Each of ``nodes`` nodes is assumed to emit like this one (``own_rate`` envelopes/s); each
    message costs ``1 + subscriptions + receivers`` credits; ``fixed`` credits/s go to
    heartbeats and management. 0 when the fleet fits unbatched; the caller caps it (at
    ``send_interval``).
    """
    if own_rate <= 0 or budget <= 0:
        return 0.0
    per_message = 1 + subscriptions + receivers
    room = budget * utilisation - fixed
    if room <= 0:
        return math.inf
    b = nodes * own_rate * per_message / room  # envelopes per message needed
    return 0.0 if b <= 1 else b / own_rate


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def report(fleet: Fleet, est: Estimate) -> str:
    lines = [
        f"fleet: {fleet.nodes} node(s) in each of {fleet.regions} region(s), {fleet.emits_per_second:g} emits/s "
        f"per node, {fleet.payload} B payload, {fleet.function_subscriptions} function subscription(s)",
        f"batching: {est.messages_per_emit:.3f} Service Bus messages per emit "
        + ("(the default adaptive window)" if fleet.window is None else f"(window {fleet.window * 1e3:g} ms)"),
        f"credits per second per namespace: {est.credits_per_second:,.0f}  ("
        + ", ".join(f"{k} {v:,.0f}" for k, v in est.credits_by_kind.items()) + ")",
        f"operations per month per namespace: {est.operations_per_month / 1e6:,.1f} M",
        f"Standard ({est.standard_budget:,.0f} credits/s): "
        + (f"holds, {est.headroom:.0%} headroom" if est.standard_holds
           else f"does NOT hold: {-est.headroom:.0%} over budget, throttled"),
    ]
    if est.window_needed is None:
        lines.append("batching window needed to fit Standard: none fits (even full 256 KB messages are over); "
                     "use Premium or fewer nodes per namespace")
    elif est.window_needed == 0:
        lines.append(f"batching window needed to fit Standard at {UTILISATION:.0%}: none (fits unbatched)")
    else:
        note = "" if est.window_needed <= fleet.send_interval else \
            f" (above send_interval {fleet.send_interval * 1e3:g} ms: raise it, and credit_budget batches up to it)"
        lines.append(f"batching window needed to fit Standard at {UTILISATION:.0%}: "
                     f"{est.window_needed * 1e3:,.1f} ms{note}")
    lines.append(
        "Premium messaging units per namespace: "
        + (str(est.premium_mus) if est.premium_mus else "more than 16")
        + f" (assumption: 1 MU carries {PREMIUM_CREDITS_PER_MU:,} credit-equivalents/s at {PREMIUM_MAX_CPU:.0%} CPU; "
          "Microsoft publishes no such figure, measure yours)")
    lines.append(f"monthly cost, all {fleet.regions} namespace(s): Standard {_money(est.standard_monthly_cost)}, "
                 f"Premium {_money(est.premium_monthly_cost)}  [{PRICES.source}]")
    lines.append(f"room share {fleet.room_share:.0%}: no effect on Service Bus (node rules select by origin and "
                 "target node, not by room); it changes client deliveries only")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m socketio_servicebus.sizing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True, help="socket.io nodes per region")
    p.add_argument("--regions", type=int, default=1, help="regions, one namespace each (default 1)")
    p.add_argument("--emits-per-second", type=float, required=True, help="emits per second per node")
    p.add_argument("--payload", type=int, default=100, help="bytes per emit (default 100)")
    p.add_argument("--room-share", type=float, default=0.0, help="share of emits to rooms, 0..1 (default 0)")
    p.add_argument("--function-subscriptions", type=int, default=0,
                   help="subscriptions besides the nodes' (router, persist, webpubsub: 3; default 0)")
    p.add_argument("--window-ms", type=float, default=None, help="a fixed batching window (default: adaptive)")
    p.add_argument("--send-interval-ms", type=float, default=15.0, help="the manager's send_interval (default 15)")
    p.add_argument("--heartbeat-interval", type=float, default=5.0)
    p.add_argument("--credit-budget", type=float, default=CREDITS["per_second"],
                   help="credits per second per namespace (default 1000, Standard)")
    a = p.parse_args(argv)
    if a.nodes < 1 or a.regions < 1 or a.emits_per_second < 0 or not 0 <= a.room_share <= 1:
        p.error("--nodes and --regions >= 1, --emits-per-second >= 0, --room-share in 0..1")
    fleet = Fleet(nodes=a.nodes, emits_per_second=a.emits_per_second, regions=a.regions, payload=a.payload,
                  room_share=a.room_share, function_subscriptions=a.function_subscriptions,
                  heartbeat_interval=a.heartbeat_interval, send_interval=a.send_interval_ms / 1e3,
                  window=None if a.window_ms is None else a.window_ms / 1e3)
    print(report(fleet, estimate(fleet, credit_budget=a.credit_budget)))
    return 0

