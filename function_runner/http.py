"""HTTP triggers: aiohttp at ``/api/<route>``; the request goes to the function as the host encodes
it and the worker decodes it (``host_encoding``), the response comes back through the worker's
``HttpResponseConverter``."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .app import FunctionSpec
from .host_encoding import decode_http_request, encode_http_response, http_request_datum
from .servicebus import invoke

__all__ = ["build_http_app"]

#: The Functions host accepts request bodies up to 100 MB (functions enforce their own limits).
MAX_BODY = 100 * 1024 * 1024


def _aiohttp_route(route: str) -> str:
    # Functions route templates: {name}, {name:int}, {name?} -> aiohttp {name}
    return "/api/" + re.sub(r"\{(\w+)(?::[^}]*)?\??\}", r"{\1}", route.strip("/"))


def _cors_headers(origin: str | None, allowed: list[str], credentials: bool) -> dict[str, str]:
    if not origin or not allowed:
        return {}
    if "*" in allowed and not credentials:
        value = "*"
    elif origin in allowed or "*" in allowed:
        value = origin
    else:
        return {}
    out = {"Access-Control-Allow-Origin": value, "Vary": "Origin"}
    if credentials:
        out["Access-Control-Allow-Credentials"] = "true"
    return out


def build_http_app(
    specs: list[FunctionSpec],
    *,
    key: str,
    cors: list[str],
    cors_credentials: bool,
    log: Callable[[str], None],
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    def make_handler(spec: FunctionSpec) -> Any:
        t = spec.trigger
        methods = {m.upper() for m in t.get("methods") or []}
        auth = str(t.get("authLevel", "FUNCTION")).upper()

        async def handler(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            cors_h = _cors_headers(origin, cors, cors_credentials)
            if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method") and cors_h:
                # Preflight, answered by the host before auth (as App Service CORS does).
                return web.Response(
                    status=204,
                    headers={
                        **cors_h,
                        "Access-Control-Allow-Methods": ", ".join(sorted(methods or {"GET", "POST"})),
                        "Access-Control-Allow-Headers": request.headers.get(
                            "Access-Control-Request-Headers", "content-type, x-functions-key"
                        ),
                        "Access-Control-Max-Age": "3600",
                    },
                )
            if auth in ("FUNCTION", "ADMIN"):
                given = request.headers.get("x-functions-key") or request.query.get("code") or ""
                if not hmac.compare_digest(given.encode(), key.encode()):
                    return web.Response(status=401, headers=cors_h)
            if methods and request.method not in methods:
                return web.Response(status=405, headers={**cors_h, "Allow": ", ".join(sorted(methods))})
            body = await request.read()  # read in full either way, so the connection stays usable
            req = decode_http_request(
                http_request_datum(
                    method=request.method,
                    url=f"{request.scheme}://{request.host}{request.raw_path}",
                    headers=request.headers.items(),
                    query=request.query.items(),
                    route_params=dict(request.match_info),
                    body=body,
                    content_length=request.content_length,
                )
            )
            if body and not request.content_length:
                log(f"{spec.name}: request without Content-Length: body of {len(body)} bytes not passed on, as the host does")
            try:
                resp = await invoke(spec, req)
            except Exception as exc:  # noqa: BLE001 - the host answers 500 without details
                # the path only: the query may carry ?code=<function key> (never logged)
                log(f"{spec.name}: {request.method} {request.path[:200]} raised {type(exc).__name__}: {exc}")
                return web.Response(status=500, headers=cors_h)
            if resp is None:
                return web.Response(status=204, headers=cors_h)
            if not isinstance(resp, (func.HttpResponse, str)):
                log(f"{spec.name}: returned {type(resp).__name__}, not an HttpResponse -> 500")
                return web.Response(status=500, headers=cors_h)
            result = encode_http_response(resp)
            headers = CIMultiDict(result.headers)
            headers.update(cors_h)
            out = web.Response(status=result.status, body=result.body, headers=headers)
            log(f"{spec.name}: {request.method} {request.path} -> {result.status}")
            return out

        return handler

    for spec in specs:
        route = str(spec.trigger.get("route") or spec.name)
        app.router.add_route("*", _aiohttp_route(route), make_handler(spec))
    return app
