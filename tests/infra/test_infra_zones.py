"""The cloud zone key reaches the Function App and the cloud relay nodes as a secret, under the
names the code reads (socketio_servicebus.zones.config, relay_node.config), never in an output."""

from __future__ import annotations

import re
from pathlib import Path

from relay_node.config import ENV_VARS
from socketio_servicebus.zones.config import SETTING_ZONE, SETTING_ZONE_KEY, SETTING_ZONES

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_the_cloud_zone_key_is_a_secret_wired_to_the_function_app_and_the_relay_nodes() -> None:
    assert (ENV_VARS["zone"], ENV_VARS["zone_key"], ENV_VARS["zones"]) == (SETTING_ZONE, SETTING_ZONE_KEY, SETTING_ZONES)
    main, api, relay = ((INFRA / p).read_text() for p in ("main.bicep", "app/api.bicep", "app/relay-containerapp.bicep"))
    for text in (main, api, relay):
        assert re.search(r"@secure\(\)(?:(?!\nparam ).)*\nparam cloudZoneKey string", text, re.S)
        assert "param zonesDocument string" in text
        for line in text.splitlines():
            if line.startswith("output "):
                assert "cloudZoneKey" not in line and "zoneSettings" not in line, line
    assert main.count("cloudZoneKey: cloudZoneKey") == 2 and main.count("zonesDocument: zonesDocument") == 2
    assert re.search(r"SIO_ZONE: 'cloud'\n\s*SIO_ZONE_KEY: cloudZoneKey", api) and "zoneSettings" in api.split("appSettings: union(")[1]
    assert re.search(r"name: 'SIO_ZONE_KEY'\n\s*secretRef: 'cloud-zone-key'", relay)
    assert re.search(r"name: 'cloud-zone-key'\n\s*value: cloudZoneKey", relay)
    assert "zoneEnv)" in relay
