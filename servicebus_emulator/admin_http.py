"""Admin HTTP surface (ATOM/XML management API). Placeholder until the full surface lands."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def make_admin_app(runtime: Any) -> web.Application:
    app = web.Application()

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "namespace": runtime.namespace.name})

    app.router.add_get("/health", health)
    return app
