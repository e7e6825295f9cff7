"""Admin HTTP surface: the Service Bus ATOM/XML management API that ``ServiceBusAdministrationClient``
(sync and aio, azure-servicebus 7.15) drives, served on the namespace's port beside AMQP.

Routes (all take ``api-version``; bodies in ``admin_xml``):

- ``GET /$Resources/topics|queues?$skip=&$top=`` - list topics or queues
- ``PUT|GET|DELETE /{entity}`` - a topic or a queue (the PUT body's description says which)
- ``GET /{topic}/subscriptions``, ``PUT|GET|DELETE /{topic}/subscriptions/{sub}``
- ``GET /{topic}/subscriptions/{sub}/rules``, ``PUT|GET|DELETE .../rules/{rule}``
- ``GET /$namespaceinfo``
- ``GET /health``, ``GET /$emulator/entities`` and ``GET /$emulator/meter`` (JSON, no auth: local
  diagnostics; the meter's credits used and refused, see ``meter``)
- ``GET /$servicebus/websocket`` (AMQP over WebSockets) and ``GET /$emulator/websockets``: see ``websocket``
  (registered ahead of this API by the server)

PUT without ``If-Match`` creates (201; 409 when the entity exists); ``If-Match: *`` updates
(200; 404 when it does not). Every management call needs ``Authorization: SharedAccessSignature``
from a policy with the Manage right, as on Azure; otherwise 401, which the SDK raises as
ClientAuthenticationError. Errors carry ``<Error><Code/><Detail/></Error>``.

Every management call costs 10 credits on the namespace's meter; with ``--tier standard`` a
call that finds no credit left is answered 429 with ``Retry-After: 2`` and the service's 50009
text (azure-core's retry policy waits and retries it).

Differences from Azure, on purpose:
- AutoDeleteOnIdle, DuplicateDetectionHistoryTimeWindow and DefaultMessageTimeToLive accept any
  positive duration (Azure: AutoDeleteOnIdle >= 5 minutes, duplicate window >= 20 s), so tests can
  watch an idle subscription disappear after a second or two. Only subscriptions auto-delete.
- Stored and reported but not enforced: Status, ForwardTo,
  ForwardDeadLetteredMessagesTo, EnableBatchedOperations, MaxSizeInMegabytes (the namespace's
  per-entity quota applies), MaxMessageSizeInKilobytes, DeadLetteringOnFilterEvaluationExceptions,
  UserMetadata, topic and queue AutoDeleteOnIdle.
- SQL filter/action parameters are substituted as literals before the expression is compiled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from . import admin_xml as ax
from . import entity_fields as ef
from . import origin_guard
from .config import QueueConfig, RuleConfig, SubscriptionConfig, TopicConfig
from .entities import DEFAULT_RULE, Namespace, Queue, Rule, Subscription, Topic
from .entity_fields import NEVER
from .errors import (
    BadRequest,
    EmulatorError,
    EntityExists,
    EntityNotFound,
    MethodNotAllowed,
    ServerBusy,
    Unauthorized,
)
from .meter import Op
from .runtime import Runtime
from .sas import verify_token

log = logging.getLogger("servicebus_emulator.admin")

ATOM_ENTRY = "application/atom+xml;type=entry;charset=utf-8"
ATOM_FEED = "application/atom+xml;type=feed;charset=utf-8"
XML = "application/xml; charset=utf-8"
DEFAULT_API_VERSION = "2021-05"
MAX_PAGE = 100
STATUSES = {"Active", "Disabled", "SendDisabled", "ReceiveDisabled"}
MAX_LOCK_SECONDS = 300.0

# Extra (store-only) fields kept beside the engine's config, per kind.
TOPIC_EXTRAS = {
    "MaxSizeInMegabytes", "EnableBatchedOperations", "AutoDeleteOnIdle", "MaxMessageSizeInKilobytes",
    "Status", "UserMetadata", "SupportOrdering", "EnablePartitioning", "FilteringMessagesBeforePublishing",
    "EnableExpress",
}
QUEUE_EXTRAS = {
    "MaxSizeInMegabytes", "EnableBatchedOperations", "Status", "ForwardTo",
    "ForwardDeadLetteredMessagesTo", "UserMetadata", "EnablePartitioning", "EnableExpress",
    "MaxMessageSizeInKilobytes", "SupportOrdering",
}
SUBSCRIPTION_EXTRAS = {
    "EnableBatchedOperations", "Status", "DeadLetteringOnFilterEvaluationExceptions", "UserMetadata",
}


@dataclass
class _RuleMeta:
    rule: Rule
    spec: ax.RuleSpec
    created_at: float


def _reject_bad_name(kind: str, name: str, max_len: int) -> None:
    if not name or len(name) > max_len:
        raise BadRequest(f"The {kind} name {name!r} must be 1 to {max_len} characters long.")
    bad = [c for c in name if c.isspace() or c in "?#%\\\"'<>&*:" or ord(c) < 32]
    if bad:
        raise BadRequest(f"The {kind} name {name!r} contains the invalid character {bad[0]!r}.")
    if name.startswith("/") or name.endswith("/") or (name.startswith("$") and kind != "rule"):
        raise BadRequest(f"The {kind} name {name!r} must not start with '/' or '$' nor end with '/'.")


class AdminApi:
    """The management API of one namespace."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.started = time.time()
        self._rules: dict[int, _RuleMeta] = {}

    @property
    def ns(self) -> Namespace:
        return self.runtime.namespace

    def now(self) -> float:
        return float(self.ns.clock())

    # -- side tables for what the engine's config does not hold -------------------------------
    @staticmethod
    def extras(owner: object) -> dict[str, Any]:
        """Descriptive fields the engine does not use (UserMetadata, Status ...); kept on the
        entity itself (``admin_extras``) so that ``--data-dir`` stores them with it."""
        values: dict[str, Any] = getattr(owner, "admin_extras")  # noqa: B009 - Topic, Queue or Subscription
        return values

    def rule_meta(self, rule: Rule) -> _RuleMeta | None:
        meta = self._rules.get(id(rule))
        return meta if meta is not None and meta.rule is rule else None

    def _prune(self) -> None:
        """Forget side data of deleted entities (called after every write)."""
        live: set[int] = set()
        for topic in self.ns.topics.values():
            live.add(id(topic))
            for sub in topic.subscriptions.values():
                live.add(id(sub))
                live.update(id(rule) for rule in sub.rules.values())
        live.update(id(queue) for queue in self.ns.queues.values())
        self._rules = {k: v for k, v in self._rules.items() if k in live}

    # -- HTTP entry point -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [unquote(p) for p in request.rel_url.raw_path.split("/") if p]
        if request.method == "GET" and "api-version" not in request.query:
            if parts == ["health"]:
                return web.json_response({"status": "healthy", "namespace": self.ns.name})
            if parts == ["$emulator", "entities"]:
                return web.json_response(self.debug_snapshot())
            if parts == ["$emulator", "meter"]:
                return web.json_response(self.ns.meter.snapshot())
        try:
            self.authorize(request, parts)
            self.ns.meter.charge("/".join(parts) or "$namespace", {Op.MANAGEMENT: 1})
            body = b""
            if request.method in ("PUT", "POST"):
                if request.content_length is not None and request.content_length > ax.MAX_BODY_BYTES:
                    raise ax.BodyTooLarge(f"The request body is larger than {ax.MAX_BODY_BYTES} bytes.")
                body = await request.read()
            status, payload, content_type = self.route(request, parts, body)
        except ServerBusy as exc:
            response = self.error(exc.status, str(exc))
            response.headers["Retry-After"] = "2"
            return response
        except EmulatorError as exc:
            return self.error(exc.status, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return self.error(413, f"The request body is larger than {ax.MAX_BODY_BYTES} bytes.")
        except Exception as exc:  # a bug here must still answer, and show up in the emulator's log
            log.exception("admin %s %s failed", request.method, request.rel_url)
            return self.error(500, f"internal error in the emulator's admin API: {exc!r}")
        if request.method in ("PUT", "DELETE"):
            self._prune()
            if self.ns.journal is not None:  # --data-dir: updates change configs in place
                self.ns.journal.entities_changed()
            self.runtime.persist()
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    @staticmethod
    def error(status: int, detail: str) -> web.Response:
        return web.Response(status=status, body=ax.error_xml(status, detail), headers={"Content-Type": XML})

    def authorize(self, request: web.Request, parts: list[str]) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            raise Unauthorized(
                "MissingToken: the request has no Authorization header; the management API needs a "
                "SharedAccessSignature token from a policy with the Manage right."
            )
        if header.lower().startswith("bearer "):
            raise Unauthorized("InvalidToken: the emulator accepts SharedAccessSignature tokens only, not Bearer.")
        grant = verify_token(header, self.ns.config.policies, self.ns.entity_policies())
        scope = [] if parts and parts[0].startswith("$") else parts
        if not grant.covers(scope, "Manage"):
            rights = ", ".join(sorted(grant.rights)) or "nothing"
            raise Unauthorized(
                f"Unauthorized: Manage,EntityRead claims required for this operation. The key "
                f"{grant.key_name!r} grants {rights} on "
                f"'{'/'.join(grant.scope) or self.ns.name}'; use a policy with the Manage right."
            )

    # -- routing --------------------------------------------------------------------------------
    def route(self, request: web.Request, parts: list[str], body: bytes) -> tuple[int, bytes, str]:
        method = request.method
        n = len(parts)
        low = [p.lower() for p in parts]
        if n == 1 and low[0] == "$namespaceinfo":
            self._only(method, "GET")
            return 200, self.namespace_entry(request), ATOM_ENTRY
        if n == 2 and low[0] == "$resources":
            self._only(method, "GET")
            if low[1] not in ("topics", "queues"):
                raise EntityNotFound(f"Listing {parts[1]!r} is not supported; list topics or queues.")
            return 200, self.list_entities(request, low[1]), ATOM_FEED
        if n == 1:
            return self.entity(request, parts[0], body)
        if n == 2 and low[1] == "subscriptions":
            self._only(method, "GET")
            return 200, self.list_subscriptions(request, parts[0]), ATOM_FEED
        if n == 3 and low[1] == "subscriptions":
            return self.subscription(request, parts[0], parts[2], body)
        if n == 4 and low[1] == "subscriptions" and low[3] == "rules":
            self._only(method, "GET")
            return 200, self.list_rules(request, parts[0], parts[2]), ATOM_FEED
        if n == 5 and low[1] == "subscriptions" and low[3] == "rules":
            return self.rule(request, parts[0], parts[2], parts[4], body)
        raise EntityNotFound(f"No management resource at '/{'/'.join(parts)}'.")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise MethodNotAllowed(f"{method} is not supported here; use {' or '.join(allowed)}.")

    @staticmethod
    def _is_update(request: web.Request) -> bool:
        return request.headers.get("If-Match") is not None

    @staticmethod
    def _href(request: web.Request, path: str) -> str:
        version = request.query.get("api-version", DEFAULT_API_VERSION)
        return f"https://{request.host}/{path}?api-version={version}"

    def _page(self, request: web.Request) -> tuple[int, int]:
        try:
            skip = int(request.query.get("$skip", "0"))
            top = int(request.query.get("$top", str(MAX_PAGE)))
        except ValueError:
            raise BadRequest("$skip and $top must be integers.") from None
        if skip < 0 or top < 1:
            raise BadRequest("$skip must be >= 0 and $top >= 1.")
        return skip, min(top, MAX_PAGE)

    def _feed(self, request: web.Request, path: str, title: str, entries: list[ax.FeedEntry]) -> bytes:
        skip, top = self._page(request)
        page = entries[skip : skip + top]
        version = request.query.get("api-version", DEFAULT_API_VERSION)
        base = f"https://{request.host}/{path}"
        next_href = None
        if skip + top < len(entries):
            next_href = f"{base}?$skip={skip + top}&$top={top}&api-version={version}"
        return ax.feed_xml(
            href=f"{base}?$skip={skip}&$top={top}&api-version={version}",
            title=title,
            updated=self.now(),
            entries=page,
            next_href=next_href,
        )

    # -- namespace ------------------------------------------------------------------------------
    def namespace_entry(self, request: web.Request) -> bytes:
        return ax.entry_xml(
            href=self._href(request, "$namespaceinfo"),
            title=self.ns.name,
            published=self.started,
            updated=self.started,
            author=self.ns.name,
            content=ax.namespace_info_xml(self.ns.name, self.started, self.started),
        )

    def list_entities(self, request: web.Request, kind: str) -> bytes:
        if kind == "topics":
            items = sorted(self.ns.topics.values(), key=lambda t: t.name.lower())
            entries = [
                ax.FeedEntry(self._href(request, t.name), t.name, t.created_at, t.updated_at,
                             ax.description_xml(ax.TOPIC, self.topic_values(t)))
                for t in items
            ]
            return self._feed(request, "$Resources/topics", "Topics", entries)
        queues = sorted(self.ns.queues.values(), key=lambda q: q.name.lower())
        entries = [
            ax.FeedEntry(self._href(request, q.name), q.name, q.created_at, q.updated_at,
                         ax.description_xml(ax.QUEUE, self.queue_values(q)))
            for q in queues
        ]
        return self._feed(request, "$Resources/queues", "Queues", entries)

    # -- topics and queues ----------------------------------------------------------------------
    def entity(self, request: web.Request, name: str, body: bytes) -> tuple[int, bytes, str]:
        method = request.method
        key = name.lower()
        if method == "GET":
            if key in self.ns.topics:
                return 200, self.topic_entry(request, self.ns.topics[key]), ATOM_ENTRY
            if key in self.ns.queues:
                return 200, self.queue_entry(request, self.ns.queues[key]), ATOM_ENTRY
            raise EntityNotFound(f"The messaging entity '{self.ns.name}:{name}' could not be found.")
        if method == "DELETE":
            if key in self.ns.topics:
                self.ns.delete_topic(name)
            elif key in self.ns.queues:
                self.ns.delete_queue(name)
            else:
                raise EntityNotFound(f"The messaging entity '{self.ns.name}:{name}' could not be found.")
            return 200, b"", XML
        self._only(method, "GET", "PUT", "DELETE")
        desc = ax.parse_entry(body)
        kind = ax.local_name(desc.tag)
        if kind == ax.TOPIC:
            if self._is_update(request):
                topic = self._existing(self.ns.topics, name, "topic")
                self.update_topic(topic, desc)
                return 200, self.topic_entry(request, topic), ATOM_ENTRY
            topic = self.create_topic(name, desc)
            return 201, self.topic_entry(request, topic), ATOM_ENTRY
        if kind == ax.QUEUE:
            if self._is_update(request):
                queue = self._existing(self.ns.queues, name, "queue")
                self.update_queue(queue, desc)
                return 200, self.queue_entry(request, queue), ATOM_ENTRY
            queue = self.create_queue(name, desc)
            return 201, self.queue_entry(request, queue), ATOM_ENTRY
        raise ax.AdminXmlError(f"PUT /{name} needs a TopicDescription or a QueueDescription, not <{kind}>.")

    def _existing(self, table: dict[str, Any], name: str, kind: str) -> Any:
        found = table.get(name.lower())
        if found is None:
            other = self.ns.queues if kind == "topic" else self.ns.topics
            if name.lower() in other:
                raise BadRequest(f"'{name}' is a {'queue' if kind == 'topic' else 'topic'}, not a {kind}.")
            raise EntityNotFound(f"The messaging entity '{self.ns.name}:{kind}:{name}' could not be found.")
        return found

    @staticmethod
    def _positive(fields: dict[str, Any], *names: str) -> None:
        for name in names:
            if name in fields and fields[name] <= 0:
                raise BadRequest(f"{name} must be a positive duration.")

    @staticmethod
    def _check_common(fields: dict[str, Any]) -> None:
        AdminApi._positive(fields, "DefaultMessageTimeToLive", "AutoDeleteOnIdle",
                           "DuplicateDetectionHistoryTimeWindow", "LockDuration")
        if fields.get("LockDuration", 0) > MAX_LOCK_SECONDS:
            raise BadRequest("LockDuration must not exceed PT5M (5 minutes), the service maximum.")
        if "MaxDeliveryCount" in fields and fields["MaxDeliveryCount"] < 1:
            raise BadRequest("MaxDeliveryCount must be at least 1.")
        if "Status" in fields and fields["Status"] not in STATUSES:
            raise BadRequest(f"Status must be one of {', '.join(sorted(STATUSES))}, not {fields['Status']!r}.")
        for name in ("MaxSizeInMegabytes", "MaxMessageSizeInKilobytes"):
            if name in fields and fields[name] < 1:
                raise BadRequest(f"{name} must be a positive integer.")

    @staticmethod
    def _extras_from(fields: dict[str, Any], names: set[str]) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if k in names}

    def create_topic(self, name: str, desc: Any) -> Topic:
        _reject_bad_name("topic", name, 260)
        fields = ax.read_fields(desc, ax.TOPIC_FIELDS)
        self._check_common(fields)
        config = TopicConfig(name=name, **ef.created(fields, ef.TOPIC))
        topic: Topic = self.ns.create_topic(config)
        self.extras(topic).update(self._extras_from(fields, TOPIC_EXTRAS))
        return topic

    def update_topic(self, topic: Topic, desc: Any) -> None:
        fields = ax.read_fields(desc, ax.TOPIC_FIELDS)
        self._check_common(fields)
        for attr, value in ef.updated(fields, ef.TOPIC, topic.config, "topic").items():
            setattr(topic.config, attr, value)
        self.extras(topic).update(self._extras_from(fields, TOPIC_EXTRAS))
        topic.updated_at = self.now()

    def create_queue(self, name: str, desc: Any) -> Queue:
        _reject_bad_name("queue", name, 260)
        fields = ax.read_fields(desc, ax.QUEUE_FIELDS)
        self._check_common(fields)
        config = QueueConfig(name=name, **ef.created(fields, ef.QUEUE))
        queue: Queue = self.ns.create_queue(config)
        self.extras(queue).update(self._extras_from(fields, QUEUE_EXTRAS))
        return queue

    def update_queue(self, queue: Queue, desc: Any) -> None:
        fields = ax.read_fields(desc, ax.QUEUE_FIELDS)
        self._check_common(fields)
        extra = self.extras(queue)
        changes = ef.updated(fields, ef.QUEUE, queue.config, "queue")
        queue.update(replace(queue.config, **changes), self.now())
        extra.update(self._extras_from(fields, QUEUE_EXTRAS))

    def _ns_limits(self) -> tuple[int, int]:
        cfg = self.ns.config
        return max(1, cfg.max_entity_bytes // (1024 * 1024)), max(1, cfg.max_message_bytes // 1024)

    def topic_values(self, topic: Topic) -> dict[str, Any]:
        size_mb, msg_kb = self._ns_limits()
        scheduled = len(topic.scheduled)
        values: dict[str, Any] = {
            **ef.described(topic.config, ef.TOPIC),
            "MaxSizeInMegabytes": size_mb,
            "EnableBatchedOperations": True,
            "SizeInBytes": topic.size_bytes(),
            "FilteringMessagesBeforePublishing": False,
            "IsAnonymousAccessible": False,
            "AuthorizationRules": [],
            "Status": "Active",
            "CreatedAt": topic.created_at,
            "UpdatedAt": topic.updated_at,
            "AccessedAt": max(topic.last_activity, topic.updated_at),
            "SupportOrdering": True,
            "CountDetails": {"ScheduledMessageCount": scheduled},
            "SubscriptionCount": len(topic.subscriptions),
            "AutoDeleteOnIdle": NEVER,
            "EnablePartitioning": False,
            "EntityAvailabilityStatus": "Available",
            "EnableExpress": False,
            "MaxMessageSizeInKilobytes": msg_kb,
        }
        values.update(self.extras(topic))
        return values

    def queue_values(self, queue: Queue) -> dict[str, Any]:
        size_mb, msg_kb = self._ns_limits()
        cfg = queue.config
        active, dead = queue.store.active_count, queue.dlq.active_count
        values: dict[str, Any] = {
            **ef.described(cfg, ef.QUEUE),
            "MaxSizeInMegabytes": size_mb,
            "EnableBatchedOperations": True,
            "SizeInBytes": queue.store.size_bytes + queue.dlq.size_bytes,
            "MessageCount": active + dead,
            "IsAnonymousAccessible": False,
            "AuthorizationRules": [],
            "Status": "Active",
            "CreatedAt": queue.created_at,
            "UpdatedAt": queue.updated_at,
            "AccessedAt": max(queue.store.last_activity, queue.dlq.last_activity, queue.updated_at),
            "SupportOrdering": True,
            "CountDetails": {
                "ActiveMessageCount": active,
                "DeadLetterMessageCount": dead,
                "ScheduledMessageCount": queue.scheduled_count,
            },
            "EnablePartitioning": False,
            "EntityAvailabilityStatus": "Available",
            "EnableExpress": False,
            "MaxMessageSizeInKilobytes": msg_kb,
        }
        values.update(self.extras(queue))
        return values

    def topic_entry(self, request: web.Request, topic: Topic) -> bytes:
        return ax.entry_xml(
            href=self._href(request, topic.name), title=topic.name, published=topic.created_at,
            updated=topic.updated_at, author=self.ns.name,
            content=ax.description_xml(ax.TOPIC, self.topic_values(topic)),
        )

    def queue_entry(self, request: web.Request, queue: Queue) -> bytes:
        return ax.entry_xml(
            href=self._href(request, queue.name), title=queue.name, published=queue.created_at,
            updated=queue.updated_at, author=self.ns.name,
            content=ax.description_xml(ax.QUEUE, self.queue_values(queue)),
        )

    # -- subscriptions --------------------------------------------------------------------------
    def subscription(self, request: web.Request, topic_name: str, name: str,
                     body: bytes) -> tuple[int, bytes, str]:
        method = request.method
        if method == "GET":
            sub = self.ns.subscription(topic_name, name)
            return 200, self.subscription_entry(request, sub), ATOM_ENTRY
        if method == "DELETE":
            self.ns.topic(topic_name).delete_subscription(name)
            return 200, b"", XML
        self._only(method, "GET", "PUT", "DELETE")
        desc = ax.parse_entry(body)
        if ax.local_name(desc.tag) != ax.SUBSCRIPTION:
            raise ax.AdminXmlError(f"PUT needs a SubscriptionDescription, not <{ax.local_name(desc.tag)}>.")
        if self._is_update(request):
            try:
                sub = self.ns.subscription(topic_name, name)
            except EntityNotFound:
                self.ns.topic(topic_name)
                raise
            self.update_subscription(sub, desc)
            return 200, self.subscription_entry(request, sub), ATOM_ENTRY
        sub = self.create_subscription(topic_name, name, desc)
        return 201, self.subscription_entry(request, sub), ATOM_ENTRY

    def create_subscription(self, topic_name: str, name: str, desc: Any) -> Subscription:
        _reject_bad_name("subscription", name, 50)
        self.ns.topic(topic_name)  # 404 for a missing topic before anything else
        fields = ax.read_fields(desc, ax.SUBSCRIPTION_FIELDS)
        self._check_common(fields)
        default_rule = None
        for child in desc:
            if ax.local_name(child.tag) in ("DefaultRuleDescription", "RuleDescription"):
                name_el = next((c for c in child if ax.local_name(c.tag) == "Name"), None)
                rule_name = (name_el.text or "").strip() if name_el is not None else ""
                default_rule = ax.parse_rule(child, rule_name or DEFAULT_RULE)
        rules: list[RuleConfig] = []
        if default_rule is not None:
            _reject_bad_name("rule", default_rule.name, 50)
            rules = [default_rule.to_rule_config()]
        config = SubscriptionConfig(name=name, **ef.created(fields, ef.SUBSCRIPTION), rules=rules)
        sub: Subscription = self.ns.create_subscription(topic_name, config)
        self.extras(sub).update(self._extras_from(fields, SUBSCRIPTION_EXTRAS))
        if default_rule is not None:
            rule = sub.rules[default_rule.name.lower()]
            self._rules[id(rule)] = _RuleMeta(rule, default_rule, sub.created_at)
        return sub

    def update_subscription(self, sub: Subscription, desc: Any) -> None:
        fields = ax.read_fields(desc, ax.SUBSCRIPTION_FIELDS)
        self._check_common(fields)
        changes = ef.updated(fields, ef.SUBSCRIPTION, sub.config, "subscription")
        sub.update(replace(sub.config, **changes), self.now())
        self.extras(sub).update(self._extras_from(fields, SUBSCRIPTION_EXTRAS))

    def subscription_values(self, sub: Subscription) -> dict[str, Any]:
        cfg = sub.config
        active, dead = sub.store.active_count, sub.dlq.active_count
        values: dict[str, Any] = {
            **ef.described(cfg, ef.SUBSCRIPTION),
            "DeadLetteringOnFilterEvaluationExceptions": True,
            "MessageCount": active + dead,
            "EnableBatchedOperations": True,
            "Status": "Active",
            "CreatedAt": sub.created_at,
            "UpdatedAt": sub.updated_at,
            "AccessedAt": max(sub.store.last_activity, sub.dlq.last_activity, sub.created_at),
            "CountDetails": {"ActiveMessageCount": active, "DeadLetterMessageCount": dead},
            "EntityAvailabilityStatus": "Available",
        }
        values.update(self.extras(sub))
        return values

    def subscription_entry(self, request: web.Request, sub: Subscription) -> bytes:
        path = f"{sub.topic.name}/subscriptions/{sub.name}"
        return ax.entry_xml(
            href=self._href(request, path), title=sub.name, published=sub.created_at,
            updated=sub.updated_at, content=ax.description_xml(ax.SUBSCRIPTION, self.subscription_values(sub)),
        )

    def list_subscriptions(self, request: web.Request, topic_name: str) -> bytes:
        topic = self.ns.topic(topic_name)
        subs = sorted(topic.subscriptions.values(), key=lambda s: s.name.lower())
        entries = [
            ax.FeedEntry(self._href(request, f"{topic.name}/subscriptions/{s.name}"), s.name, s.created_at,
                         s.updated_at, ax.description_xml(ax.SUBSCRIPTION, self.subscription_values(s)))
            for s in subs
        ]
        return self._feed(request, f"{topic.name}/subscriptions", "Subscriptions", entries)

    # -- rules ----------------------------------------------------------------------------------
    def _rule_spec(self, sub: Subscription, rule: Rule) -> tuple[ax.RuleSpec, float]:
        meta = self.rule_meta(rule)
        if meta is not None:
            return meta.spec, meta.created_at
        return ax.RuleSpec.from_config(rule.config), sub.created_at

    def rule(self, request: web.Request, topic_name: str, sub_name: str, name: str,
             body: bytes) -> tuple[int, bytes, str]:
        method = request.method
        sub = self.ns.subscription(topic_name, sub_name)
        if method == "GET":
            rule = sub.rules.get(name.lower())
            if rule is None:
                raise EntityNotFound(f"The rule '{name}' does not exist on '{topic_name}/{sub_name}'.")
            return 200, self.rule_entry(request, sub, rule), ATOM_ENTRY
        if method == "DELETE":
            sub.remove_rule(name)
            return 200, b"", XML
        self._only(method, "GET", "PUT", "DELETE")
        _reject_bad_name("rule", name, 50)
        desc = ax.parse_entry(body)
        if ax.local_name(desc.tag) != ax.RULE:
            raise ax.AdminXmlError(f"PUT needs a RuleDescription, not <{ax.local_name(desc.tag)}>.")
        spec = ax.parse_rule(desc, name)
        spec.name = name
        config = spec.to_rule_config()
        now = self.now()
        if self._is_update(request):
            old = sub.rules.get(name.lower())
            if old is None:
                raise EntityNotFound(f"The rule '{name}' does not exist on '{topic_name}/{sub_name}'.")
            rule = Rule.build(config)  # BadRequest (with the filter's error) before anything changes
            sub.rules[name.lower()] = rule
            created = self._rule_spec(sub, old)[1]
            self._rules[id(rule)] = _RuleMeta(rule, spec, created)
            return 200, self.rule_entry(request, sub, rule), ATOM_ENTRY
        if name.lower() in sub.rules:
            raise EntityExists(f"The rule '{name}' already exists on '{topic_name}/{sub_name}'.")
        rule = sub.add_rule(config)
        self._rules[id(rule)] = _RuleMeta(rule, spec, now)
        return 201, self.rule_entry(request, sub, rule), ATOM_ENTRY

    def rule_entry(self, request: web.Request, sub: Subscription, rule: Rule) -> bytes:
        spec, created = self._rule_spec(sub, rule)
        path = f"{sub.topic.name}/subscriptions/{sub.name}/rules/{spec.name}"
        return ax.entry_xml(
            href=self._href(request, path), title=spec.name, published=created, updated=created,
            content=ax.rule_description_xml(spec, created),
        )

    def list_rules(self, request: web.Request, topic_name: str, sub_name: str) -> bytes:
        sub = self.ns.subscription(topic_name, sub_name)
        entries = []
        for rule in sorted(sub.rules.values(), key=lambda r: r.config.name.lower()):
            spec, created = self._rule_spec(sub, rule)
            path = f"{sub.topic.name}/subscriptions/{sub.name}/rules/{spec.name}"
            entries.append(ax.FeedEntry(self._href(request, path), spec.name, created, created,
                                        ax.rule_description_xml(spec, created)))
        return self._feed(request, f"{sub.topic.name}/subscriptions/{sub.name}/rules", "Rules", entries)

    # -- diagnostics ----------------------------------------------------------------------------
    def debug_snapshot(self) -> dict[str, Any]:
        """Entities and counts as JSON (``GET /$emulator/entities``); no secrets."""
        return {
            "namespace": self.ns.name,
            "topics": {
                t.name: {
                    "scheduled": len(t.scheduled),
                    "subscriptions": {
                        s.name: {
                            "active": s.store.active_count,
                            "deadLetter": s.dlq.active_count,
                            "consumers": len(s.store.consumers),
                            "rules": [r.config.name for r in s.rules.values()],
                            "autoDeleteOnIdle": s.config.auto_delete_on_idle,
                        }
                        for s in t.subscriptions.values()
                    },
                }
                for t in self.ns.topics.values()
            },
            "queues": {
                q.name: {"active": q.store.active_count, "deadLetter": q.dlq.active_count}
                for q in self.ns.queues.values()
            },
        }


def make_admin_app(runtime: Runtime, *first: Callable[[web.Application], None]) -> web.Application:
    """The namespace's HTTP application: ``first`` add their routes (AMQP over WebSockets) ahead
    of the management API, whose catch-all route comes last."""
    api = AdminApi(runtime)
    # foreign Host / browser Origin refused before any handler, HTTP and WebSocket alike
    app = web.Application(client_max_size=ax.MAX_BODY_BYTES, middlewares=[origin_guard.middleware(runtime)])
    for add_routes in first:
        add_routes(app)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app
