"""Optional dependencies (pip extras): which modules each brings, and a one-line error for a
command whose extra is not installed. Public: relay_node and servicebus_emulator use it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: What each extra brings, by the import name of its modules.
EXTRAS: dict[str, tuple[str, ...]] = {
    "relay": ("uvicorn", "prometheus_client", "jwt"),
    "emulator": ("proton",),
    "functions": ("azure.functions", "azure.data.tables", "azure.messaging.webpubsubservice"),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http", "azure.monitor.opentelemetry.exporter"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(extra: str, prog: str, *, also: Sequence[str] = ()) -> None:
    """Exit with status 2 and one line naming the extra to install when any module is missing."""
    missing = missing_modules(extra)
    if not missing:
        return
    extras = ",".join([extra, *also])
    print(
        f"{prog}: error: missing module {missing[0]!r}: install the '{extra}' extra: "
        f"pip install 'socketio-servicebus[{extras}]'",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(2)
