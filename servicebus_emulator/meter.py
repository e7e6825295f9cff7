"""Service Bus's credit meter, as Azure's Standard tier charges it, and the connection quota.

No I/O: time comes from the clock the namespace was built with; the adapters charge it.

Azure's Standard tier throttles each namespace by credits (Microsoft's "Throttling operations
on Azure Service Bus", service-bus-throttling): 1,000 credits per second, refilled each second.

================================  =========================================================
operation                         credits
================================  =========================================================
message sent (also scheduled)     1 per message
message received                  1 per message (settlements are free)
message peeked                    1 per message (an empty peek: 1)
filter evaluation                 1 per rule of every subscription a topic message meets
management operation              10 (admin API create/read/update/delete, any entity)
================================  =========================================================

An operation that finds no credit left is refused with ``com.microsoft:server-busy`` and the
service's own text ("... is being throttled. Error code : 50009. Please wait 2 seconds and try
again."), so the SDK raises ``ServiceBusServerBusyError`` and retries with its own policy. A
refused operation costs nothing. An admitted one is charged in full, even past the balance;
the debt is carried into the next seconds (a batch of 6,000 credits throttles the next five).

Deliveries to receiver links are charged but never withheld (the emulator's one difference:
Azure refuses a throttled receive request; here the balance goes down and the next send is
refused). The Premium tier meters the same way and never refuses.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import QuotaExceeded, ServerBusy

__all__ = [
    "COSTS",
    "DEFAULT_CREDITS_PER_SECOND",
    "DEFAULT_MAX_CONNECTIONS",
    "HISTORY_SECONDS",
    "Meter",
    "Op",
    "Tier",
]


class Tier(enum.Enum):
    STANDARD = "standard"
    PREMIUM = "premium"


class Op(enum.Enum):
    SEND = "send"
    RECEIVE = "receive"
    PEEK = "peek"
    FILTER = "filter"
    MANAGEMENT = "management"


#: credits per operation (per message for data operations, per evaluation for filters)
COSTS: Mapping[Op, int] = {Op.SEND: 1, Op.RECEIVE: 1, Op.PEEK: 1, Op.FILTER: 1, Op.MANAGEMENT: 10}
DEFAULT_CREDITS_PER_SECOND = 1000
DEFAULT_MAX_CONNECTIONS = 5000
#: seconds of per-second history ``snapshot()`` keeps
HISTORY_SECONDS = 60


@dataclass
class _Second:
    second: int
    used: int = 0
    refused: int = 0
    refused_operations: int = 0


@dataclass
class _Tally:
    used: int = 0
    refused: int = 0
    operations: int = 0
    refused_operations: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"used": self.used, "refused": self.refused, "operations": self.operations,
                "refused_operations": self.refused_operations}


@dataclass
class Meter:
    """The credit meter of one namespace."""

    clock: Callable[[], float]
    tier: Tier = Tier.PREMIUM
    credits_per_second: int = DEFAULT_CREDITS_PER_SECOND
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    connections: int = 0
    refused_connections: int = 0
    _balance: float = field(default=0.0, init=False)
    _second: int = field(default=-1, init=False)
    _history: deque[_Second] = field(default_factory=lambda: deque(maxlen=HISTORY_SECONDS), init=False)
    _by_kind: dict[Op, _Tally] = field(default_factory=dict, init=False)
    _by_entity: dict[str, dict[Op, _Tally]] = field(default_factory=dict, init=False)
    _total: _Tally = field(default_factory=_Tally, init=False)

    def __post_init__(self) -> None:
        if self.credits_per_second < 1:
            raise ValueError("credits_per_second must be at least 1")
        self._balance = float(self.credits_per_second)

    @property
    def throttles(self) -> bool:
        return self.tier is Tier.STANDARD

    def _now(self) -> _Second:
        second = int(self.clock())
        if second != self._second:
            elapsed = max(second - self._second, 1) if self._second >= 0 else 1
            self._balance = min(float(self.credits_per_second), self._balance + elapsed * self.credits_per_second)
            self._second = second
            self._history.append(_Second(second))
        return self._history[-1]

    def balance(self) -> float:
        """Credits left in this second (negative: debt carried from an oversized operation)."""
        self._now()
        return self._balance

    def charge(self, entity: str, counts: Mapping[Op, int], *, refusable: bool = True) -> None:
        """Charge one operation on ``entity``: ``counts`` messages/evaluations per kind.

        Raises :class:`ServerBusy` (and charges nothing) when the tier throttles, the
        operation is ``refusable`` and no credit is left this second."""
        now = self._now()
        cost = sum(COSTS[op] * n for op, n in counts.items())
        per_entity = self._by_entity.setdefault(entity, {})
        if refusable and self.throttles and self._balance <= 0:
            now.refused += cost
            now.refused_operations += 1
            self._total.refused += cost
            self._total.refused_operations += 1
            for op, n in counts.items():
                for tally in (self._by_kind.setdefault(op, _Tally()), per_entity.setdefault(op, _Tally())):
                    tally.refused += COSTS[op] * n
                    tally.refused_operations += 1
            raise ServerBusy(
                f"The request was terminated because the entity is being throttled. Error code : 50009. "
                f"Please wait 2 seconds and try again. (emulator: namespace credits "
                f"{self.credits_per_second}/s used up; this operation costs {cost})"
            )
        self._balance -= cost
        now.used += cost
        self._total.used += cost
        self._total.operations += 1
        for op, n in counts.items():
            for tally in (self._by_kind.setdefault(op, _Tally()), per_entity.setdefault(op, _Tally())):
                tally.used += COSTS[op] * n
                tally.operations += 1

    # -- connections ------------------------------------------------------------------------
    def connection_opened(self) -> None:
        """Admit one more connection, or raise :class:`QuotaExceeded` at ``max_connections``."""
        if self.connections >= self.max_connections:
            self.refused_connections += 1
            raise QuotaExceeded(
                f"The maximum number of connections ({self.max_connections}) for this namespace has been "
                f"reached; close a connection first."
            )
        self.connections += 1

    def connection_closed(self) -> None:
        self.connections = max(self.connections - 1, 0)

    # -- report -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Credits used and refused: in total, by operation kind, by entity and per second
        (the last ``HISTORY_SECONDS`` seconds with activity or refills, oldest first)."""
        self._now()
        return {
            "tier": self.tier.value,
            "credits_per_second": self.credits_per_second,
            "throttles": self.throttles,
            "balance": self._balance,
            "total": self._total.as_dict(),
            "by_kind": {op.value: tally.as_dict() for op, tally in self._by_kind.items()},
            "by_entity": {
                entity: {op.value: tally.as_dict() for op, tally in kinds.items()}
                for entity, kinds in self._by_entity.items()
            },
            "per_second": [
                {"second": s.second, "used": s.used, "refused": s.refused, "refused_operations": s.refused_operations}
                for s in self._history
            ],
            "connections": {"open": self.connections, "max": self.max_connections,
                            "refused": self.refused_connections},
        }
