"""History token keys scoped per ``kid`` to room prefixes: a site's key opens only its own rooms."""

from __future__ import annotations

import json

import pytest

from socketio_servicebus.history_token import HistoryKeys, KeyConfigError, TokenError, key_id, mint, verify

CLOUD = "c" * 40
SITE = "factory1-history-key-0123456789abcdef"
OTHER = "another-site-history-key-0123456789abc"
NOW = 1_800_000_000.0


def keys() -> HistoryKeys:
    return HistoryKeys.from_settings(CLOUD).with_scoped(json.dumps([
        {"key": SITE, "rooms": ["chat:factory1"]}, {"key": OTHER, "rooms": ["chat:depot", "ops:depot"]}]))


def test_a_site_key_opens_its_own_rooms_only() -> None:
    claims = verify(mint(SITE, ns="/", since=0, room="chat:factory1:line2", now=NOW), keys(), now=NOW)
    assert claims.kid == key_id(SITE) and claims.scope == ("chat:factory1",)
    assert claims.covers("/", "chat:factory1:line2")
    lobby = verify(mint(SITE, ns="/", since=0, room="chat:lobby", now=NOW), keys(), now=NOW)
    assert not lobby.covers("/", "chat:lobby")  # valid signature, outside the scope: 403 at the API


def test_each_kid_has_its_own_prefixes_and_the_cloud_key_stays_unscoped() -> None:
    depot = verify(mint(OTHER, ns="/", since=0, room="ops:depot:1", now=NOW), keys(), now=NOW)
    assert depot.covers("/", "ops:depot:1")
    assert not verify(mint(OTHER, ns="/", since=0, room="chat:factory1", now=NOW), keys(), now=NOW).covers("/", "chat:factory1")
    cloud = verify(mint(CLOUD, ns="/", since=0, room="chat:factory1", now=NOW), keys(), now=NOW)
    assert cloud.scope is None and cloud.covers("/", "chat:factory1")


def test_an_unknown_site_key_is_refused() -> None:
    with pytest.raises(TokenError) as info:
        verify(mint("z" * 40, ns="/", since=0, room="chat:factory1", now=NOW), keys(), now=NOW)
    assert info.value.status == 401


@pytest.mark.parametrize("doc, words", [
    ("{", "not valid JSON"),
    (json.dumps({"key": SITE}), "entry #0"),
    (json.dumps([{"key": SITE, "rooms": []}]), "entry #0"),
    (json.dumps([{"key": "short", "rooms": ["r"]}]), "at least 32"),
])
def test_a_bad_scoped_key_document_names_the_setting_not_the_key(doc: str, words: str) -> None:
    with pytest.raises(KeyConfigError, match=words) as info:
        HistoryKeys.from_settings(CLOUD).with_scoped(doc)
    assert SITE not in str(info.value) and "SIO_HISTORY_TOKEN_SCOPED_KEYS" in str(info.value)
