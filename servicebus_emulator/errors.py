"""Errors the emulator raises, each carrying the AMQP condition Service Bus answers with.

The AMQP adapter and the admin HTTP surface translate these at one point each, so that
the unmodified ``azure-servicebus`` SDK raises the same exception types it raises against
Azure (``MessagingEntityNotFoundError``, ``ServiceBusQuotaExceededError``,
``MessageLockLostError``, ``ServiceBusAuthenticationError`` ...).
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


class MessageTooLarge(EmulatorError):
    condition = "amqp:link:message-size-exceeded"
    status = 413


class LockLost(EmulatorError):
    condition = "com.microsoft:message-lock-lost"
    status = 410


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


class NotImplementedOperation(EmulatorError):
    condition = "amqp:not-implemented"
    status = 501
