"""Access to ``socketio_servicebus/topology.json``, the single source of truth for names.

The JSON file is read once (cached).  :func:`load_topology` hands out a deep
copy so callers can never corrupt the cached document.  The ``PROP_*``
constants are the Service Bus *application property* names that
subscription rules filter on (see ``docs/wire-format.md``).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

__all__ = [
    "TOPOLOGY_PATH",
    "load_topology",
    "property_names",
    "TOPIC",
    "PROP_ORIGIN_NODE",
    "PROP_ORIGIN_REGION",
    "PROP_HOPS",
    "PROP_KIND",
    "PROP_NAMESPACE",
    "PROP_PERSIST",
    "PROP_TARGET_NODE",
    "PROP_TARGET_REGION",
    "PROP_VISITED",
    "PROP_ROUTE_DONE",
]

TOPOLOGY_PATH = Path(__file__).with_name("topology.json")


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    with TOPOLOGY_PATH.open("r", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
        return data


def load_topology() -> dict[str, Any]:
    """Return the parsed ``topology.json`` (read once, returned as a copy)."""
    return copy.deepcopy(_load())


def property_names() -> dict[str, str]:
    """Return the ``properties`` mapping (logical name -> property name)."""
    return dict(_load()["properties"])


_PROPS = _load()["properties"]

TOPIC: str = _load()["topic"]
PROP_ORIGIN_NODE: str = _PROPS["originNode"]
PROP_ORIGIN_REGION: str = _PROPS["originRegion"]
PROP_HOPS: str = _PROPS["hops"]
PROP_KIND: str = _PROPS["kind"]
PROP_NAMESPACE: str = _PROPS["namespace"]
PROP_PERSIST: str = _PROPS["persist"]
PROP_TARGET_NODE: str = _PROPS["targetNode"]
PROP_TARGET_REGION: str = _PROPS["targetRegion"]
PROP_VISITED: str = _PROPS["visited"]
PROP_ROUTE_DONE: str = _PROPS["routeDone"]

del _PROPS
