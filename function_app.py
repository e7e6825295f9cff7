"""Azure Functions (Python v2 programming model) entry point: bindings only, logic in ``shared/``.

The Functions host indexes this module at start-up with the app settings already in the
environment, so the per-region triggers below are built from ``SIO_REGION_MAP`` at import time:
for every region R there are ``router_R``, ``persist_R`` and ``webpubsub_R``, each a Service Bus
topic trigger on R's subscription of that name, through the connection setting
``ServiceBusConnection_R`` (``<name>`` = connection string, or ``<name>__fullyQualifiedNamespace``
+ ``__credential``/``__clientId``). Adding a region = new app settings + restart. See
``docs/functions.md``.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import handlers, telemetry
from shared.appcontext import AppContext, region_connection_name
from shared.persistence.hooks import load_hooks_module
from socketio_servicebus.topology import load_topology

_SUBSCRIPTIONS = load_topology()["functionSubscriptions"]
_SB_FUNCTIONS = ("router", "persist", "webpubsub")

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
ctx = AppContext.from_env()
telemetry.setup(ctx.settings.region)  # spans exported as OTEL_* / APPLICATIONINSIGHTS_* say; else off
load_hooks_module(ctx.settings.hooks_module)


def _register(kind: str, region: str) -> None:
    handler = getattr(handlers, kind)

    @app.function_name(f"{kind}_{region}")
    @app.service_bus_topic_trigger(
        arg_name="msg",
        topic_name=ctx.settings.topic,
        subscription_name=_SUBSCRIPTIONS[kind]["name"],
        connection=region_connection_name(region),
    )
    async def trigger(msg: func.ServiceBusMessage) -> None:
        await handler(ctx, region, msg)


for _region in ctx.settings.region_map.names:
    for _kind in _SB_FUNCTIONS:
        _register(_kind, _region)
if not len(ctx.settings.region_map):
    logging.getLogger(__name__).warning("SIO_REGION_MAP and SIO_REGION are empty: no Service Bus triggers")


if ctx.settings.history_keys_problem:
    logging.getLogger(__name__).error(
        "GET /api/history refuses every request (503): %s. Set the same random key (>= 32 characters) on the "
        "Function App and the relay nodes; GET /api/history/server (function key) is unaffected. See docs/security.md",
        ctx.settings.history_keys_problem,
    )


# Anonymous at the host on purpose: browsers hold no function key. The function itself requires a
# history token minted by the relay node the browser is connected to (docs/security.md).
@app.route(route="history", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def history(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.history_http(ctx, req)


# Server-side callers: the host checks the function key (x-functions-key or ?code=) before this runs.
@app.route(route="history/server", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def history_server(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.history_server_http(ctx, req)


@app.route(route="emit", methods=["POST"])
async def emit(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.emit_http(ctx, req)


@app.route(route="negotiate", methods=["GET", "POST"])
async def negotiate(req: func.HttpRequest) -> func.HttpResponse:
    return await handlers.negotiate_http(ctx, req)
