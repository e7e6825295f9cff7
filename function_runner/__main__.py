"""``python -m function_runner``: run the Function App locally (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from .app import KEY_SETTING, FunctionSpec, LocalSettings, host_settings, load_app, load_settings, specs_of
from .host_encoding import BindingError, check_binding
from .http import build_http_app
from .servicebus import ServiceBusTriggerRunner


def _log(line: str) -> None:
    print(f"function-runner: {line}", flush=True)


def _sb_client(connection: str) -> object:
    from shared.connections import credential_for, resolve
    from socketio_servicebus.servicebus.clients import servicebus_client

    conn = resolve(connection, "servicebus")
    if conn.connection_string is not None:
        return servicebus_client(connection_string=conn.connection_string)
    return servicebus_client(fully_qualified_namespace=conn.endpoint, credential=credential_for(conn))


def prepare(args: argparse.Namespace) -> tuple[Path, LocalSettings, list[FunctionSpec], dict[str, object]]:
    """Synchronous start-up (file reads, the app import) before the event loop runs."""
    root = Path(args.root).resolve()
    os.chdir(root)
    settings = load_settings(root / args.settings)
    app = load_app(args.app, root)
    return root, settings, specs_of(app), host_settings(root)


async def main_async(args: argparse.Namespace) -> int:
    _root, settings, specs, host = prepare(args)
    if args.only:
        wanted = set(args.only.split(","))
        specs = [s for s in specs if s.name in wanted]
    key = os.environ.get(KEY_SETTING) or secrets.token_urlsafe(24)
    if not os.environ.get(KEY_SETTING):
        _log(f"{KEY_SETTING} not set; generated key for this run: {key}")

    runners: list[ServiceBusTriggerRunner] = []
    clients: dict[str, object] = {}
    http_specs = []
    for spec in specs:
        _log("function " + spec.describe())
        if spec.trigger_type == "serviceBusTrigger":
            try:
                check_binding(spec.trigger)
            except BindingError as exc:
                _log(f"cannot run {spec.name}: {exc}")
                return 2
            conn = str(spec.trigger["connection"])
            if conn not in clients:
                clients[conn] = _sb_client(conn)
            runners.append(ServiceBusTriggerRunner(spec, clients[conn], host, _log))
        elif spec.trigger_type == "httpTrigger":
            http_specs.append(spec)

    site_runner = None
    if http_specs:
        web_app = build_http_app(
            http_specs, key=key, cors=settings.cors, cors_credentials=settings.cors_credentials, log=_log
        )
        site_runner = web.AppRunner(web_app, access_log=None)
        await site_runner.setup()
        site = web.TCPSite(site_runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        _log(f"http listening on http://{args.host}:{port}/api/")

    tasks = [asyncio.create_task(r.run(), name=r.spec.name) for r in runners]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _log(f"ready: {len(runners)} Service Bus trigger(s), {len(http_specs)} HTTP trigger(s)")
    await stop.wait()
    _log("stopping")
    for r in runners:
        r.stop()
    done, pending = await asyncio.wait(tasks, timeout=5)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for client in clients.values():
        try:
            await client.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
    if site_runner is not None:
        await site_runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m function_runner", description=__doc__)
    parser.add_argument("--root", default=".", help="Function App root (function_app.py, host.json)")
    parser.add_argument("--app", default="function_app", help="module holding `app = func.FunctionApp()`")
    parser.add_argument("--settings", default="local.settings.json", help="relative to --root; optional")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071, help="0 = ephemeral")
    parser.add_argument("--only", default="", help="comma-separated function names to run")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
    )
    # the SDKs are chatty at INFO (every link attach); keep their warnings
    for noisy in ("azure", "uamqp", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
