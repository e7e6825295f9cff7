"""Trust zones: who signs for which nodes, with which keys, allowed to do what (pure; reads files only
when asked to by :func:`load_zones`).

The zone document (app setting / environment ``SIO_ZONES`` as JSON, or ``SIO_ZONES_FILE`` naming a
file holding it) lists every zone with its **public** keys; it holds no secret::

    {"zones": [
      {"name": "cloud", "kind": "cloud", "public_keys": ["<base64url 32 bytes>"]},
      {"name": "factory1", "kind": "onprem", "public_keys": ["..."],
       "nodes": ["factory1"], "rooms": ["chat:factory1"], "max_nodes": 4}
    ]}

* ``kind``: ``cloud`` keeps every right; ``onprem`` is policed (:mod:`~socketio_servicebus.zones.policy`).
* ``public_keys``: one or more (rotation: list old and new, sign with new, drop old later).
* ``nodes``: node ids the zone may sign for; an entry ending in ``*`` is a prefix. Default for a
  cloud zone: any node; an on-premise zone must list its own.
* ``rooms``: room-name prefixes an on-premise zone may emit to and persist in.
* ``max_nodes``: K, how many node ids of its own it may heartbeat for at once (default 8).

The signer's own private key is ``SIO_ZONE`` (its zone's name) and ``SIO_ZONE_KEY`` (base64url
32-byte seed) or ``SIO_ZONE_KEY_FILE``. Its public key is added to its zone's keys, and a one-zone
(cloud only) deployment needs no zone document at all; with a document, ``SIO_ZONE`` must be one
of its zones.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socketio_servicebus.zones.signing import PublicKey, ZoneKey, ZoneKeyError

__all__ = [
    "ZoneKind",
    "Zone",
    "ZoneSet",
    "ZoneConfigError",
    "DEFAULT_MAX_NODES",
    "SETTING_ZONES",
    "SETTING_ZONES_FILE",
    "SETTING_ZONE",
    "SETTING_ZONE_KEY",
    "SETTING_ZONE_KEY_FILE",
    "load_zones",
]

SETTING_ZONES = "SIO_ZONES"
SETTING_ZONES_FILE = "SIO_ZONES_FILE"
SETTING_ZONE = "SIO_ZONE"
SETTING_ZONE_KEY = "SIO_ZONE_KEY"
SETTING_ZONE_KEY_FILE = "SIO_ZONE_KEY_FILE"
DEFAULT_MAX_NODES = 8


class ZoneConfigError(ValueError):
    """The zone document or a zone key is unusable; the message names the setting, never a key."""


class ZoneKind(enum.StrEnum):
    CLOUD = "cloud"
    ONPREM = "onprem"


@dataclass(frozen=True)
class Zone:
    name: str
    kind: ZoneKind
    public_keys: tuple[PublicKey, ...] = ()
    nodes: tuple[str, ...] = ("*",)
    rooms: tuple[str, ...] = ()
    max_nodes: int = DEFAULT_MAX_NODES

    def owns_node(self, node_id: str) -> bool:
        for pattern in self.nodes:
            if pattern.endswith("*"):
                if node_id.startswith(pattern[:-1]):
                    return True
            elif node_id == pattern:
                return True
        return False

    def room_allowed(self, room: Any) -> bool:
        """``room`` (a name) starts with one of the zone's prefixes; a cloud zone allows any room."""
        if self.kind is ZoneKind.CLOUD:
            return True
        return isinstance(room, str) and any(room.startswith(p) for p in self.rooms)

    def describe(self) -> str:
        kids = ",".join(k.kid for k in self.public_keys) or "-"
        if self.kind is ZoneKind.CLOUD:
            return f"{self.name} (cloud, kid {kids})"
        return (f"{self.name} (onprem, kid {kids}, nodes {list(self.nodes)}, rooms {list(self.rooms)}, "
                f"max_nodes {self.max_nodes})")


@dataclass(frozen=True)
class ZoneSet:
    """Every known zone, the verifiers' key table (kid -> public key), and this process's own
    zone and signing key (``None`` for a process that only verifies)."""

    zones: Mapping[str, Zone]
    local_zone: str
    signer: ZoneKey | None = field(default=None, repr=False)
    by_kid: Mapping[str, PublicKey] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.local_zone not in self.zones:
            raise ZoneConfigError(f"{SETTING_ZONE}={self.local_zone!r} is not a zone of {SETTING_ZONES}")
        by_kid: dict[str, PublicKey] = {}
        for z in self.zones.values():
            for k in z.public_keys:
                if k.kid in by_kid and by_kid[k.kid].zone != z.name:
                    raise ZoneConfigError(f"zones {by_kid[k.kid].zone!r} and {z.name!r} share key {k.kid}")
                by_kid[k.kid] = k
        object.__setattr__(self, "by_kid", by_kid)

    @property
    def local(self) -> Zone:
        return self.zones[self.local_zone]

    def zone(self, name: str) -> Zone | None:
        return self.zones.get(name)

    def describe(self) -> str:
        return "; ".join(z.describe() for z in self.zones.values())


def _str_list(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ZoneConfigError(f"{where}: '{key}' must be a list of non-empty strings")
    return tuple(value)


def _parse_zone(doc: Any, i: int) -> Zone:
    where = f"{SETTING_ZONES} zone #{i}"
    if not isinstance(doc, dict):
        raise ZoneConfigError(f"{where} must be an object")
    name = doc.get("name")
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ZoneConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{SETTING_ZONES} zone {name!r}"
    try:
        kind = ZoneKind(doc.get("kind", "onprem"))
    except ValueError:
        raise ZoneConfigError(f"{where}: 'kind' must be 'cloud' or 'onprem'") from None
    try:
        keys = tuple(PublicKey.from_text(name, k) for k in _str_list(doc, "public_keys", where))
    except ZoneKeyError as exc:
        raise ZoneConfigError(f"{where}: bad public key: {exc}") from None
    nodes = _str_list(doc, "nodes", where) if "nodes" in doc else (("*",) if kind is ZoneKind.CLOUD else ())
    rooms = _str_list(doc, "rooms", where)
    if kind is ZoneKind.ONPREM:
        if not nodes or "*" in nodes:
            raise ZoneConfigError(f"{where}: an onprem zone must list its own 'nodes' (not '*')")
    max_nodes = doc.get("max_nodes", DEFAULT_MAX_NODES)
    if type(max_nodes) is not int or max_nodes < 1:
        raise ZoneConfigError(f"{where}: 'max_nodes' must be an integer >= 1")
    return Zone(name, kind, keys, nodes, rooms, max_nodes)


def parse_zones(doc: Any) -> list[Zone]:
    if not isinstance(doc, dict) or not isinstance(doc.get("zones"), list):
        raise ZoneConfigError(f'{SETTING_ZONES} must be a JSON object {{"zones": [...]}}')
    zones = [_parse_zone(z, i) for i, z in enumerate(doc["zones"])]
    names = [z.name for z in zones]
    if len(set(names)) != len(names):
        raise ZoneConfigError(f"{SETTING_ZONES}: zone names repeat: {names}")
    return zones


def _with_key(zones: Iterable[Zone], key: ZoneKey) -> dict[str, Zone]:
    out = {z.name: z for z in zones}
    z = out.get(key.zone)
    if z is None:
        if out:
            raise ZoneConfigError(f"{SETTING_ZONE}={key.zone!r} is not a zone of {SETTING_ZONES} ({sorted(out)})")
        out[key.zone] = Zone(key.zone, ZoneKind.CLOUD, (key.public,))  # one zone, no document: the cloud
    elif key.kid not in {k.kid for k in z.public_keys}:
        out[key.zone] = Zone(z.name, z.kind, (*z.public_keys, key.public), z.nodes, z.rooms, z.max_nodes)
    return out


def load_zones(env: Mapping[str, str] | None = None) -> ZoneSet | None:
    """The zone set from settings, or ``None`` when zones are off (no ``SIO_ZONE``).

    Raises :class:`ZoneConfigError` for a configuration that cannot be used.
    """
    env = os.environ if env is None else env
    local = (env.get(SETTING_ZONE) or "").strip()
    if not local:
        return None
    raw = env.get(SETTING_ZONES) or ""
    path = env.get(SETTING_ZONES_FILE) or ""
    try:
        if path:
            raw = Path(path).read_text(encoding="utf-8")
        doc = json.loads(raw) if raw.strip() else {"zones": []}
    except OSError as exc:
        raise ZoneConfigError(f"{SETTING_ZONES_FILE}={path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise ZoneConfigError(f"{SETTING_ZONES} is not valid JSON: {exc}") from None
    zones = parse_zones(doc)
    key_text = env.get(SETTING_ZONE_KEY) or ""
    key_path = env.get(SETTING_ZONE_KEY_FILE) or ""
    if key_path:
        try:
            key_text = Path(key_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ZoneConfigError(f"{SETTING_ZONE_KEY_FILE}={key_path!r}: {exc.strerror}") from None
    signer: ZoneKey | None = None
    if key_text.strip():
        try:
            signer = ZoneKey.from_text(local, key_text)
        except (ZoneKeyError, ValueError) as exc:
            raise ZoneConfigError(f"{SETTING_ZONE_KEY}: {exc}") from None
        by_name = _with_key(zones, signer)
    else:
        by_name = {z.name: z for z in zones}
    if local not in by_name:
        raise ZoneConfigError(f"{SETTING_ZONE}={local!r}: no such zone in {SETTING_ZONES} and no {SETTING_ZONE_KEY}")
    return ZoneSet(by_name, local, signer)
