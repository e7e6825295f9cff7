"""The manager's lifecycle as one explicit state (pure, no I/O).

::

    NEW --start()--> RUNNING --close()--> CLOSING --> CLOSED
     |                                                  ^
     +------------------close()-------------------------+

``start()`` builds the SDK client before it leaves ``NEW``: if that raises (a connection string
that cannot work), the manager stays ``NEW`` and the next ``start()`` tries again. Once
``RUNNING``, a namespace that cannot be reached is not a lifecycle matter: the background tasks
retry with backoff and :meth:`~socketio_servicebus.ServiceBusManager.health` says why it is not
ready. ``CLOSING`` and ``CLOSED`` refuse new work with :class:`ManagerClosed`.
"""

from __future__ import annotations

import enum

from socketio_servicebus.errors import ManagerClosed

__all__ = ["Lifecycle", "ManagerClosed", "State"]


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.RUNNING, State.CLOSED}),
    State.RUNNING: frozenset({State.CLOSING}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Lifecycle:
    """Holds the state; every transition goes through :meth:`to`, which refuses illegal ones."""

    __slots__ = ("state", "what")

    def __init__(self, what: str = "ServiceBusManager") -> None:
        self.state = State.NEW
        self.what = what

    def to(self, new: State) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"{self.what}: no transition from {self.state.value} to {new.value}")
        self.state = new

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def stopping(self) -> bool:
        """Closing or closed: no new work is accepted."""
        return self.state in (State.CLOSING, State.CLOSED)

    def check_open(self, action: str) -> None:
        """Raise :class:`ManagerClosed` if ``action`` comes after :meth:`close` began."""
        if self.stopping:
            raise ManagerClosed(f"{self.what} is {self.state.value}: cannot {action}")
