"""The relay node command line: the only place that reads the environment.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for configuration errors (bad flags, a
connection string Service Bus refuses, an unknown topic or subscription, missing rights, an app
that does not load), 1 when Service Bus stays unreachable for ``--startup-timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from socketio_servicebus.extras import missing_modules

from .config import PROG, ConfigError, RelayConfig, from_args


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _setup_logging(level: str, *, traced: bool = False) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if traced:  # records carry trace_id/span_id (socketio_servicebus.tracing.install_log_correlation)
        fmt += " trace_id=%(trace_id)s span_id=%(span_id)s"
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt, force=True)
    if level != "DEBUG":
        # one line per lifecycle step: keep the SDK's and uvicorn's chatter out
        for name in ("azure", "uamqp", "uvicorn", "uvicorn.error", "engineio", "socketio"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def run(cfg: RelayConfig) -> int:
    from .probe import StartupError
    from .server import RelayNode

    credential = None
    if cfg.fully_qualified_namespace:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    node = RelayNode(cfg, credential=credential)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    interrupted = False

    def stop_during_startup() -> None:
        nonlocal interrupted
        interrupted = True
        main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_during_startup)
    try:
        await node.start()
    except StartupError as exc:
        _error(str(exc))
        await _cleanup(node, credential)
        return 2 if exc.fatal else 1
    except asyncio.CancelledError:
        if not interrupted:
            raise
        logging.getLogger("relay_node").info("stopped during startup")
        await _cleanup(node, credential)
        return 0
    node.install_signal_handlers()
    await node.wait_stopped()
    return 0


async def _cleanup(node: object, credential: object) -> None:
    manager = getattr(node, "manager", None)
    if manager is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(manager.close(), 10)
    close_tunnel = getattr(node, "close_tunnel", None)
    if close_tunnel is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(close_tunnel(), 5)
    if credential is not None:
        with contextlib.suppress(Exception):
            await credential.close()  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = from_args(argv, os.environ)
    except ConfigError as exc:
        _error(str(exc))
        return 2
    provider = _setup_tracing(cfg)
    _setup_logging(cfg.log_level, traced=provider is not None)
    try:
        return asyncio.run(run(cfg))
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally take it
        return 130
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans


def _setup_tracing(cfg: RelayConfig) -> Any:
    """Spans exported as the OTEL_* variables say (docs/observability.md); None when off."""
    missing = missing_modules("otel")
    if missing:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("SIO_OTEL_EXTRA_ENDPOINTS") \
                or os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            print(f"{PROG}: warning: tracing is asked for but module {missing[0]!r} is missing: install the "
                  "'otel' extra: pip install 'socketio-servicebus[relay,otel]'", file=sys.stderr, flush=True)
        return None
    from socketio_servicebus import otel

    settings = otel.settings_from_env("relay-node", cfg.node_id, region=cfg.region)
    return otel.configure(settings) if settings is not None else None


if __name__ == "__main__":
    sys.exit(main())
