"""Settings (local.settings.json, host.json) and function metadata, read from the app itself."""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FunctionSpec", "LocalSettings", "load_settings", "load_app", "specs_of", "host_settings"]

#: Setting holding the key that ``authLevel: function``/``admin`` routes require locally.
KEY_SETTING = "FUNCTIONS_LOCAL_KEY"


@dataclass
class LocalSettings:
    values: dict[str, str] = field(default_factory=dict)
    cors: list[str] = field(default_factory=list)
    cors_credentials: bool = False
    path: Path | None = None


def load_settings(path: str | Path | None, *, apply_env: bool = True) -> LocalSettings:
    """Read ``local.settings.json`` (``Values``, ``Host.CORS``); put ``Values`` into ``os.environ``.

    Variables already in the environment win, as with Core Tools.
    """
    out = LocalSettings()
    if path is not None and Path(path).exists():
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        out.path = Path(path)
        out.values = {str(k): str(v) for k, v in (doc.get("Values") or {}).items()}
        host = doc.get("Host") or {}
        out.cors = [o.strip() for o in str(host.get("CORS") or "").split(",") if o.strip()]
        out.cors_credentials = bool(host.get("CORSCredentials", False))
    if apply_env:
        for key, value in out.values.items():
            os.environ.setdefault(key, value)
    return out


def host_settings(root: Path) -> dict[str, Any]:
    """``extensions.serviceBus`` of ``host.json`` (empty if absent)."""
    path = root / "host.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return dict((doc.get("extensions") or {}).get("serviceBus") or {})


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: dict[str, Any]
    bindings: tuple[dict[str, Any], ...]
    func: Any

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type"))

    def describe(self) -> str:
        t = self.trigger
        if self.trigger_type == "serviceBusTrigger":
            entity = t.get("queueName") or f"{t.get('topicName')}/{t.get('subscriptionName')}"
            return f"{self.name}: serviceBusTrigger {entity} via {t.get('connection')} (cardinality {t.get('cardinality', 'one')})"
        if self.trigger_type == "httpTrigger":
            return f"{self.name}: httpTrigger {','.join(t.get('methods') or ['*'])} /api/{t.get('route') or self.name} (auth {t.get('authLevel', 'FUNCTION')})"
        return f"{self.name}: {self.trigger_type} (not run locally)"


def load_app(module: str = "function_app", root: str | Path | None = None) -> Any:
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module).app


def specs_of(app: Any) -> list[FunctionSpec]:
    """Every function with its bindings, from ``get_function_json()`` (the host's view)."""
    out = []
    for fn in app.get_functions():
        doc = json.loads(fn.get_function_json())
        bindings = tuple(doc.get("bindings") or ())
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise ValueError(f"function {fn.get_function_name()} has {len(triggers)} triggers")
        out.append(FunctionSpec(fn.get_function_name(), triggers[0], bindings, fn.get_user_function()))
    return out
