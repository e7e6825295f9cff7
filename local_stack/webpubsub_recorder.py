"""A local stand-in for Azure Web PubSub's REST API that records what it is sent.

No Web PubSub emulator exists, so the local stack and the tests point the real
``azure-messaging-webpubsubservice`` client at this recorder: it accepts the data-plane calls
(``POST /api/hubs/{hub}/:send``, ``/groups/{group}/:send``, ``/users/{user}/:send``,
``/connections/{id}/:send``), checks that a bearer token is present, answers 202, and keeps
the last requests for inspection at ``GET /recorded``. It does not deliver to anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque
from typing import Any

from aiohttp import web

ACCESS_KEY = "bG9jYWwtd2VicHVic3ViLXJlY29yZGVyLWtleS0wMTIzNDU2Nzg5"  # not a secret: local recorder only


def connection_string(port: int) -> str:
    return f"Endpoint=http://127.0.0.1:{port};AccessKey={ACCESS_KEY};Version=1.0;"


def make_app(limit: int = 1000) -> web.Application:
    recorded: deque[dict[str, Any]] = deque(maxlen=limit)
    app = web.Application(client_max_size=1024 * 1024)
    app["recorded"] = recorded

    async def record(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.json_response({"error": "missing bearer token"}, status=401)
        body = await request.read()
        recorded.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "hub": request.match_info.get("hub"),
                "group": request.match_info.get("group"),
                "content_type": request.headers.get("Content-Type"),
                "auth": auth.split(" ", 1)[0],
                "body": body.decode("utf-8", "replace"),
            }
        )
        return web.Response(status=202)

    async def dump(_: web.Request) -> web.Response:
        return web.json_response(list(recorded))

    async def clear(_: web.Request) -> web.Response:
        recorded.clear()
        return web.Response(status=204)

    app.router.add_post("/api/hubs/{hub}/:send", record)
    app.router.add_post("/api/hubs/{hub}/groups/{group}/:send", record)
    app.router.add_post("/api/hubs/{hub}/users/{user}/:send", record)
    app.router.add_post("/api/hubs/{hub}/connections/{conn}/:send", record)
    app.router.add_route("*", "/api/{tail:.*}", record)
    app.router.add_get("/recorded", dump)
    app.router.add_delete("/recorded", clear)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"webpubsub recorder listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

__all__ = ["connection_string", "make_app"]
