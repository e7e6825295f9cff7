"""The outbox's adaptive batch window (:class:`Linger`): pure rules on a fake clock."""

from __future__ import annotations

import pytest

from socketio_servicebus.manager.linger import Linger


def feed(lg: Linger, rate: float, seconds: float, start: float = 0.0) -> float:
    """Arrivals at a steady ``rate``/s for ``seconds``; returns the time of the last one."""
    n = int(rate * seconds)
    t = start
    for i in range(n):
        t = start + i / rate
        lg.arrived(t)
    return t


def test_idle_node_sends_at_once() -> None:
    lg = Linger(0.015)
    assert lg.rate(0.0) == 0.0
    assert lg.window(0.0) == 0.0
    lg.arrived(10.0)
    assert lg.wait(10.0, 10.0, 1) == 0.0


@pytest.mark.parametrize("rate", [50, 100, 300, 600])
def test_below_threshold_no_window(rate: float) -> None:
    # 12 envelopes / 15 ms = 800/s: below that nothing waits for companions
    lg = Linger(0.015)
    t = feed(lg, rate, 2.0)
    assert lg.rate(t) == pytest.approx(rate, rel=0.15)
    assert lg.window(t) == 0.0
    assert lg.wait(t, t, 1) == 0.0


@pytest.mark.parametrize("rate", [1000, 1200, 5000])
def test_high_rate_window_gathers_target(rate: float) -> None:
    lg = Linger(0.015)
    t = feed(lg, rate, 1.0)
    w = lg.window(t)
    assert 0.0 < w <= 0.015
    assert rate * w == pytest.approx(lg.target, rel=0.15)  # about 12 envelopes per message
    # counted from the oldest waiting envelope
    assert lg.wait(t, t - 0.002, 1) == pytest.approx(w - 0.002)
    assert lg.wait(t, t - 1.0, 1) == 0.0


def test_window_shrinks_as_rate_grows() -> None:
    ws = []
    for rate in (900, 1500, 3000, 10_000):
        lg = Linger(0.015)
        ws.append(lg.window(feed(lg, rate, 0.5)))
    assert ws == sorted(ws, reverse=True)
    assert all(0 < w <= 0.015 for w in ws)


def test_full_batch_leaves_at_once() -> None:
    lg = Linger(0.015)
    t = feed(lg, 2000, 1.0)
    assert lg.wait(t, t, lg.target - 1) > 0.0
    assert lg.wait(t, t, lg.target) == 0.0


def test_window_never_exceeds_budget() -> None:
    lg = Linger(0.004, target=12)  # 3,000/s threshold
    t = feed(lg, 2000, 1.0)
    assert lg.window(t) == 0.0
    t = feed(lg, 10_000, 1.0, start=t + 0.001)
    assert 0.0 < lg.window(t) <= 0.004


def test_rate_decays_after_burst() -> None:
    lg = Linger(0.015)
    t = feed(lg, 5000, 0.2)
    assert lg.window(t) > 0.0
    # 0.5 s of silence (5 time constants): the next envelope leaves at once
    t += 0.5
    lg.arrived(t)
    assert lg.window(t) == 0.0


def test_zero_budget_disables() -> None:
    lg = Linger(0.0)
    t = feed(lg, 10_000, 0.5)
    assert lg.window(t) == 0.0
    assert lg.wait(t, t, 1) == 0.0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Linger(-1.0)
    with pytest.raises(ValueError):
        Linger(0.01, target=0)


def busy_link(lg: Linger, until: float, share: float, period: float = 0.004) -> None:
    """Sends in flight ``share`` of the time up to ``until``."""
    t = until - 1.0
    while t < until:
        lg.sent(t, t + period * share)
        t += period


def test_saturated_link_gets_a_window_below_the_rate_threshold() -> None:
    lg = Linger(0.015)
    t = feed(lg, 300, 1.0)
    busy_link(lg, t, 0.95)
    assert lg.utilisation(t) > 0.8
    assert lg.window(t) == 0.015  # 12 envelopes would take 40 ms at 300/s: the budget caps it


def test_half_busy_link_sends_at_once() -> None:
    lg = Linger(0.015)
    t = feed(lg, 300, 1.0)
    busy_link(lg, t, 0.5)
    assert 0.3 < lg.utilisation(t) < 0.7
    assert lg.window(t) == 0.0


def test_utilisation_decays_when_sends_stop() -> None:
    lg = Linger(0.015)
    busy_link(lg, 1.0, 1.0)
    assert lg.utilisation(1.0) > 0.9
    assert lg.utilisation(1.5) < 0.01
    lg.arrived(1.5)
    assert lg.window(1.5) == 0.0


def test_saturation_has_hysteresis() -> None:
    lg = Linger(0.015)
    t = feed(lg, 300, 1.0)
    busy_link(lg, t, 0.95)
    assert lg.window(t) == 0.015
    # lingering lowers the share of busy time (5 ms sends every 15 ms): still saturated
    t2 = feed(lg, 300, 1.0, start=t + 0.001)
    busy_link(lg, t2, 0.33, period=0.015)
    assert 0.24 < lg.utilisation(t2) < 0.8
    assert lg.window(t2) == 0.015
    # fast sends again (2 ms every 20 ms): back to sending at once
    t3 = feed(lg, 300, 1.0, start=t2 + 0.001)
    busy_link(lg, t3, 0.1, period=0.02)
    assert lg.utilisation(t3) < 0.24
    assert lg.window(t3) == 0.0
