"""Keep web pages out: the emulator's HTTP port (admin API and AMQP over WebSockets) answers only
requests addressed to itself and not sent by a browser page.

A page open on a developer's machine can reach ``127.0.0.1`` two ways: a request to a name it
controls that resolves to 127.0.0.1 (DNS rebinding; the ``Host`` header then names the page's
host) and a WebSocket or ``fetch`` from the page (the browser adds ``Origin: <the page>``). So:

* ``Host`` must name the emulator: ``localhost``, a loopback address, the address it binds, the
  host it advertises in its connection strings, or one given with ``--allow-host``;
* an ``Origin`` is refused unless it is the emulator's own address (``http://localhost:<its
  port>``, which websocket-client, the sync SDK's WebSocket transport, sends on its own).

Both answer ``403`` with the reason before any handler runs; :data:`GuardStats.refused` counts them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["LOOPBACK_NAMES", "GuardStats", "allow_hosts", "allowed_hosts", "middleware", "refusal"]

log = logging.getLogger("servicebus_emulator.origin_guard")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
#: names added with ``--allow-host`` / ``SERVICEBUS_EMULATOR_ALLOWED_HOSTS`` (the CLI sets them)
_extra: set[str] = set()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class GuardStats:
    refused: int = 0


def allow_hosts(names: Iterable[str]) -> None:
    """Also accept these host names (e.g. a container name when bound to 0.0.0.0)."""
    _extra.update(n.strip().lower().strip("[]") for n in names if n.strip())


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, advertised_host: str) -> frozenset[str]:
    names = {advertised_host.lower().strip("[]"), *_extra}
    if bind_host not in _WILDCARDS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def _host_of(value: str) -> str:
    """``host`` of a ``Host`` header value (``name:port``, ``[v6]:port``), lower-case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def refusal(host_header: str | None, origin: str | None, *, allowed: frozenset[str], port: int | None) -> str | None:
    """Why a request with these headers is refused, or ``None`` to let it through."""
    if host_header:
        host = _host_of(host_header)
        if not (_is_loopback(host) or host in allowed):
            return f"Host {host_header[:100]!r} is not this emulator: it answers localhost and its own address only"
    if origin is not None:
        parts = urlsplit(origin.strip())
        try:
            origin_port = parts.port
        except ValueError:
            origin_port = None
        own = (parts.scheme in ("http", "https", "ws", "wss") and parts.hostname is not None
               and (_is_loopback(parts.hostname) or parts.hostname in allowed)
               and port is not None and origin_port == port)
        if not own:
            return (f"requests from browser pages are refused (Origin {origin[:100]!r}): the emulator is for "
                    "local SDK clients, not for web pages")
    return None


def middleware(runtime: object, stats: GuardStats | None = None) -> Middleware:
    """An aiohttp middleware for the namespace ``runtime`` (its ``host``, ``advertised_host``, ``port``)."""
    counter = stats if stats is not None else GuardStats()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = allowed_hosts(str(getattr(runtime, "host", "")), str(getattr(runtime, "advertised_host", "")))
        port = getattr(runtime, "port", None)
        reason = refusal(request.headers.get("Host"), request.headers.get("Origin"), allowed=allowed,
                         port=port if isinstance(port, int) else None)
        if reason is None:
            return await handler(request)
        counter.refused += 1
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
        return web.Response(status=403, text=reason + "\n")

    guard.stats = counter  # type: ignore[attr-defined]
    return guard
