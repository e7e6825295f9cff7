"""The cluster of nodes sharing a topic: heartbeats, the node registry, and request/reply
(``fetch_sockets``, ``server_side_emit``).

:class:`Cluster` does no I/O of its own: every method that means something must be sent
*returns* the envelope(s), and the manager queues them. What it needs of python-socketio (the
number of clients, the local sockets of a room) the manager passes in as arguments.

Request/reply: a request is broadcast once (the router takes it to every region); each node
answers with a response envelope whose ``target_node`` is the requester and ``target_region``
the requester's region, so only the requester's subscription receives it, wherever it is. A
``fetch_sockets`` answer too large for one message goes in parts
(:class:`~socketio_servicebus.manager.requests.RequestTracker` joins them). A request asks every
node the registry knows, waits for the ``live`` ones only
(:class:`~socketio_servicebus.manager.registry.NodeState`) and ends with the last of their
answers or at the timeout; the caller gets a
:class:`~socketio_servicebus.manager.results.ClusterResult` naming the nodes that did not answer.

Envelopes are built in one place, :meth:`Cluster.envelope`: a targeted one gets its target's
region from the registry unless the caller knows it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from socketio.base_manager import BaseManager  # type: ignore[import-untyped]

from socketio_servicebus.errors import EnvelopeError, EnvelopeTooLarge, IncompleteResult
from socketio_servicebus.manager.local_rooms import local_sockets
from socketio_servicebus.manager.registry import NodeRegistry
from socketio_servicebus.manager.requests import PendingRequest, Reply, RequestTracker
from socketio_servicebus.manager.results import ClusterResult
from socketio_servicebus.metrics import ManagerMetrics
from socketio_servicebus.wire.envelope import Envelope, Kind

__all__ = ["Cluster", "ServerEventHandler"]

#: ``handler(*args)`` -> ack value (or an awaitable of it).
ServerEventHandler = Callable[..., Any]
#: Sockets per fetch_sockets reply envelope (halved again while a part is too large).
SOCKETS_PER_PART = 500


class Cluster:
    def __init__(
        self,
        *,
        node_id: str,
        region: str,
        heartbeat_interval: float,
        node_timeout: float,
        request_timeout: float,
        max_concurrent_requests: int,
        check: Callable[[Envelope], object],
        metrics: ManagerMetrics,
        logger: logging.Logger,
    ) -> None:
        self.node_id = node_id
        self.region = region
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout
        self.request_timeout = request_timeout
        self.max_concurrent_requests = max(1, max_concurrent_requests)
        #: raises EnvelopeTooLarge for an envelope that can never be sent (the outbox's rule)
        self.check = check
        self.metrics = metrics
        self.log = logger
        self.registry = NodeRegistry(node_timeout, heartbeat_interval)
        self.requests = RequestTracker()
        self.handlers: dict[tuple[str, str], ServerEventHandler] = {}
        self.requests_active = 0

    def envelope(self, kind: Kind, body: dict[str, Any], ns: str = "/", target: str | None = None,
                 persist: bool = False, target_region: str | None = None) -> Envelope:
        """An envelope from this node; a ``target`` whose region is not given gets the region
        the registry knows for it (none for an unknown node: the message stays in this region)."""
        if target is not None and target_region is None:
            target_region = self.registry.region_of(target)
        return Envelope(kind=kind, origin_node=self.node_id, origin_region=self.region, ns=ns or "/",
                        target_node=target, target_region=target_region, body=body, persist=persist)

    # ------------------------------------------------------------------ heartbeats / registry
    def heartbeat(self, clients: int, *, hello: bool = False, bye: bool = False, to: str | None = None) -> Envelope:
        body: dict[str, Any] = {"clients": clients, "interval": self.heartbeat_interval}
        if hello:
            body["hello"] = True
        if bye:
            body["bye"] = True
        return self.envelope(Kind.HEARTBEAT, body, "/", to)

    def prune(self) -> None:
        """Forget nodes whose heartbeats stopped (and stop waiting for their replies)."""
        for gone in self.registry.prune(time.monotonic()):
            self.log.info("node %s timed out (no heartbeat for %.1fs)", gone, self.node_timeout)
            self.requests.forget_node(gone)
        self.metrics.nodes = self.server_count()

    def on_heartbeat(self, env: Envelope) -> bool:
        """Record a heartbeat; ``True`` when the sender should get this node's heartbeat now
        (it joined, or says hello)."""
        b = env.body
        node = env.origin_node
        answer = False
        if b.get("bye"):
            if self.registry.remove(node):
                self.log.info("node %s left", node)
            self.requests.forget_node(node)
        else:
            clients = b.get("clients")
            clients = clients if type(clients) is int else 0
            interval = b.get("interval")
            joined = self.registry.seen(node, env.origin_region, clients, time.time(), time.monotonic(),
                                        float(interval) if isinstance(interval, int | float) else None)
            if joined:
                self.log.info("node %s (region %s) joined", node, env.origin_region)
            answer = joined or bool(b.get("hello"))
        self.metrics.nodes = self.server_count()
        return answer

    def nodes(self, clients: int) -> list[dict[str, Any]]:
        """Live nodes from heartbeats, this one first."""
        me = {"node_id": self.node_id, "region": self.region, "clients": clients, "last_seen": time.time()}
        mono = time.monotonic()
        return [me] + [i.as_dict(mono) for i in self.registry.live(mono)]

    def server_count(self) -> int:
        return 1 + len(self.registry.live(time.monotonic()))

    # ------------------------------------------------------------------ requests sent
    def open_request(self, op: str, ns: str, body: dict[str, Any]) -> tuple[PendingRequest, Envelope | None]:
        """A request to every known node (waiting for the live ones) and its envelope; no
        envelope when no other node is known (the request is then already done)."""
        mono = time.monotonic()
        req = self.requests.open(op, self.registry.live_ids(mono), self.registry.awaited_ids(mono))
        if not req.asked:
            return req, None
        self.metrics.requests_sent += 1
        return req, self.envelope(Kind.REQUEST, {"rid": req.rid, "op": op, **body}, ns)

    async def replies(self, req: PendingRequest, timeout: float | None) -> PendingRequest:  # noqa: ASYNC109 - public API
        """Wait for the request's live nodes (at most ``timeout``); those that did not answer are
        not waited for again until their next heartbeat."""
        await self.requests.wait(req, self.request_timeout if timeout is None else timeout)
        if req.overdue:
            self.metrics.requests_timed_out += 1
            self.registry.mark_unresponsive(req.overdue)
            self.log.warning("%s: no reply from node(s) %s within %.1fs; not waited for until their next heartbeat",
                             req.op, ", ".join(sorted(req.overdue)), req.elapsed)
        elif req.missing:
            self.log.info("%s: node(s) %s not waited for (missed heartbeats or a request) and did not answer",
                          req.op, ", ".join(sorted(req.missing)))
        return req

    @staticmethod
    def _result(op: str, items: list[Any], req: PendingRequest, errors: dict[str, str],
                raise_on_missing: bool) -> ClusterResult[Any]:
        result: ClusterResult[Any] = ClusterResult(items, missing=req.missing, errors=errors, elapsed=req.elapsed)
        if raise_on_missing and result.missing:
            raise IncompleteResult(op, result)
        return result

    def sockets_result(self, local: list[dict[str, Any]], req: PendingRequest,
                       raise_on_missing: bool = False) -> ClusterResult[dict[str, Any]]:
        """``local`` and the sockets the nodes answered with, ordered by node."""
        out = list(local)
        errors: dict[str, str] = {}
        for r in sorted(req.replies.values(), key=lambda r: r.node):
            if r.ok and isinstance(r.data, list):
                out.extend(s for s in r.data if isinstance(s, dict))
            elif not r.ok:
                errors[r.node] = str(r.error)
        return self._result("fetch_sockets", out, req, errors, raise_on_missing)

    def acks_result(self, event: str, req: PendingRequest, raise_on_missing: bool = False) -> ClusterResult[Any]:
        """The acks ordered by node; nodes without a handler add none, failed handlers are in ``errors``."""
        acks = []
        errors: dict[str, str] = {}
        for r in sorted(req.replies.values(), key=lambda r: r.node):
            if r.ok:
                acks.append(r.data)
            elif r.error != "no-handler":
                errors[r.node] = str(r.error)
                self.log.warning("server_side_emit %r: node %s failed: %s", event, r.node, r.error)
        return self._result("server_side_emit", acks, req, errors, raise_on_missing)

    def on_response(self, env: Envelope) -> None:
        b = env.body
        rid = b.get("rid")
        if not isinstance(rid, str):
            return
        part, parts = b.get("part", 0), b.get("parts", 1)
        if type(part) is not int or type(parts) is not int or not 0 <= part < parts:
            return
        reply = Reply(env.origin_node, bool(b.get("ok")), b.get("data"), b.get("error"))
        self.requests.deliver(rid, reply, part, parts)

    # ------------------------------------------------------------------ requests served
    def admit(self, env: Envelope) -> list[Envelope] | None:
        """``None``: serve ``env`` (counted until :meth:`served`); else the ``busy`` answer to
        send at once (at most ``max_concurrent_requests`` are served at a time)."""
        if self.requests_active < self.max_concurrent_requests:
            self.requests_active += 1
            return None
        self.metrics.requests_refused += 1
        self.log.warning("request %s from node %s refused: %d requests already being served",
                         env.body.get("op"), env.origin_node, self.requests_active)
        rid = env.body.get("rid")
        if not isinstance(rid, str):
            return []
        return [self.envelope(Kind.RESPONSE, {"rid": rid, "ok": False, "data": None, "error": "busy"},
                              env.ns, env.origin_node, target_region=env.origin_region)]

    def register(self, namespace: str, event: str, handler: ServerEventHandler | None) -> Any:
        """Register ``handler`` for ``server_side_emit(event)`` in ``namespace``; without a handler,
        a decorator that registers the function it decorates."""
        def register(fn: ServerEventHandler) -> ServerEventHandler:
            self.handlers[(namespace, event)] = fn
            return fn

        return register(handler) if handler is not None else register

    async def answer(self, env: Envelope, rooms: BaseManager) -> list[Envelope]:
        """:meth:`serve` ``env``, with this node's sockets from python-socketio's ``rooms`` for fetch_sockets."""
        fetch = env.body.get("op") == "fetch_sockets"
        return await self.serve(env, local_sockets(rooms, self.node_id, env.ns, env.body.get("room")) if fetch else [])

    def served(self, _: object = None) -> None:
        self.requests_active -= 1

    async def serve(self, env: Envelope, sockets: list[dict[str, Any]]) -> list[Envelope]:
        """The answer to the request ``env``; ``sockets``: this node's sockets for fetch_sockets."""
        b = env.body
        rid, op = b.get("rid"), b.get("op")
        if not isinstance(rid, str):
            return []
        ok, data, error = True, None, None
        try:
            if op == "fetch_sockets":
                return self._socket_parts(env, rid, sockets)
            if op == "server_side_emit":
                handler = self.handlers.get((env.ns, str(b.get("event"))))
                if handler is None:
                    ok, error = False, "no-handler"
                else:
                    data = handler(*(b.get("args") or []))
                    if inspect.isawaitable(data):
                        data = await data
            else:
                ok, error = False, f"unknown op {op!r}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the handler's error is the reply; the requester logs it
            ok, data, error = False, None, f"{type(exc).__name__}: {exc}"[:500]
        try:
            reply = self.envelope(Kind.RESPONSE, {"rid": rid, "ok": ok, "data": data, "error": error},
                                  env.ns, env.origin_node, target_region=env.origin_region)
            self.check(reply)
        except EnvelopeError as exc:  # unserialisable or too large ack
            reply = self.envelope(Kind.RESPONSE, {"rid": rid, "ok": False, "data": None, "error": str(exc)},
                                  env.ns, env.origin_node, target_region=env.origin_region)
        return [reply]

    def _socket_parts(self, env: Envelope, rid: str, sockets: list[dict[str, Any]]) -> list[Envelope]:
        per = SOCKETS_PER_PART
        while True:
            chunks = [sockets[i:i + per] for i in range(0, len(sockets), per)] or [[]]
            envs = [
                self.envelope(Kind.RESPONSE, {"rid": rid, "ok": True, "data": c, "part": i, "parts": len(chunks)},
                              env.ns, env.origin_node, target_region=env.origin_region)
                for i, c in enumerate(chunks)
            ]
            try:
                for e in envs:  # size check before queueing anything
                    self.check(e)
            except EnvelopeTooLarge:
                if per == 1:
                    raise
                per = max(1, per // 2)
                continue
            return envs
