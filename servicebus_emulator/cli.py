"""The emulator command line: ``servicebus-emulator --config FILE [--host 127.0.0.1] [--port N]
[--data-dir DIR] [--tier standard|premium] [--credits-per-second N]``.

``--tier standard`` throttles each namespace at ``--credits-per-second`` (default 1,000, Azure's
Standard tier); ``premium`` (the default) meters and never throttles. ``--max-subscriptions-per-topic``,
``--max-sql-filters-per-topic`` and ``--max-connections`` set Azure's quotas (2,000, 2,000, 5,000).

Prints one ``namespace NAME: <connection string>`` and one ``websocket NAME: ws://...`` line per
namespace (AMQP, the admin API and AMQP over WebSockets share the port), with ``--data-dir`` a
``data dir DIR (fsync on|off)`` line, then
``servicebus-emulator ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import default_key, origin_guard
from .config import EmulatorConfig, load_config
from .errors import ConfigError, DataDirError
from .persistence import DataDir
from .server import Emulator
from .websocket import SUBPROTOCOL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="servicebus-emulator",
        description="Local Azure Service Bus emulator (AMQP 1.0 + admin API on one port per namespace).",
    )
    parser.add_argument("--config", default=os.environ.get("SERVICEBUS_EMULATOR_CONFIG"),
                        help="Config.json in the official emulator's format (default: one namespace, topic 'socketio')")
    parser.add_argument("--host", default=os.environ.get("SERVICEBUS_EMULATOR_HOST", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SERVICEBUS_EMULATOR_PORT", "5672")),
                        help="port of the first namespace; the next ones follow; 0 = ephemeral (default 5672)")
    parser.add_argument("--data-dir", default=os.environ.get("SERVICEBUS_EMULATOR_DATA_DIR") or None,
                        help="keep entities, messages and sequence numbers in this directory across restarts "
                             "(SQLite, WAL); default: in memory only, gone on exit")
    parser.add_argument("--fsync", choices=("on", "off"), default=os.environ.get("SERVICEBUS_EMULATOR_FSYNC", "on"),
                        help="with --data-dir: 'on' (default) fsyncs each commit (survives power loss); 'off' "
                             "survives a crash of the emulator but not of the OS")
    parser.add_argument("--tier", choices=("standard", "premium"),
                        default=os.environ.get("SERVICEBUS_EMULATOR_TIER", "premium"),
                        help="'standard' throttles at --credits-per-second per namespace (Azure's credit "
                             "meter); 'premium' (default) meters and never throttles")
    parser.add_argument("--credits-per-second", type=int,
                        default=int(os.environ.get("SERVICEBUS_EMULATOR_CREDITS_PER_SECOND", "1000")),
                        help="credits per namespace per second with --tier standard (default 1000, as Azure)")
    parser.add_argument("--max-subscriptions-per-topic", type=int, default=2000,
                        help="quota, as Azure (default 2000)")
    parser.add_argument("--max-sql-filters-per-topic", type=int, default=2000,
                        help="quota, as Azure (default 2000)")
    parser.add_argument("--max-connections", type=int, default=5000,
                        help="AMQP connections per namespace, as Azure (default 5000)")
    parser.add_argument("--allow-host", action="append",
                        default=[h for h in os.environ.get("SERVICEBUS_EMULATOR_ALLOWED_HOSTS", "").split(",") if h],
                        help="also answer HTTP/WebSocket requests whose Host is this name (repeatable; e.g. a "
                             "container name with --host 0.0.0.0); localhost and the bound address always work")
    parser.add_argument("--log-level", default=os.environ.get("SERVICEBUS_EMULATOR_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def apply_meter_options(config: EmulatorConfig, args: argparse.Namespace) -> None:
    """The tier, credits and quotas of the command line, on every namespace."""
    for ns in config.namespaces:
        ns.tier = args.tier
        ns.credits_per_second = args.credits_per_second
        ns.max_subscriptions_per_topic = args.max_subscriptions_per_topic
        ns.max_sql_filters_per_topic = args.max_sql_filters_per_topic
        ns.max_connections = args.max_connections


async def serve(args: argparse.Namespace) -> int:
    origin_guard.allow_hosts(args.allow_host)
    if args.credits_per_second < 1:
        print("servicebus-emulator: --credits-per-second must be at least 1", file=sys.stderr)
        return 2
    data_dir = None
    if args.data_dir:  # first: a key made up for the configuration is kept there (default_key.py)
        if args.fsync not in ("on", "off"):
            print(f"servicebus-emulator: --fsync must be on or off, not {args.fsync!r}", file=sys.stderr)
            return 2
        data_dir = DataDir(args.data_dir, fsync=args.fsync == "on")
        try:
            data_dir.open()
        except DataDirError as exc:
            print(f"servicebus-emulator: data dir error: {exc}", file=sys.stderr)
            data_dir.close()
            return 2
        default_key.use_data_dir(data_dir.path)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"servicebus-emulator: configuration error: {exc}", file=sys.stderr)
        if data_dir is not None:
            data_dir.close()
        return 2
    apply_meter_options(config, args)
    emulator = Emulator(config, host=args.host, port=args.port, data_dir=data_dir)
    try:
        await emulator.start()
    except DataDirError as exc:
        print(f"servicebus-emulator: data dir error: {exc}", file=sys.stderr)
        await emulator.stop()
        return 2
    except OSError as exc:
        print(f"servicebus-emulator: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
              "pick another --port (0 for an ephemeral one)", file=sys.stderr)
        await emulator.stop()
        return 2
    except ConfigError as exc:
        print(f"servicebus-emulator: configuration error: {exc}", file=sys.stderr)
        await emulator.stop()
        return 2
    # handlers before "ready": a SIGTERM right after it must still stop cleanly (and commit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for name, conn in emulator.connection_strings().items():
        print(f"namespace {name}: {conn}", flush=True)
    if default_key.was_generated():
        print("key: no SharedAccessPolicies configured, so RootManageSharedAccessKey has a random key made up "
              f"for this emulator{' (kept in the data dir)' if data_dir is not None else ''}: use the connection "
              "strings above; SAS_KEY_VALUE is refused", flush=True)
    for name, url in emulator.websocket_endpoints().items():
        print(f"websocket {name}: {url} (AMQP over WebSockets, subprotocol {SUBPROTOCOL}, no TLS)", flush=True)
    if data_dir is not None:
        print(f"data dir {data_dir.path} (fsync {args.fsync})", flush=True)
    print("servicebus-emulator ready", flush=True)
    await stop.wait()
    await emulator.stop()
    print("servicebus-emulator stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    profile_to = os.environ.get("SERVICEBUS_EMULATOR_PROFILE")
    if not profile_to:
        return asyncio.run(serve(args))
    # development aid: SERVICEBUS_EMULATOR_PROFILE=out.prof profiles the whole run with cProfile
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, serve(args))
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main())
