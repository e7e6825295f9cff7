"""Load ``package.module:attr`` references (apps and auth callbacks)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any


class LoadError(ValueError):
    """A ``module:attr`` reference that cannot be loaded; the message says why."""


def load_ref(spec: str, what: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"{what} {spec!r}: expected package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"{what} {spec!r}: cannot import {module_name}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise LoadError(f"{what} {spec!r}: module {module_name} has no {attr!r}") from None
    if not callable(obj):
        raise LoadError(f"{what} {spec!r}: {attr} is not callable")
    return obj


async def setup_apps(sio: Any, specs: list[str]) -> list[str]:
    """Call each ``setup(sio)`` (plain or async) in order; returns the specs loaded."""
    for spec in specs:
        setup = load_ref(spec, "--app")
        result = setup(sio)
        if inspect.isawaitable(result):
            await result
    return list(specs)
