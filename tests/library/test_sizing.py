"""The sizing model (socketio_servicebus/sizing.py): formulas on known cases, and the command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from socketio_servicebus import sizing
from socketio_servicebus.sizing import Fleet, batch_size, estimate, window_for_budget


def test_one_message_in_the_local_stack_costs_about_ten_credits() -> None:
    # 2 nodes + router, persist, webpubsub: 1 send, 5 filter evaluations, 4 receives (issue 22)
    fleet = Fleet(nodes=2, emits_per_second=1.0, function_subscriptions=3, heartbeat_interval=0,
                  subscription_check_interval=0)
    kinds = estimate(fleet).credits_by_kind
    assert kinds == {"send": 2.0, "filter": 10.0, "receive": 8.0, "management": 0.0}


def test_a_second_region_costs_as_much_again_there() -> None:
    one = Fleet(nodes=2, emits_per_second=10.0, function_subscriptions=3, heartbeat_interval=0,
                subscription_check_interval=0)
    two = Fleet(nodes=2, emits_per_second=10.0, regions=2, function_subscriptions=3, heartbeat_interval=0,
                subscription_check_interval=0)
    # forwarded: 1 send + 5 filters + 2 receives per emit, 20 emits/s from the other region
    assert estimate(two).credits_per_second == estimate(one).credits_per_second + 20 * (1 + 5 + 2)


def test_batch_size_follows_the_adaptive_window_and_the_size_cap() -> None:
    assert batch_size(100, window=None) == 1  # 100/s x 15 ms < 12: no window
    assert batch_size(1000, window=None) == 12
    assert batch_size(1000, window=0.05) == 50
    assert batch_size(1000, window=10, payload=200_000) == 1  # one such envelope per 256 KB message
    assert batch_size(1000, window=10, payload=60_000) == 4


def test_twenty_chat_nodes_overrun_standard_and_batching_fixes_it() -> None:
    fleet = Fleet(nodes=20, emits_per_second=5)
    est = estimate(fleet)
    assert not est.standard_holds and est.headroom < 0
    assert est.window_needed is not None and est.window_needed > 0.5
    fixed = estimate(Fleet(nodes=20, emits_per_second=5, window=est.window_needed))
    assert fixed.credits_per_second <= 1000 * sizing.UTILISATION * 1.001
    assert fixed.standard_holds


def test_standard_cost_bands() -> None:
    base = sizing.PRICES.standard_base_per_hour * sizing.PRICES.hours_per_month
    assert sizing._standard_cost(13e6) == pytest.approx(base)
    assert sizing._standard_cost(100e6) == pytest.approx(base + 87 * 0.80)
    assert sizing._standard_cost(200e6) == pytest.approx(base + 87 * 0.80 + 100 * 0.50)


def test_window_for_budget() -> None:
    # 10 nodes x 100 emits/s, 10 + 9 + 1 = 20 credits per message: 20,000 credits/s unbatched
    w = window_for_budget(own_rate=100, nodes=10, subscriptions=10, receivers=9, budget=1000)
    assert w == pytest.approx(25 / 100)  # 25 envelopes per message -> 800 credits/s
    assert window_for_budget(own_rate=1, nodes=2, subscriptions=2, receivers=1, budget=1000) == 0.0
    assert window_for_budget(own_rate=1, nodes=2, subscriptions=2, receivers=1, budget=10, fixed=9) == float("inf")


def test_the_command_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "socketio_servicebus.sizing", "--nodes", "20", "--regions", "2",
         "--emits-per-second", "5", "--payload", "200", "--room-share", "0.3"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    for needle in ("credits per second per namespace", "operations per month", "Standard (1,000 credits/s)",
                   "batching window needed", "Premium messaging units", "assumption", "monthly cost",
                   "azure.microsoft.com/pricing", "room share 30%"):
        assert needle in out, needle


def test_credit_governor_widens_the_window_as_the_fleet_spends_more() -> None:
    from socketio_servicebus.manager.credits import CreditGovernor

    gov = CreditGovernor(1000, cap=2.0, heartbeat_interval=0, subscription_check_interval=0)
    assert gov.update(0.0, 0, nodes=20) == 0.0  # first reading: no rate yet
    queued, windows = 0, []
    for step in range(1, 41):  # 5 emits/s from this node for 20 s
        queued += 5 // 2 + (step % 2)
        windows.append(gov.update(step * 0.5, queued, nodes=20))
    assert gov.rate == pytest.approx(5, rel=0.1)
    # 20 nodes x 5/s, 40 credits a message: 4,000 credits/s unbatched; 800 allowed -> 5 per message
    assert windows[-1] == pytest.approx(1.0, rel=0.15)
    assert gov.update(20.5, queued, nodes=2) == 0.0 or gov.update(21.0, queued, nodes=2) < 0.05  # a small fleet fits
    capped = CreditGovernor(1000, cap=0.015, heartbeat_interval=0, subscription_check_interval=0)
    capped.update(0.0, 0, nodes=20)
    assert capped.update(1.0, 5, nodes=20) <= 0.015  # never beyond send_interval
