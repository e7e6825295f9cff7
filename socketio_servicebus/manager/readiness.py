"""Whether the manager is ready, as one explicit state with its reason (pure, no I/O).

It is derived, never stored: from the lifecycle, the supervised tasks that died, and the links'
health (:class:`~socketio_servicebus.servicebus.transport.LinkHealth`). The first that applies:

* ``STOPPED``: the lifecycle is not ``running`` (new, closing, closed);
* ``TASK_FAILED``: a background task died (it is restarted);
* ``NOT_CONNECTED``: the sender (or, unless write-only, the receiver) is not up;
* ``NO_SUBSCRIPTION``: connected, but the own subscription is not there;
* ``READY``; a throttled sender (the namespace out of credits) is still ready: the outbox
  waits and resends, and the reason shows (``throttled: ...``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from socketio_servicebus.manager.lifecycle import State
from socketio_servicebus.servicebus.transport import LinkHealth, ReceiverState, SenderState

__all__ = ["Readiness", "ReadinessState", "health_report", "readiness"]


class Readiness(enum.Enum):
    READY = "ready"
    STOPPED = "stopped"
    TASK_FAILED = "task-failed"
    NOT_CONNECTED = "not-connected"
    NO_SUBSCRIPTION = "no-subscription"


@dataclass(frozen=True, slots=True)
class ReadinessState:
    state: Readiness
    #: why not ready (``None`` when ready, unless ready but throttled)
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.state is Readiness.READY


def connected(link: LinkHealth, write_only: bool) -> bool:
    return link.sender in (SenderState.UP, SenderState.THROTTLED) and (write_only or link.receiver is ReceiverState.UP)


def readiness(life: State, failures: Mapping[str, str], link: LinkHealth, *, write_only: bool) -> ReadinessState:
    if life is not State.RUNNING:
        return ReadinessState(Readiness.STOPPED, f"manager {life.value}")
    if failures:
        return ReadinessState(Readiness.TASK_FAILED, "background task died: "
                              + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())))
    suffix = f": {link.error}" if link.error else ""
    if not connected(link, write_only):
        return ReadinessState(Readiness.NOT_CONNECTED, "servicebus not connected" + suffix)
    if not (write_only or link.subscription_ready):
        return ReadinessState(Readiness.NO_SUBSCRIPTION, "subscription not ready" + suffix)
    if link.sender is SenderState.THROTTLED:
        return ReadinessState(Readiness.READY, "throttled" + suffix)
    return ReadinessState(Readiness.READY)


def health_report(life: State, failures: Mapping[str, str], link: LinkHealth, *, write_only: bool,
                  buffered: int) -> dict[str, Any]:
    """The manager's ``health()`` dict: the readiness with its reason, and what it derives from."""
    ready = readiness(life, failures, link, write_only=write_only)
    return {
        "state": life.value,
        "readiness": ready.state.value,
        "connected": connected(link, write_only),
        "subscription_ready": link.subscription_ready,
        "last_error": link.error,
        "failed_tasks": dict(failures),
        "ready": ready.ready,
        "reason": ready.reason,
        "buffered": buffered,
        "throttled": link.sender is SenderState.THROTTLED,
    }
