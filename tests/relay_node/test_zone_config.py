"""Relay node trust-zone settings: flags and environment, and the errors that stop a start (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay_node.config import ConfigError, from_args
from socketio_servicebus.zones import ZoneKey
from tests.support.zones import make_zones

CONN = "Endpoint=sb://localhost:5672;SharedAccessKeyName=Root;SharedAccessKey=k;UseDevelopmentEmulator=true"
Z = make_zones()


def test_zones_are_off_unless_a_zone_is_given() -> None:
    cfg = from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert cfg.zones is None and cfg.max_nodes == 1000


def test_a_site_node_from_files(tmp_path: Path) -> None:
    key, doc = tmp_path / "zone.key", tmp_path / "zones.json"
    key.write_text(Z.site.text() + "\n")
    doc.write_text(Z.document())
    cfg = from_args(["--zone", "factory1", "--zone-key-file", str(key), "--zones-file", str(doc), "--max-nodes", "20"],
                    {"SERVICEBUS_CONNECTION_STRING": CONN})
    assert cfg.zones is not None and cfg.zones.local_zone == "factory1" and cfg.max_nodes == 20
    assert cfg.zones.signer is not None and cfg.zones.signer.kid == Z.site.kid
    assert cfg.zones.local.rooms == ("chat:factory1",)
    assert Z.site.text() not in repr(cfg)  # the key never shows in the config's repr


def test_a_cloud_node_from_the_environment() -> None:
    cfg = from_args([], {"SERVICEBUS_CONNECTION_STRING": CONN, **Z.env("cloud")})
    assert cfg.zones is not None and cfg.zones.local_zone == "cloud" and "factory1" in cfg.zones.zones


@pytest.mark.parametrize("argv, env, words", [
    (["--zone", "factory1"], {"SIO_ZONES": Z.document()}, "no private key"),
    (["--zone", "nowhere"], {"SIO_ZONES": Z.document(), "SIO_ZONE_KEY": ZoneKey.generate("x").text()},
     "'nowhere' is not a zone"),
    (["--zone", "factory1"], {"SIO_ZONES": "{", "SIO_ZONE_KEY": Z.site.text()}, "not valid JSON"),
    (["--zone", "factory1", "--zone-key-file", "/nonexistent/zone.key"], {}, "SIO_ZONE_KEY_FILE"),
])
def test_a_zone_that_cannot_work_stops_the_start(argv: list[str], env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        from_args(argv, {"SERVICEBUS_CONNECTION_STRING": CONN, **env})
    assert Z.site.text() not in str(info.value)
