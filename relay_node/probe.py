"""Startup probe: one short, bounded check that the configured Service Bus can work.

The SDK's default retry policy keeps trying a bad key or a missing topic for minutes. At startup
we want a verdict in seconds: open a topic sender (auth + Send right + topic exists), a receiver
on a pre-provisioned subscription (Listen right + subscription exists) or, for a node that
creates its own subscription, read the topic through the admin API (Manage right). Errors that
configuration must fix raise :class:`StartupError` ``(fatal=True)``; network trouble is retried
until the deadline.

Not covered: a key without the Send right on a topic that exists (a link attach is refused only
after the SDK reports the link open); the manager reports that in ``health()["last_error"]``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.servicebus.exceptions import (
    MessagingEntityDisabledError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusError,
)

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client

from .config import RelayConfig
from .sdk_options import SdkOptions, endpoint_of, key_name_of, sdk_options

log = logging.getLogger("relay_node.probe")


class StartupError(RuntimeError):
    def __init__(self, message: str, *, fatal: bool):
        super().__init__(message)
        self.fatal = fatal


def _classify(exc: BaseException, cfg: RelayConfig, what: str) -> StartupError:
    where = endpoint_of(cfg)
    key = key_name_of(cfg)
    text = (str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__).rstrip(". ")
    admin_stage = what.startswith("read topic") and "admin" in what
    if admin_stage and isinstance(exc, ClientAuthenticationError | HttpResponseError) and getattr(
        exc, "status_code", 401
    ) in (401, 403):
        # the data plane already accepted this key: the admin API refusing it means no Manage right
        return StartupError(
            f"the key {key} has no Manage right at {where}, so this node cannot create its own "
            f"subscription. Pass --subscription <pre-provisioned name> (see docs/relay-node.md) "
            "or use a key with Manage rights",
            fatal=True,
        )
    if isinstance(exc, (ServiceBusAuthenticationError, ClientAuthenticationError)):
        return StartupError(
            f"Service Bus at {where} refused the credentials ({key}): {text}. "
            "Check SharedAccessKeyName/SharedAccessKey in --connection-string (a topic-scoped key only works "
            f"for its own topic, here {cfg.topic!r}) or the identity's role assignment.",
            fatal=True,
        )
    if isinstance(exc, ServiceBusAuthorizationError):
        return StartupError(
            f"the key {key} may not {what} at {where}: {text}. Give the key the needed rights "
            "(Listen + Send on the topic; Manage only for nodes that create their own subscription).",
            fatal=True,
        )
    if isinstance(exc, MessagingEntityNotFoundError | ResourceNotFoundError):
        if what.startswith("read subscription"):
            fix = f"create subscription {cfg.subscription!r} on topic {cfg.topic!r} (see docs/relay-node.md) or fix --subscription"
        else:
            fix = f"create topic {cfg.topic!r} or fix --topic"
        return StartupError(f"{what}: not found at {where}: {text}. {fix}.", fatal=True)
    if isinstance(exc, MessagingEntityDisabledError):
        return StartupError(f"{what}: the entity is disabled at {where}: {text}. Enable it.", fatal=True)
    if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
        return StartupError(
            f"the key {key} has no Manage right at {where} (HTTP {exc.status_code}), so this node cannot "
            f"create its own subscription. Pass --subscription <pre-provisioned name> (see docs/relay-node.md) "
            "or use a key with Manage rights.",
            fatal=True,
        )
    if isinstance(exc, ValueError):  # the SDK rejects malformed settings with ValueError
        return StartupError(f"Service Bus settings rejected: {text}", fatal=True)
    return StartupError(f"cannot reach Service Bus at {where} ({what}): {text}", fatal=False)


async def _probe_once(cfg: RelayConfig, options: SdkOptions, link_timeout: float) -> None:
    client = servicebus_client(**options.credentials,
                               **dict(options.client, retry_total=0, retry_backoff_factor=0.2, retry_backoff_max=1))
    async with client:
        what = f"open topic {cfg.topic!r} for sending"
        try:
            async with client.get_topic_sender(cfg.topic, socket_timeout=link_timeout):
                pass
            if cfg.subscription:
                what = f"read subscription {cfg.subscription!r} of topic {cfg.topic!r}"
                # peek is side-effect free and goes through $management, which answers "not found"
                # (a bare link attach would only fail later, when the first receive runs)
                async with client.get_subscription_receiver(
                    cfg.topic, cfg.subscription, socket_timeout=link_timeout
                ) as receiver:
                    await receiver.peek_messages(max_message_count=1)
        except (ServiceBusError, ClientAuthenticationError, ValueError) as exc:
            raise _classify(exc, cfg, what) from exc
    if not cfg.subscription:
        what = f"read topic {cfg.topic!r} through the admin API"
        admin = admin_client(**options.credentials, retry_total=0, **options.admin)
        async with admin:
            try:
                await admin.get_topic(cfg.topic)
            except (HttpResponseError, ClientAuthenticationError, ServiceRequestError) as exc:
                raise _classify(exc, cfg, what) from exc


async def probe(cfg: RelayConfig, options: SdkOptions | None = None, *, deadline: float | None = None) -> None:
    """Raise StartupError unless Service Bus accepts this node's settings (``options``: what
    :func:`~relay_node.sdk_options.sdk_options` made of them) before ``deadline``."""
    options = options if options is not None else sdk_options(cfg)
    deadline = deadline if deadline is not None else time.monotonic() + cfg.startup_timeout
    delay = 0.5
    last: StartupError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise last or StartupError(f"no answer from Service Bus at {endpoint_of(cfg)} in time", fatal=False)
        try:
            async with asyncio.timeout(left):
                await _probe_once(cfg, options, link_timeout=min(left, 10.0))
            return
        except TimeoutError:
            raise StartupError(
                f"no answer from Service Bus at {endpoint_of(cfg)} within {cfg.startup_timeout:g}s; check the "
                "address and that outbound AMQP (5671) or HTTPS (443 with --transport websockets) is open",
                fatal=False,
            ) from None
        except StartupError as exc:
            if exc.fatal:
                raise
            last = exc
        except (ServiceBusError, ServiceRequestError, OSError) as exc:
            last = _classify(exc, cfg, "connect")
            if last.fatal:
                raise last from exc
        log.info("Service Bus not reachable yet (%s); retrying", last)
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 5.0)
