"""Namespaces, topics, subscriptions, queues and rules. No I/O.

A namespace resolves entity paths (``topic``, ``topic/Subscriptions/sub``,
``topic/Subscriptions/sub/$DeadLetterQueue``, ``queue``, ``queue/$DeadLetterQueue``) to the
object that sends or the store that receives, fans a published message out to every
subscription whose rules match, and runs the clocks: scheduled messages, duplicate detection
windows and AutoDeleteOnIdle.

With a ``journal`` (``Namespace(..., journal=...)``), every store reports its entry changes
and the namespace reports accepted/scheduled messages and entity changes to it (see
``store.Journal``); ``persistence.py`` turns those reports into writes. No I/O here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .config import (
    NEVER,
    NamespaceConfig,
    PolicyConfig,
    QueueConfig,
    RuleConfig,
    SubscriptionConfig,
    TopicConfig,
)
from .errors import (
    BadRequest,
    EntityExists,
    EntityNotFound,
    InvalidOperation,
    MessageNotFound,
    MessageTooLarge,
    QuotaExceeded,
)
from .filters import Filter, FilterError, correlation_filter, sql_action, sql_filter
from .meter import Meter, Tier
from .sessions import SessionStore
from .store import Journal, Message, MessageStore, StoreSettings, new_entry

DLQ = "$deadletterqueue"
DEFAULT_RULE = "$Default"

_CORRELATION_KEYS = {
    "CorrelationId": "correlation_id",
    "MessageId": "message_id",
    "To": "to",
    "ReplyTo": "reply_to",
    "Label": "label",
    "Subject": "label",
    "SessionId": "session_id",
    "ReplyToSessionId": "reply_to_session_id",
    "ContentType": "content_type",
}


@dataclass
class Rule:
    config: RuleConfig
    filter: Filter
    action: Any = None

    @classmethod
    def build(cls, config: RuleConfig) -> Rule:
        try:
            if config.filter_type == "Correlation":
                kwargs = {
                    _CORRELATION_KEYS[k]: v
                    for k, v in config.correlation.items()
                    if k in _CORRELATION_KEYS and v not in (None, "")
                }
                props = config.correlation.get("Properties") or {}
                flt: Filter = correlation_filter(properties=props, **kwargs)
            else:
                flt = sql_filter(config.sql)
            action = sql_action(config.action) if config.action else None
        except FilterError as exc:
            raise BadRequest(f"Rule {config.name!r}: {exc}") from exc
        return cls(config, flt, action)


class Subscription:
    def __init__(self, topic: Topic, config: SubscriptionConfig, now: float):
        self.topic = topic
        self.config = config
        self.created_at = now
        self.updated_at = now
        #: fields only the admin API reports (UserMetadata, Status ...); not used by the engine
        self.admin_extras: dict[str, Any] = {}
        path = f"{topic.name}/Subscriptions/{config.name}"
        journal = topic.namespace.journal
        self.dlq = MessageStore(path + "/$DeadLetterQueue", self._settings(), journal=journal)
        store_kind = SessionStore if config.requires_session else MessageStore
        self.store = store_kind(path, self._settings(), self.dlq, journal=journal)
        self.store.last_activity = now
        rules = config.rules or [RuleConfig(DEFAULT_RULE)]
        self.rules: dict[str, Rule] = {}
        for rule in rules:
            self.add_rule(rule)

    @property
    def name(self) -> str:
        return self.config.name

    def _settings(self) -> StoreSettings:
        return StoreSettings(
            lock_duration=self.config.lock_duration,
            max_delivery_count=self.config.max_delivery_count,
            dead_lettering_on_expiration=self.config.dead_lettering_on_expiration,
            max_bytes=self.topic.namespace.config.max_entity_bytes,
        )

    def update(self, config: SubscriptionConfig, now: float) -> None:
        config.rules = self.config.rules
        self.config = config
        self.store.settings = self._settings()
        self.dlq.settings = self._settings()
        self.updated_at = now

    def add_rule(self, config: RuleConfig) -> Rule:
        key = config.name.lower()
        if key in self.rules:
            raise EntityExists(f"Rule {config.name!r} already exists on {self.store.path}.")
        rule = Rule.build(config)
        if _is_sql(config):
            self.topic.check_sql_filter_quota(1)
        self.rules[key] = rule
        return rule

    def remove_rule(self, name: str) -> None:
        if self.rules.pop(name.lower(), None) is None:
            raise EntityNotFound(f"Rule {name!r} does not exist on {self.store.path}.")

    def matching_overrides(self, msg: Message) -> tuple[bool, dict[str, Any] | None]:
        """Whether any rule admits the message, and the user properties its action sets."""
        for rule in self.rules.values():
            if rule.filter.matches(msg.system, msg.user):
                if rule.action is None:
                    return True, None
                system, user = dict(msg.system), dict(msg.user)
                rule.action.apply(system, user)
                return True, user
        return False, None


class Intake:
    """What every entity that accepts sends does first: size limit, duplicate detection,
    sequence numbers, and holding scheduled messages until their time.

    ``deliver(msg, now)`` is called for each message once it is due: a topic fans it out to its
    subscriptions, a queue stores it.
    """

    def __init__(self, owner: Topic | Queue, deliver: Callable[[Message, float], None]):
        self.owner = owner
        self.deliver = deliver
        self._dedupe: dict[str, float] = {}
        self._dedupe_heap: list[tuple[float, str]] = []
        #: never replaced, only changed in place: a queue's store reads it for peek
        self.scheduled: dict[int, Message] = {}
        self._scheduled_heap: list[tuple[float, int]] = []

    def check(self, msg: Message) -> None:
        """Refuse a message this entity never takes (before any message of a batch is taken)."""
        owner, ns = self.owner, self.owner.namespace
        if msg.size > ns.config.max_message_bytes:
            raise MessageTooLarge(
                f"The received message (size {msg.size} bytes) exceeds the limit "
                f"({ns.config.max_message_bytes} bytes) currently allowed on the link."
            )
        if isinstance(owner, Queue) and owner.config.requires_session and msg.system.get("sessionid") in (None, ""):
            raise InvalidOperation(
                "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that "
                "have session support enabled can only receive messages that have the SessionId set to a "
                f"valid value. ({ns.name}:queue:{owner.name})")

    def accept(self, msg: Message, now: float) -> int:
        """Take one message; returns its sequence number (0 for a dropped duplicate)."""
        owner, ns = self.owner, self.owner.namespace
        self.check(msg)
        if owner.config.requires_duplicate_detection and msg.message_id is not None:
            self._expire_dedupe(now)
            if msg.message_id in self._dedupe:
                return 0
            until = now + owner.config.duplicate_window
            self._dedupe[msg.message_id] = until
            heapq.heappush(self._dedupe_heap, (until, msg.message_id))
        msg.seq = ns.next_seq()
        msg.enqueued_at = now
        msg.system["sequencenumber"] = msg.seq
        owner.last_activity = now
        pending = msg.scheduled_at is not None and msg.scheduled_at > now
        if ns.journal is not None:  # before the stores report entries that refer to it
            ns.journal.message_changed(owner.name, msg, pending)
        if pending:
            self.restore_scheduled(msg)
        else:
            self.deliver(msg, now)
        return msg.seq

    def restore_scheduled(self, msg: Message) -> None:
        """Hold ``msg`` until its scheduled enqueue time (on accept, or read from a data dir)."""
        assert msg.scheduled_at is not None
        self.scheduled[msg.seq] = msg
        heapq.heappush(self._scheduled_heap, (msg.scheduled_at, msg.seq))

    def cancel_scheduled(self, seq: int) -> None:
        msg = self.scheduled.pop(int(seq), None)
        if msg is None:
            raise MessageNotFound(f"Scheduled message {seq} was not found on {self.owner.name}.")
        if self.owner.namespace.journal is not None:
            self.owner.namespace.journal.message_changed(self.owner.name, msg, False)

    def _expire_dedupe(self, now: float) -> None:
        while self._dedupe_heap and self._dedupe_heap[0][0] <= now:
            until, mid = heapq.heappop(self._dedupe_heap)
            if self._dedupe.get(mid) == until:
                del self._dedupe[mid]

    def tick(self, now: float) -> None:
        """Deliver the scheduled messages whose time has come."""
        while self._scheduled_heap and self._scheduled_heap[0][0] <= now:
            _, seq = heapq.heappop(self._scheduled_heap)
            msg = self.scheduled.pop(seq, None)
            if msg is not None:
                msg.enqueued_at = now
                if self.owner.namespace.journal is not None:
                    self.owner.namespace.journal.message_changed(self.owner.name, msg, False)
                self.deliver(msg, now)


class Topic:
    def __init__(self, namespace: Namespace, config: TopicConfig, now: float):
        self.namespace = namespace
        self.config = config
        self.name = config.name
        self.created_at = now
        self.updated_at = now
        self.admin_extras: dict[str, Any] = {}
        self.subscriptions: dict[str, Subscription] = {}
        for sub in config.subscriptions:
            self.subscriptions[sub.name.lower()] = Subscription(self, sub, now)
        config.subscriptions = []
        self.intake = Intake(self, self._fan_out)
        self.last_activity = now

    @property
    def policies(self) -> list[PolicyConfig]:
        return self.config.policies

    @property
    def scheduled(self) -> dict[int, Message]:
        return self.intake.scheduled

    def size_bytes(self) -> int:
        return sum(s.store.size_bytes + s.dlq.size_bytes for s in self.subscriptions.values())

    def accept(self, msg: Message, now: float) -> int:
        """Take one message: dedupe, schedule or fan out. Returns its sequence number."""
        return self.intake.accept(msg, now)

    def cancel_scheduled(self, seq: int) -> None:
        self.intake.cancel_scheduled(seq)

    def check_quota(self, size: int) -> None:
        for sub in self.subscriptions.values():
            sub.store.check_quota(size)

    def filter_count(self) -> int:
        """Filter evaluations one message sent here costs: every rule of every subscription."""
        return sum(len(sub.rules) for sub in self.subscriptions.values())

    def check_subscription_quota(self) -> None:
        limit = self.namespace.config.max_subscriptions_per_topic
        if len(self.subscriptions) >= limit:
            raise QuotaExceeded(
                f"QuotaExceeded: the topic '{self.name}' already has the maximum of {limit} subscriptions; "
                f"delete a subscription first."
            )

    def check_sql_filter_quota(self, adding: int) -> None:
        limit = self.namespace.config.max_sql_filters_per_topic
        count = sum(1 for sub in self.subscriptions.values() for rule in sub.rules.values() if _is_sql(rule.config))
        if count + adding > limit:
            raise QuotaExceeded(
                f"QuotaExceeded: the topic '{self.name}' already has the maximum of {limit} SQL filters; "
                f"use correlation filters or delete a rule first."
            )

    def _fan_out(self, msg: Message, now: float) -> None:
        ttl = min(self.config.default_ttl, NEVER)
        for sub in list(self.subscriptions.values()):
            matched, overrides = sub.matching_overrides(msg)
            if not matched:
                continue
            entry = new_entry(msg, min(ttl, sub.config.default_ttl), now)
            entry.user_overrides = overrides
            sub.store.add(entry, now)

    def delete_subscription(self, name: str) -> None:
        sub = self.subscriptions.pop(name.lower(), None)
        if sub is None:
            raise EntityNotFound(
                f"The messaging entity '{self.namespace.name}:topic:{self.name}|{name}' could not be found."
            )
        sub.store.purge()
        sub.dlq.purge()
        self.namespace._notify_delete(sub.store.path)

    def tick(self, now: float) -> None:
        self.intake.tick(now)
        for sub in list(self.subscriptions.values()):
            sub.store.tick(now)
            sub.dlq.tick(now)
            idle = sub.config.auto_delete_on_idle
            if (
                idle < NEVER
                and not sub.store.consumers
                and not sub.dlq.consumers
                and now - max(sub.store.last_activity, sub.dlq.last_activity) >= idle
            ):
                self.delete_subscription(sub.name)


def _queue_settings(config: QueueConfig, max_bytes: int) -> StoreSettings:
    return StoreSettings(
        lock_duration=config.lock_duration,
        max_delivery_count=config.max_delivery_count,
        dead_lettering_on_expiration=config.dead_lettering_on_expiration,
        max_bytes=max_bytes,
    )


class Queue:
    """A queue: one message store that also accepts sends."""

    def __init__(self, namespace: Namespace, config: QueueConfig, now: float):
        self.namespace = namespace
        self.config = config
        self.name = config.name
        self.created_at = now
        self.updated_at = now
        self.admin_extras: dict[str, Any] = {}
        self.last_activity = now
        settings = _queue_settings(config, namespace.config.max_entity_bytes)
        journal = namespace.journal
        self.dlq = MessageStore(f"{config.name}/$DeadLetterQueue", settings, journal=journal)
        store_kind = SessionStore if config.requires_session else MessageStore
        self.store = store_kind(config.name, settings, self.dlq, journal=journal)
        self.store.last_activity = now
        self.intake = Intake(self, self._enqueue)
        # peek on the queue shows the messages waiting for their scheduled enqueue time, as
        # Service Bus does (a topic's wait at the topic: its subscriptions do not show them)
        self.store.scheduled = self.intake.scheduled
        self.policies: list[PolicyConfig] = []

    def _enqueue(self, msg: Message, now: float) -> None:
        self.store.add(new_entry(msg, self.config.default_ttl, now), now)

    def check_quota(self, size: int) -> None:
        self.store.check_quota(size)

    def accept(self, msg: Message, now: float) -> int:
        return self.intake.accept(msg, now)

    def cancel_scheduled(self, seq: int) -> None:
        self.intake.cancel_scheduled(seq)

    @property
    def scheduled_count(self) -> int:
        """Messages waiting for their scheduled enqueue time (admin runtime properties)."""
        return len(self.intake.scheduled)

    def update(self, config: QueueConfig, now: float) -> None:
        """Apply new settings (admin update); stored messages keep their expiry and locks."""
        self.config = config
        settings = _queue_settings(config, self.namespace.config.max_entity_bytes)
        self.store.settings = settings
        self.dlq.settings = settings
        self.updated_at = now

    def tick(self, now: float) -> None:
        self.intake.tick(now)
        self.store.tick(now)
        self.dlq.tick(now)


class Namespace:
    """All entities of one namespace; ``clock`` gives the time in epoch seconds; ``journal``
    (optional) hears of every state change, for persistence."""

    def __init__(self, config: NamespaceConfig, clock: Callable[[], float], journal: Journal | None = None):
        self.config = config
        self.name = config.name
        self.clock = clock
        self.journal = journal
        self._seq = 0
        now = clock()
        self.topics: dict[str, Topic] = {}
        self.queues: dict[str, Queue] = {}
        for topic in config.topics:
            self.topics[topic.name.lower()] = Topic(self, replace(topic), now)
        for queue in config.queues:
            self.queues[queue.name.lower()] = Queue(self, queue, now)
        self.on_delete: list[Callable[[str], None]] = []
        self.meter = Meter(clock, Tier(config.tier), config.credits_per_second, config.max_connections)

    def entity_policies(self) -> dict[str, list[PolicyConfig]]:
        """The SAS policies declared on topics, by topic name (the namespace's own are in
        ``config.policies``)."""
        return {name: topic.policies for name, topic in self.topics.items() if topic.policies}

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (0: none yet)."""
        return self._seq

    def restore_last_seq(self, seq: int) -> None:
        """Continue numbering after ``seq`` (state read from a data dir); never goes back."""
        self._seq = max(self._seq, int(seq))

    def _entities_changed(self) -> None:
        if self.journal is not None:
            self.journal.entities_changed()

    # -- lookup ---------------------------------------------------------------------------
    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name.lower())
        if topic is None:
            raise EntityNotFound(
                f"The messaging entity '{self.name}:topic:{name}' could not be found."
            )
        return topic

    def subscription(self, topic: str, name: str) -> Subscription:
        sub = self.topic(topic).subscriptions.get(name.lower())
        if sub is None:
            raise EntityNotFound(
                f"The messaging entity '{self.name}:topic:{topic}|{name}' could not be found."
            )
        return sub

    def sender_for(self, path: str) -> Topic | Queue:
        parts = split_path(path)
        if len(parts) != 1:
            raise BadRequest(f"Cannot send to {path!r}: send to a topic or a queue.")
        key = parts[0].lower()
        if key in self.queues:
            return self.queues[key]
        return self.topic(parts[0])

    def store_for(self, path: str) -> MessageStore:
        parts = split_path(path)
        dead = bool(parts) and parts[-1].lower() == DLQ
        if dead:
            parts = parts[:-1]
        if len(parts) == 1 and parts[0].lower() in self.queues:
            queue = self.queues[parts[0].lower()]
            return queue.dlq if dead else queue.store
        if len(parts) == 3 and parts[1].lower() == "subscriptions":
            sub = self.subscription(parts[0], parts[2])
            return sub.dlq if dead else sub.store
        if len(parts) == 1:
            self.topic(parts[0])
            raise BadRequest(f"Cannot receive from topic {path!r}: receive from a subscription.")
        raise EntityNotFound(f"The messaging entity '{self.name}:{path}' could not be found.")

    # -- admin ----------------------------------------------------------------------------
    def create_topic(self, config: TopicConfig) -> Topic:
        if config.name.lower() in self.topics or config.name.lower() in self.queues:
            raise EntityExists(f"The messaging entity '{self.name}:topic:{config.name}' already exists.")
        topic = Topic(self, config, self.clock())
        self.topics[config.name.lower()] = topic
        self._entities_changed()
        return topic

    def delete_topic(self, name: str) -> None:
        topic = self.topic(name)
        for sub in list(topic.subscriptions.values()):
            topic.delete_subscription(sub.name)
        del self.topics[name.lower()]
        self._notify_delete(topic.name)

    def create_queue(self, config: QueueConfig) -> Queue:
        if config.name.lower() in self.topics or config.name.lower() in self.queues:
            raise EntityExists(f"The messaging entity '{self.name}:queue:{config.name}' already exists.")
        queue = Queue(self, config, self.clock())
        self.queues[config.name.lower()] = queue
        self._entities_changed()
        return queue

    def delete_queue(self, name: str) -> None:
        queue = self.queues.pop(name.lower(), None)
        if queue is None:
            raise EntityNotFound(f"The messaging entity '{self.name}:queue:{name}' could not be found.")
        queue.store.purge()
        queue.dlq.purge()
        self._notify_delete(queue.name)

    def create_subscription(self, topic: str, config: SubscriptionConfig) -> Subscription:
        owner = self.topic(topic)
        if config.name.lower() in owner.subscriptions:
            raise EntityExists(
                f"The messaging entity '{self.name}:topic:{topic}|{config.name}' already exists."
            )
        owner.check_subscription_quota()
        owner.check_sql_filter_quota(sum(1 for rule in config.rules or [RuleConfig(DEFAULT_RULE)] if _is_sql(rule)))
        sub = Subscription(owner, config, self.clock())
        owner.subscriptions[config.name.lower()] = sub
        self._entities_changed()
        return sub

    def _notify_delete(self, path: str) -> None:
        self._entities_changed()
        for callback in list(self.on_delete):
            callback(path)

    def tick(self) -> None:
        now = self.clock()
        for topic in list(self.topics.values()):
            topic.tick(now)
        for queue in list(self.queues.values()):
            queue.tick(now)


def _is_sql(rule: RuleConfig) -> bool:
    """A SQL filter for Azure's quota (true and false filters are SQL filters too)."""
    return rule.filter_type != "Correlation"


def split_path(path: str) -> list[str]:
    """Entity path parts from a bare path or a full ``amqps://host:port/...`` URI."""
    text = path.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return [p for p in text.split("/") if p]


__all__ = [
    "DEFAULT_RULE",
    "Namespace",
    "Queue",
    "Rule",
    "Subscription",
    "Topic",
    "split_path",
]
