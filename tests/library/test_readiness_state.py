"""The readiness state (pure): a throttled sender is still ready, and says why."""

from __future__ import annotations

from socketio_servicebus.manager.lifecycle import State
from socketio_servicebus.manager.readiness import Readiness, readiness
from socketio_servicebus.servicebus.transport import LinkHealth, ReceiverState, SenderState


def test_a_throttled_sender_is_ready_with_the_reason() -> None:
    link = LinkHealth(sender=SenderState.THROTTLED, receiver=ReceiverState.UP,
                      error="ServiceBusServerBusyError: ... Error code : 50009 ...")
    state = readiness(State.RUNNING, {}, link, write_only=False)
    assert state.ready and state.state is Readiness.READY
    assert state.reason is not None and state.reason.startswith("throttled: ") and "50009" in state.reason


def test_a_failed_sender_is_not_ready() -> None:
    link = LinkHealth(sender=SenderState.FAILED, receiver=ReceiverState.UP, error="ConnectionError: refused")
    state = readiness(State.RUNNING, {}, link, write_only=False)
    assert not state.ready and state.state is Readiness.NOT_CONNECTED


def test_up_is_ready_without_a_reason() -> None:
    state = readiness(State.RUNNING, {}, LinkHealth(sender=SenderState.UP, receiver=ReceiverState.UP), write_only=False)
    assert state.ready and state.reason is None
