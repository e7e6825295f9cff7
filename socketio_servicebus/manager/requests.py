"""Request/reply bookkeeping for ``fetch_sockets`` and ``server_side_emit`` (pure asyncio).

A request is broadcast once; each node answers with a response envelope whose
``target_node`` is the requester (and ``target_region`` its region, so the router brings it back
from other regions), so only the requester's subscription receives it.

A request is *asked* of every node the registry knows and *waits* for the ``awaited`` ones (the
registry's ``LIVE`` nodes): it is done as soon as each of those has answered, and at the timeout
otherwise. ``missing`` is what was asked and not answered, whether it was waited for or not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PendingRequest", "RequestTracker", "Reply"]


@dataclass(slots=True)
class Reply:
    node: str
    ok: bool
    data: Any = None
    error: str | None = None


@dataclass(slots=True)
class PendingRequest:
    rid: str
    op: str
    #: nodes asked (every known node)
    asked: set[str]
    #: nodes waited for (a subset of ``asked``)
    awaited: set[str]
    replies: dict[str, Reply] = field(default_factory=dict)
    parts: dict[str, dict[int, Reply]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def missing(self) -> set[str]:
        """Nodes asked that have not answered (yet)."""
        return self.asked - self.replies.keys()

    @property
    def overdue(self) -> set[str]:
        """Nodes waited for that have not answered (yet): after the wait, the ones that timed out."""
        return self.awaited - self.replies.keys()

    def _check(self) -> None:
        if not self.overdue:
            self.done.set()


class RequestTracker:
    def __init__(self) -> None:
        self._pending: dict[str, PendingRequest] = {}

    def open(self, op: str, asked: set[str], awaited: set[str] | None = None) -> PendingRequest:
        """A request to ``asked`` that waits for ``awaited`` (default: all of ``asked``)."""
        req = PendingRequest(uuid.uuid4().hex, op, set(asked), set(asked if awaited is None else awaited & asked))
        self._pending[req.rid] = req
        req._check()
        return req

    def deliver(self, rid: str, reply: Reply, part: int = 0, parts: int = 1) -> bool:
        """Record a reply (or part ``part`` of ``parts`` of a list reply, concatenated in order
        once all parts are in); ``False`` for unknown (late or foreign) request ids."""
        req = self._pending.get(rid)
        if req is None:
            return False
        if parts > 1:
            got = req.parts.setdefault(reply.node, {})
            got[part] = reply
            if len(got) < parts:
                return True
            del req.parts[reply.node]
            data: list[Any] = []
            for i in range(parts):
                p = got[i]
                if not p.ok or not isinstance(p.data, list):
                    reply = p
                    break
                data.extend(p.data)
            else:
                reply = Reply(reply.node, True, data)
        req.replies[reply.node] = reply
        req._check()
        return True

    def forget_node(self, node: str) -> None:
        """A node left or was forgotten: stop asking it (it is not ``missing`` either)."""
        for req in self._pending.values():
            if node in req.asked and node not in req.replies:
                req.asked.discard(node)
                req.awaited.discard(node)
                req._check()

    async def wait(self, req: PendingRequest, timeout: float) -> PendingRequest:  # noqa: ASYNC109 - public API
        """Wait until every awaited node replied or ``timeout`` passed; never raises on timeout."""
        try:
            await asyncio.wait_for(req.done.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._pending.pop(req.rid, None)
            req.elapsed = time.monotonic() - req.started
        return req

    def __len__(self) -> int:
        return len(self._pending)
