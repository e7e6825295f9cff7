"""Errors the emulator raises, each carrying the AMQP condition Service Bus answers with.

The AMQP adapter and the admin HTTP surface translate these at one point each, so that
the unmodified ``azure-servicebus`` SDK raises the same exception types it raises against
Azure (``MessagingEntityNotFoundError``, ``ServiceBusQuotaExceededError``,
``MessageLockLostError``, ``ServiceBusAuthenticationError`` ...).

Two errors stop the emulator before it serves, and carry no AMQP condition:
:class:`ConfigError` (the configuration file) and :class:`DataDirError` (``--data-dir``).
The command line prints them and exits with code 2.

::

    EmulatorError                 an AMQP condition and an HTTP status
      InternalError, EntityNotFound, EntityExists, QuotaExceeded, MessageTooLarge,
      LockLost, MessageNotFound, Unauthorized, NotImplementedOperation, MethodNotAllowed,
      ServerBusy, BadRequest, SessionLockLost, SessionCannotBeLocked, OperationTimeout, InvalidOperation
        DecodeError                 a transfer that is not a well-formed AMQP message
        FilterError (ValueError)    a SQL or correlation filter, or a rule action
        AdminXmlError               an admin API request body
          BodyTooLarge              ... over the size limit (HTTP 413)
    ConfigError (ValueError)      the configuration is not usable
    DataDirError                  the data dir cannot be used
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Base error. ``condition`` is the AMQP error symbol, ``status`` the HTTP-ish status."""

    condition = "amqp:internal-error"
    status = 500


class InternalError(EmulatorError):
    """Something the emulator failed at; the request fails alone, the connection stays up."""


class EntityNotFound(EmulatorError):
    condition = "amqp:not-found"
    status = 404


class EntityExists(EmulatorError):
    condition = "com.microsoft:entity-already-exists"
    status = 409


class QuotaExceeded(EmulatorError):
    condition = "amqp:resource-limit-exceeded"
    status = 403


class ServerBusy(EmulatorError):
    """The namespace's credits are used up (Standard tier throttling, error code 50009); the SDK
    raises ``ServiceBusServerBusyError`` and retries; the admin API answers 429 with Retry-After."""

    condition = "com.microsoft:server-busy"
    status = 429


class MessageTooLarge(EmulatorError):
    condition = "amqp:link:message-size-exceeded"
    status = 413


class LockLost(EmulatorError):
    condition = "com.microsoft:message-lock-lost"
    status = 410


class SessionLockLost(EmulatorError):
    """The session lock expired or was released (the SDK's ``SessionLockLostError``)."""

    condition = "com.microsoft:session-lock-lost"
    status = 410


class SessionCannotBeLocked(EmulatorError):
    """A named session is locked by another receiver (the SDK's ``SessionCannotBeLockedError``)."""

    condition = "com.microsoft:session-cannot-be-locked"
    status = 409


class OperationTimeout(EmulatorError):
    """No session became available in the time the receiver asked for (the SDK's
    ``OperationTimeoutError``)."""

    condition = "com.microsoft:timeout"
    status = 408


class InvalidOperation(EmulatorError):
    """What .NET reports as ``InvalidOperationException``: a request the entity does not allow
    (a message without a session id to a session queue, a plain receiver on a session entity)."""

    condition = "amqp:not-allowed"
    status = 400


class MessageNotFound(EmulatorError):
    condition = "com.microsoft:message-not-found"
    status = 404


class Unauthorized(EmulatorError):
    condition = "amqp:unauthorized-access"
    status = 401


class BadRequest(EmulatorError):
    condition = "amqp:invalid-field"
    status = 400


class DecodeError(BadRequest):
    """A transfer that is not a well-formed AMQP message."""

    condition = "amqp:decode-error"


class FilterError(BadRequest, ValueError):
    """An unparsable or invalid filter/action; raised at creation, never at match time.

    A ``BadRequest`` so the AMQP/admin layers answer it like Azure answers a bad rule.
    ``position`` is the 0-based character offset of the problem, when there is one.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class AdminXmlError(BadRequest):
    """A request body the management API cannot accept (HTTP 400)."""


class BodyTooLarge(AdminXmlError):
    """A request body over the admin API's size limit (HTTP 413)."""

    status = 413


class NotImplementedOperation(EmulatorError):
    condition = "amqp:not-implemented"
    status = 501


class MethodNotAllowed(EmulatorError):
    """An admin API resource asked with an HTTP method it does not take."""

    condition = "amqp:not-allowed"
    status = 405


class ConfigError(ValueError):
    """The configuration file is not usable; the message says what to fix."""


class DataDirError(Exception):
    """The data dir cannot be used; the message says what to fix."""
