"""Reconnect policy: a jittered exponential backoff and a retryable-or-fatal classifier."""

from __future__ import annotations

import random
from collections.abc import Iterator

from azure.core.exceptions import ClientAuthenticationError
from azure.servicebus.exceptions import (
    MessagingEntityDisabledError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusServerBusyError,
)

__all__ = ["THROTTLE_WAIT", "backoff", "is_entity_gone", "is_fatal", "is_throttled"]

#: Seconds a throttled namespace asks to wait ("Error code: 50009. Please wait 2 seconds and
#: try again.").
THROTTLE_WAIT = 2.0


def backoff(initial: float = 1.0, maximum: float = 30.0, factor: float = 2.0, jitter: float = 0.2) -> Iterator[float]:
    """Delays ``initial, initial*factor, ...`` capped at ``maximum``, each scaled by ``1 ± jitter``."""
    delay = initial
    while True:
        yield delay * (1.0 + random.uniform(-jitter, jitter))
        delay = min(delay * factor, maximum)


def is_entity_gone(exc: BaseException) -> bool:
    """The subscription (or topic) does not exist: recreate it rather than just reconnect."""
    return isinstance(exc, MessagingEntityNotFoundError)


def is_throttled(exc: BaseException) -> bool:
    """Service Bus refused the operation because the namespace is out of credits (Standard
    tier throttling, ``com.microsoft:server-busy``): wait :data:`THROTTLE_WAIT`, keep the link."""
    return isinstance(exc, ServiceBusServerBusyError)


def is_fatal(exc: BaseException) -> bool:
    """Errors that retrying will not fix (bad credentials, missing rights, disabled entity).

    The manager still retries them, slowly, because operators fix such things at runtime;
    it only logs them at error level and shows them in ``health()``.
    """
    return isinstance(
        exc,
        (ServiceBusAuthenticationError, ServiceBusAuthorizationError, ClientAuthenticationError,
         MessagingEntityDisabledError),
    )
