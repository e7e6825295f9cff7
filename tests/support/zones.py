"""Zone keys and settings for tests: a cloud zone and one on-premise site, ``factory1``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from socketio_servicebus.zones import ZoneKey, ZoneSet, load_zones

FACTORY_ROOMS = ("chat:factory1",)


@dataclass(frozen=True)
class TestZones:
    cloud: ZoneKey
    site: ZoneKey

    def document(self, *, max_nodes: int = 4) -> str:
        return json.dumps({"zones": [
            {"name": "cloud", "kind": "cloud", "public_keys": [self.cloud.public.text()]},
            {"name": "factory1", "kind": "onprem", "public_keys": [self.site.public.text()],
             "nodes": ["factory1", "factory1-*"], "rooms": list(FACTORY_ROOMS), "max_nodes": max_nodes},
        ]})

    def env(self, zone: str = "cloud", **extra: str) -> dict[str, str]:
        key = self.cloud if zone == "cloud" else self.site
        return {"SIO_ZONE": zone, "SIO_ZONE_KEY": key.text(), "SIO_ZONES": self.document(), **extra}

    def zone_set(self, zone: str = "cloud") -> ZoneSet:
        zs = load_zones(self.env(zone))
        assert zs is not None
        return zs


def make_zones() -> TestZones:
    return TestZones(ZoneKey.generate("cloud"), ZoneKey.generate("factory1"))
