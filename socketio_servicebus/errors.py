"""Every public exception of the library, in one module at the bottom of the layers.

It imports nothing from the project, so every layer may import it (``docs/architecture.md``).
The modules that raised these before still re-export them under their old names
(``socketio_servicebus.wire.codec.EnvelopeError``, ``...manager.lifecycle.ManagerClosed``, ...).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConnectionSettingsError",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "IncompleteResult",
    "KeyConfigError",
    "ManagerClosed",
    "PartialSendError",
    "TokenError",
    "TunnelError",
]


# ---------------------------------------------------------------------- wire
class EnvelopeError(ValueError):
    """Invalid envelope or batch.

    ``reason`` is a short machine-friendly code (``"not-json"``,
    ``"bad-version"``, ``"bad-field:kind"``, ...); ``description`` is a
    human-readable explanation.  ``str(exc)`` is ``"<reason>: <description>"``.
    """

    def __init__(self, reason: str, description: str = "") -> None:
        self.reason = reason
        self.description = description or reason
        super().__init__(f"{reason}: {self.description}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable (e.g. across process pools)
        return (type(self), (self.reason, self.description))


class EnvelopeTooLarge(EnvelopeError):
    """A single envelope does not fit in one message (reason ``too-large``)."""

    def __init__(self, description: str = "", size: int = 0, limit: int = 0) -> None:
        super().__init__("too-large", description or f"{size} bytes > limit {limit}")
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.description, self.size, self.limit))


# ---------------------------------------------------------------------- connection settings and tunnel
class ConnectionSettingsError(ValueError):
    """A connection string or namespace setting that cannot work; the message says what to fix."""


class TunnelError(ConnectionError):
    """The proxy did not open the tunnel; the message says what it answered."""


# ---------------------------------------------------------------------- manager
class ManagerClosed(RuntimeError):
    """The manager is closing or closed: the emit (or request) was not queued."""


class IncompleteResult(TimeoutError):
    """``fetch_sockets`` / ``server_side_emit`` with ``raise_on_missing=True``: some nodes did not
    answer in time.

    ``result`` is the partial :class:`~socketio_servicebus.manager.results.ClusterResult` (the
    answers that arrived); ``missing`` (also ``result.missing``) names the nodes. A
    ``TimeoutError``, so ``except TimeoutError`` catches it too.
    """

    def __init__(self, op: str, result: Any) -> None:
        self.result = result
        self.missing: tuple[str, ...] = tuple(result.missing)
        super().__init__(
            f"{op}: no answer from node(s) {', '.join(self.missing)} within {result.elapsed:.1f}s "
            f"({len(result)} item(s) from the others)"
        )


class PartialSendError(Exception):
    """The transport finished the first ``len(done)`` messages (see
    :data:`socketio_servicebus.manager.outbox.SendResult`), then failed with ``cause``; the
    rest were not sent."""

    def __init__(self, done: list[str | None], cause: BaseException) -> None:
        super().__init__(f"{len(done)} message(s) finished, then {type(cause).__name__}: {cause}")
        self.done = done
        self.cause = cause


# ---------------------------------------------------------------------- history tokens
class KeyConfigError(ValueError):
    """A history token key that cannot be used (too short); the message names the setting."""


class TokenError(Exception):
    """A refused token. ``status`` is 401 (not a valid token) or 403 (valid, but not for this room)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
