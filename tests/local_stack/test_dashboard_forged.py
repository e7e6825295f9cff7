"""``forged_dropped`` by reason: from the manager's snapshot through the Prometheus exposition to
the dashboard's numbers (pure: the real exporter and parser)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from local_stack.dashboard import parse_metrics
from local_stack.dashboard.collector import FORGED
from relay_node.metrics import translate_snapshot


class _Snap:
    def __init__(self, snapshot: dict[str, float]) -> None:
        self.snapshot = snapshot

    def collect(self):  # type: ignore[no-untyped-def]
        return translate_snapshot(self.snapshot)


def exposition(snapshot: dict[str, float]) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Snap(snapshot))  # type: ignore[arg-type]
    return generate_latest(reg).decode()


def test_forged_dropped_is_one_counter_with_a_reason_label() -> None:
    text = exposition({"forged_dropped{reason=unsigned}": 3, "forged_dropped{reason=not-own-sockets}": 2,
                       "envelopes_received": 7})
    assert 'socketio_servicebus_forged_dropped_total{reason="unsigned"} 3.0' in text
    assert 'socketio_servicebus_forged_dropped_total{reason="not-own-sockets"} 2.0' in text
    values = parse_metrics(text)
    assert values[FORGED] == 5.0
    assert values[FORGED + "{reason=unsigned}"] == 3.0
    assert values["socketio_servicebus_envelopes_received_total"] == 7.0


def test_the_family_is_there_before_the_first_drop() -> None:
    text = exposition({"envelopes_received": 1})
    assert "# TYPE socketio_servicebus_forged_dropped_total counter" in text
    assert parse_metrics(text).get(FORGED, 0.0) == 0.0
