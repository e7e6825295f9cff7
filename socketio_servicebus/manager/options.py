"""The options of :class:`~socketio_servicebus.ServiceBusManager`, in four typed groups.

::

    ServiceBusManager(
        connection=ConnectionOptions(connection_string=conn, topic="socketio"),
        batching=BatchingOptions(send_interval=0.015),
        cluster=ClusterOptions(heartbeat_interval=5.0),
        limits=Limits(buffer_size=10_000),
        node_id="web-1", region="eu",
    )

The flat keyword arguments of 0.x (``connection_string=...``, ``heartbeat_interval=...``) are
still accepted for one release; each one used gives a :class:`DeprecationWarning` naming its
group (:func:`from_legacy`). See ``docs/manager.md``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchingOptions", "ClusterOptions", "ConnectionOptions", "Limits", "from_legacy"]

RECEIVE_MODE_NAMES = ("peek_lock", "receive_and_delete")


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Where the topic is, how to reach it, and how links reconnect.

    :param connection_string: Service Bus (or emulator) connection string.
    :param fully_qualified_namespace: ``<ns>.servicebus.windows.net``, with ``credential``
        (an azure-identity async credential), instead of a connection string.
    :param topic: the shared topic.
    :param subscription: a pre-provisioned subscription to receive from (nodes holding only a
        Listen+Send key); the admin API is then never called.  ``None``: create, keep and
        delete ``node-<node_id>`` with the rule from ``topology.json``.
    :param receive_mode: ``"receive_and_delete"`` (default: no settlement frames; at-most-once,
        poison messages are counted and logged with the reason but cannot be dead-lettered) or
        ``"peek_lock"`` (every message completed between receive calls, poison messages
        dead-lettered; one disposition per message).
    :param backoff_initial: first reconnect delay (doubles up to ``backoff_max``, with jitter).
    :param backoff_max: reconnect delay cap.
    :param client_options: extra keyword arguments for the SDK's ``ServiceBusClient`` (e.g.
        ``transport_type``, ``http_proxy``, ``retry_total``); they override the manager's
        defaults (``retry_total=1, retry_backoff_factor=0.5, retry_backoff_max=2``: the manager
        retries with its own backoff).
    :param admin_options: extra keyword arguments for the SDK's
        ``ServiceBusAdministrationClient`` (e.g. ``proxies``, ``transport``).
    """

    connection_string: str | None = None
    fully_qualified_namespace: str | None = None
    credential: Any = None
    topic: str = "socketio"
    subscription: str | None = None
    receive_mode: str = "receive_and_delete"
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    client_options: Mapping[str, Any] = field(default_factory=dict)
    admin_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.connection_string and not (self.fully_qualified_namespace and self.credential is not None):
            raise ValueError("give connection_string, or fully_qualified_namespace and credential")
        if self.receive_mode not in RECEIVE_MODE_NAMES:
            raise ValueError(f"receive_mode must be one of {sorted(RECEIVE_MODE_NAMES)}, not {self.receive_mode!r}")


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """How envelopes share Service Bus messages, both ways.

    :param send_interval: latency budget of the adaptive batch window: the longest an envelope
        waits for companions.  Below ~800 envelopes/s, on a link that is not saturated, nothing
        waits (an envelope leaves as soon as the sender is free; what arrives during a send
        shares the next message); above that rate, or while sends are in flight >= 80 % of the
        time, the window is the time ~12 envelopes take to arrive, at most ``send_interval``
        (:class:`~socketio_servicebus.manager.linger.Linger`).  ``0``: never wait.
    :param prefetch_count: messages the receiver link holds ahead.
    :param credit_budget: credits per second of the namespace (Standard tier: 1,000), or
        ``None`` (default: not credit-aware).  The manager then estimates its fleet's spend
        (:mod:`socketio_servicebus.sizing`: the nodes it knows from heartbeats, their
        subscriptions and receives, its own emit rate) and widens its batch window, up to
        ``send_interval``, as the spend approaches its share of 80 % of the budget: the fleet
        degrades into larger batches instead of into throttling.  Raise ``send_interval`` to
        let it batch further (``python -m socketio_servicebus.sizing`` prints the window needed).
    :param extra_subscriptions: subscriptions on the topic besides the nodes' (the Functions'
        router, persist and webpubsub: 3), for the credit estimate.
    """

    send_interval: float = 0.015
    prefetch_count: int = 256
    credit_budget: float | None = None
    extra_subscriptions: int = 0

    def __post_init__(self) -> None:
        if self.credit_budget is not None and self.credit_budget <= 0:
            raise ValueError("credit_budget must be positive (credits per second) or None")


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Heartbeats, requests to other nodes, and the own subscription's upkeep.

    :param heartbeat_interval: seconds between heartbeats.
    :param node_timeout: a node without heartbeat for this long is considered gone.
    :param request_timeout: default timeout of ``fetch_sockets`` / ``server_side_emit``: the
        longest a call waits for a live node that does not answer (a call returns with the last
        answer). 10 s allows for the router hops of a cross-region call (docs/manager.md).
    :param subscription_ttl: message TTL of the own subscription (default from topology.json).
    :param auto_delete_on_idle: AutoDeleteOnIdle of the own subscription, seconds (Azure's
        minimum is 300).
    :param subscription_check_interval: seconds between checks that the own subscription still
        has exactly its node rule (repaired if changed from outside); ``0`` disables.
    """

    heartbeat_interval: float = 5.0
    node_timeout: float = 15.0
    request_timeout: float = 10.0
    subscription_ttl: float | None = None
    auto_delete_on_idle: float = 300.0
    subscription_check_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on memory and on work done for others.

    :param buffer_size: envelopes kept for sending while Service Bus is unreachable; beyond it
        the oldest waiting one is dropped (``buffer_dropped``).
    :param max_message_bytes: Service Bus message size limit; batches stay below it and a single
        envelope that cannot fit raises :class:`~socketio_servicebus.errors.EnvelopeTooLarge`
        to the caller.  At least 4096.
    :param dedupe_size: envelope ids remembered for duplicate suppression.
    :param max_concurrent_requests: ``fetch_sockets`` / ``server_side_emit`` requests from
        other nodes served at once; beyond it a request is answered at once with the error
        ``busy`` (counted in ``requests_refused``).
    :param max_queue_delay: seconds an envelope may wait in the outbound buffer while Service
        Bus is reachable (saturated or throttled, not during an outage): emits wait while the
        buffer is older than half of it (backpressure), for at most as long again, then are
        dropped (``backpressure_dropped``); an envelope older than it is dropped
        (``expired_dropped``).  ``0``: no bound (queue for as long as the buffer holds).
    :param max_nodes: other nodes kept in the registry; a heartbeat from one more node is not
        registered (counted in ``forged_dropped{reason=registry-full}``), so ``fetch_sockets``
        never waits for it.
    """

    buffer_size: int = 10_000
    max_message_bytes: int = 256 * 1024
    dedupe_size: int = 50_000
    max_concurrent_requests: int = 64
    max_queue_delay: float = 2.0
    max_nodes: int = 1000

    def __post_init__(self) -> None:
        if self.max_message_bytes < 4096:
            raise ValueError("max_message_bytes must be at least 4096")


_GROUPS: dict[str, type[Any]] = {
    "connection": ConnectionOptions, "batching": BatchingOptions, "cluster": ClusterOptions, "limits": Limits,
}
_LEGACY: dict[str, str] = {f.name: group for group, cls in _GROUPS.items() for f in dataclasses.fields(cls)}


def from_legacy(
    connection: ConnectionOptions | None,
    batching: BatchingOptions | None,
    cluster: ClusterOptions | None,
    limits: Limits | None,
    legacy: Mapping[str, Any],
) -> tuple[ConnectionOptions, BatchingOptions, ClusterOptions, Limits]:
    """The four groups, with the deprecated flat keyword arguments in ``legacy`` applied on top
    (one :class:`DeprecationWarning` naming them); a ``TypeError`` for an unknown keyword."""
    unknown = sorted(set(legacy) - _LEGACY.keys())
    if unknown:
        raise TypeError(f"ServiceBusManager() got unexpected keyword argument(s): {', '.join(unknown)}")
    given: dict[str, Any] = {"connection": connection, "batching": batching, "cluster": cluster, "limits": limits}
    if legacy:
        warnings.warn(
            "ServiceBusManager(" + ", ".join(f"{k}=" for k in sorted(legacy)) + ") is deprecated: pass "
            + ", ".join(sorted({f"{_LEGACY[k]}={_GROUPS[_LEGACY[k]].__name__}(...)" for k in legacy}))
            + " instead (the flat keywords go in the next release)",
            DeprecationWarning, stacklevel=3,
        )
    out: dict[str, Any] = {}
    for group, cls in _GROUPS.items():
        changes = {k: v for k, v in legacy.items() if _LEGACY[k] == group and (v is not None or k in _NONE_OK)}
        base = given[group]
        if base is None:
            out[group] = cls(**changes)
        else:
            out[group] = dataclasses.replace(base, **changes) if changes else base
    return out["connection"], out["batching"], out["cluster"], out["limits"]


#: legacy keywords where an explicit ``None`` means something (not "the default")
_NONE_OK = frozenset({"connection_string", "fully_qualified_namespace", "credential", "subscription",
                      "subscription_ttl"})
