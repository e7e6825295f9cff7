"""Per-socket event rate limits: one token bucket per connection, checked before every app handler.

Each connection may send ``burst`` events at once and ``rate`` per second on average, across all
events and namespaces. Over the limit, the event does not reach the app: the client gets
``{"error": "rate limited: ...", "event", "retryAfter"}`` as the answer (ack), plus one ``error``
event at the start of a refused run, and :attr:`RateLimiter.limited` counts it. A connection
refused ``disconnect_after`` times in a row is disconnected (:attr:`RateLimiter.disconnected`).

The defaults (20/s, burst 60, disconnect after 100 in a row) are far above what the demo page
sends (a person typing; one ``join`` and one history token per room on a reconnect).

Like the connect guard (:mod:`relay_node.guard`), this wraps the handlers registered through
python-socketio's public ``sio.on`` once the apps are set up: install it last. Handlers of the
``"*"`` namespace and class-based namespaces are not wrapped.
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RateLimiter", "TokenBucket", "Verdict", "install_rate_limit"]

log = logging.getLogger("relay_node.ratelimit")

ENVIRON_KEY = "relay.bucket"
_UNLIMITED_EVENTS = frozenset({"connect", "disconnect"})


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"
    DISCONNECT = "disconnect"


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    stamp: float
    #: events refused since the last one allowed
    refused_in_row: int = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused_in_row = 0
            return True
        self.refused_in_row += 1
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate) if self.rate > 0 else 0.0


class RateLimiter:
    def __init__(self, *, rate: float, burst: float, disconnect_after: int,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, burst)
        self.disconnect_after = disconnect_after
        self.clock = clock
        self.limited = 0
        self.disconnected = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def bucket(self, environ: dict[str, Any]) -> TokenBucket:
        bucket = environ.get(ENVIRON_KEY)
        if not isinstance(bucket, TokenBucket):
            bucket = environ[ENVIRON_KEY] = TokenBucket(self.rate, self.burst, self.burst, self.clock())
        return bucket

    def check(self, environ: dict[str, Any]) -> Verdict:
        bucket = self.bucket(environ)
        if bucket.take(self.clock()):
            return Verdict.ALLOW
        self.limited += 1
        if self.disconnect_after and bucket.refused_in_row >= self.disconnect_after:
            if bucket.refused_in_row == self.disconnect_after:
                self.disconnected += 1
            return Verdict.DISCONNECT
        return Verdict.REFUSE


def install_rate_limit(sio: Any, limiter: RateLimiter) -> int:
    """Wrap every event handler of the named namespaces; returns how many were wrapped."""
    if not limiter.enabled:
        return 0
    handlers: dict[str, dict[str, Any]] = sio.handlers
    wrapped = 0
    for ns, events in handlers.items():
        if ns == "*":
            continue
        for event, fn in list(events.items()):
            if event in _UNLIMITED_EVENTS:
                continue
            sio.on(event, _limited(sio, limiter, ns, event, fn), namespace=ns)
            wrapped += 1
    return wrapped


def _limited(sio: Any, limiter: RateLimiter, ns: str, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    sid_at = 1 if event == "*" else 0  # a catch-all handler gets (event, sid, *data)

    async def handler(*args: Any) -> Any:
        sid = args[sid_at]
        try:
            environ = sio.get_environ(sid, namespace=ns)
        except KeyError:
            environ = None
        if environ is None:
            return None  # the connection is gone (a flood's tail after a disconnect)
        verdict = limiter.check(environ)
        if verdict is Verdict.ALLOW:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        name = args[0] if event == "*" else event
        bucket = limiter.bucket(environ)
        error = {"error": f"rate limited: at most {limiter.rate:g} events per second (burst {limiter.burst:g})",
                 "event": name, "retryAfter": round(bucket.retry_after(), 3)}
        if verdict is Verdict.DISCONNECT:
            if bucket.refused_in_row == limiter.disconnect_after:
                log.warning("disconnecting %s: %d events refused in a row by the rate limit", sid,
                            bucket.refused_in_row)
                await sio.emit("error", {**error, "error": "rate limited: disconnected"}, to=sid, namespace=ns)
                await sio.disconnect(sid, namespace=ns)
            return error
        if bucket.refused_in_row == 1:  # one error event per refused run, not one per refused event
            await sio.emit("error", error, to=sid, namespace=ns)
        return error

    return handler
