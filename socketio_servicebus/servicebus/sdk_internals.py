"""The only reads of azure-servicebus private attributes, each with a measured fallback.

``tests/library/test_sdk_internals.py`` pins what is read here against the installed SDK and
fails by name when an SDK upgrade moves it; at run time a failed read counts
``sdk_probe_failures``, logs one warning, and the manager falls back to the public API only.
"""

from __future__ import annotations

import logging
from typing import Any

from socketio_servicebus.metrics import ManagerMetrics

__all__ = ["PrefetchProbe", "prefetched_count"]


def prefetched_count(receiver: Any) -> int:
    """Messages already in an open aio receiver's prefetch buffer (pyamqp: a ``queue.Queue``).

    ``0`` while the receiver has no AMQP handler: the SDK sets ``_handler`` to ``None`` before the
    first open and again when the connection drops or the receiver closes, and nothing is
    buffered then. Raises ``AttributeError``/``TypeError`` if the SDK no longer keeps it where it did.
    """
    handler = receiver._handler
    if handler is None:
        return 0
    return int(handler._received_messages.qsize())


class PrefetchProbe:
    """:func:`prefetched_count`, capped at ``limit``; ``0`` (and measured) when it cannot tell.

    A receive call asking for no more than these returns at once without waiting; asking for
    more would make the SDK wait up to 0.2 s for the rest, hence the exact count. The fallback
    (``0``: one message per receive call) is correct, only slower.
    """

    def __init__(self, metrics: ManagerMetrics, logger: logging.Logger, limit: int) -> None:
        self.metrics = metrics
        self.logger = logger
        self.limit = limit
        self._warned = False

    def __call__(self, receiver: Any, *, capped: bool = True) -> int:
        try:
            n = prefetched_count(receiver)
            return min(n, self.limit) if capped else n
        except (AttributeError, TypeError, ValueError) as exc:
            self.metrics.sdk_probe_failures += 1
            if not self._warned:
                self._warned = True
                self.logger.warning(
                    "azure-servicebus internals changed (%s: %s): receiving one message per call; "
                    "see socketio_servicebus/servicebus/sdk_internals.py", type(exc).__name__, exc)
            return 0
