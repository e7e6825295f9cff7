"""Run the node's connect guard (drain + auth) before every app's connect handler.

Only python-socketio's public surface is used: the registered handlers (``sio.handlers``,
``sio.namespace_handlers``) are read once the apps are set up, and each namespace gets one
``connect`` handler (``sio.on``) that runs the guard, then what the app registered. A guard
that raises ``ConnectionRefusedError`` refuses the connection before any app code runs.

Handlers registered after :func:`install_connect_guard` are not guarded: call it last.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Guard", "install_connect_guard"]

#: ``guard(sid, environ, auth)``; raises ``socketio.exceptions.ConnectionRefusedError`` to refuse
Guard = Callable[[str, dict[str, Any], Any], Awaitable[None]]


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _call_app_connect(fn: Callable[..., Any], sid: str, environ: dict[str, Any], auth: Any) -> Any:
    """Call an app's connect handler the way python-socketio does: ``(sid, environ, auth)``;
    without auth data, a legacy ``(sid, environ)`` handler is tried on ``TypeError``."""
    if auth:
        return await _call(fn, sid, environ, auth)
    try:
        return await _call(fn, sid, environ, auth)
    except TypeError as first:
        try:
            return await _call(fn, sid, environ)
        except TypeError:
            raise first from None


def install_connect_guard(sio: Any, guard: Guard) -> list[str]:
    """Guard every namespace the server accepts (``/`` always); returns them, sorted."""
    handlers: dict[str, dict[str, Any]] = sio.handlers
    classes: dict[str, Any] = sio.namespace_handlers
    listed = sio.namespaces if isinstance(sio.namespaces, list) else []
    namespaces = ({"/"} | set(handlers) | set(classes) | set(listed)) - {"*"}
    for ns in namespaces:
        sio.on("connect", _guarded(guard, handlers.get(ns, {}).get("connect"), classes.get(ns)), namespace=ns)
    wildcard = handlers.get("*", {}).get("connect")
    if wildcard is not None:  # called as (namespace, sid, environ, auth) for namespaces not listed above
        async def guarded_wildcard(namespace: str, sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
            await guard(sid, environ, auth)
            return await _call_app_connect(lambda *a: wildcard(namespace, *a), sid, environ, auth)

        sio.on("connect", guarded_wildcard, namespace="*")
    return sorted(namespaces)


def _guarded(guard: Guard, fn: Callable[..., Any] | None, cls: Any) -> Callable[..., Awaitable[Any]]:
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        await guard(sid, environ, auth)
        if fn is not None:
            return await _call_app_connect(fn, sid, environ, auth)
        if cls is not None:  # a class-based namespace: its on_connect, as python-socketio would call it
            return await _call_app_connect(lambda *a: cls.trigger_event("connect", *a), sid, environ, auth)
        return None

    return connect
