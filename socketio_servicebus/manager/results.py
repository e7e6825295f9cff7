"""What ``fetch_sockets`` and ``server_side_emit`` return: the answers, and who did not answer.

A request across nodes ends either when every node it waits for has answered or at the timeout.
In the second case the answers that arrived are still returned (Node's adapters reject the whole
call instead); the caller learns which nodes are not in them from :attr:`ClusterResult.missing`,
or asks for an exception with ``raise_on_missing=True`` (:class:`IncompleteResult`, defined in
:mod:`socketio_servicebus.errors` with the other exceptions, the partial result attached).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from socketio_servicebus.errors import IncompleteResult

__all__ = ["ClusterResult", "IncompleteResult"]

_T = TypeVar("_T")


class ClusterResult(list[_T]):
    """A list of the answers (compares and iterates like a plain list) with what it lacks.

    * ``missing``: ids of the nodes asked that did not answer in time, sorted. Their part is not
      in the list. A node is asked when the registry knows it (heartbeats); one that missed its
      heartbeats or a previous request is asked but not waited for, and is listed here unless it
      answered in time anyway.
    * ``errors``: node id -> error text for nodes that answered with an error (a
      ``server_side_emit`` handler that raised, a node too busy to serve the request).
    * ``elapsed``: seconds the request took.
    """

    __slots__ = ("missing", "errors", "elapsed")

    def __init__(
        self,
        items: Iterable[_T] = (),
        *,
        missing: Iterable[str] = (),
        errors: Mapping[str, str] | None = None,
        elapsed: float = 0.0,
    ) -> None:
        super().__init__(items)
        self.missing: tuple[str, ...] = tuple(sorted(missing))
        self.errors: dict[str, str] = dict(errors or {})
        self.elapsed = elapsed

    @property
    def complete(self) -> bool:
        """Every node asked has answered (possibly with an error: see ``errors``)."""
        return not self.missing

    def __repr__(self) -> str:
        return f"ClusterResult({list.__repr__(self)}, missing={list(self.missing)}, elapsed={self.elapsed:.3f})"
