"""History tokens (``socketio_servicebus.history_token``): pure functions, a fixed clock."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketio_servicebus.history_token import (
    AUDIENCE,
    LEEWAY,
    MAX_TTL,
    HistoryKeys,
    KeyConfigError,
    TokenError,
    key_id,
    mint,
    verify,
)

KEY = "k" * 16 + "0123456789abcdef0123"  # 36 characters
OLD = "an-older-history-token-key-0123456789"
NOW = 1_800_000_000.0


def token(**kw: object) -> str:
    args: dict[str, object] = {"ns": "/", "room": "chat:lobby", "now": NOW, "since": NOW - 60}
    args.update(kw)
    return mint(str(args.pop("key", KEY)), **args)  # type: ignore[arg-type]


def refused(tok: str | None, keys: object = (KEY,), now: float = NOW) -> TokenError:
    with pytest.raises(TokenError) as info:
        verify(tok, keys, now=now)  # type: ignore[arg-type]
    return info.value


def segment(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def test_round_trip_carries_scope_identity_and_expiry() -> None:
    tok = token(sub="alice", sid="s1", issuer="a1", ttl=120)
    claims = verify(tok, [KEY], now=NOW + 60)
    assert (claims.ns, claims.room, claims.sub, claims.sid, claims.iss) == ("/", "chat:lobby", "alice", "s1", "a1")
    assert claims.exp == NOW + 120 and claims.iat == NOW and claims.kid == key_id(KEY)
    assert claims.covers("/", "chat:lobby")
    assert not claims.covers("/", "chat:other") and not claims.covers("/admin", "chat:lobby")
    assert not claims.covers("/", None)  # never the namespace-wide partition


def test_it_is_a_standard_hs256_jwt() -> None:
    """Any JWT library verifies ours, and ours verifies theirs (given the kid)."""
    tok = token(sub="alice", now=time.time())
    claims = jwt.decode(tok, KEY, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["room"] == "chat:lobby" and claims["sub"] == "alice"
    assert jwt.get_unverified_header(tok) == {"alg": "HS256", "typ": "JWT", "kid": key_id(KEY)}
    theirs = jwt.encode({"aud": AUDIENCE, "ns": "/", "room": "r", "iat": int(NOW), "exp": int(NOW) + 60, "since": 0},
                        KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert verify(theirs, [KEY], now=NOW).room == "r"


def test_expiry_with_leeway() -> None:
    tok = token(ttl=300)
    assert verify(tok, [KEY], now=NOW + 300 + LEEWAY - 1)
    assert refused(tok, now=NOW + 300 + LEEWAY).reason == "token expired"
    assert refused(tok, now=NOW - LEEWAY - 1).reason == "token issued in the future"


def test_missing_malformed_and_tampered_tokens_are_401() -> None:
    for tok in (None, "", "abc", "a.b", "a.b.c.d", "é.é.é", "x" * 5000):
        assert refused(tok).status == 401
    tok = token()
    header, claims, sig = tok.split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert refused(f"{header}.{segment({**body, 'room': 'chat:other'})}.{sig}").reason == "bad token signature"
    assert refused(f"{header}.{claims}.{sig[:-1]}").status == 401
    assert refused(tok, keys=[OLD]).reason == "token signed with an unknown key (kid)"


@given(st.data())
def test_any_single_character_change_is_refused(data: st.DataObject) -> None:
    tok = token(sub="bob")
    i = data.draw(st.integers(0, len(tok) - 1))
    c = data.draw(st.sampled_from("ABCabc012-_.").filter(lambda ch: ch != tok[i]))
    with pytest.raises(TokenError):
        verify(tok[:i] + c + tok[i + 1:], [KEY], now=NOW)


def test_only_hs256_and_only_our_audience() -> None:
    body = {"aud": AUDIENCE, "ns": "/", "room": "r", "iat": int(NOW), "exp": int(NOW) + 60, "since": 0}
    unsigned = f"{segment({'alg': 'none', 'kid': key_id(KEY)})}.{segment(body)}."
    assert refused(unsigned).status == 401
    other_aud = jwt.encode({**body, "aud": "relay"}, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert "audience" in refused(other_aud).reason
    no_kid = jwt.encode(body, KEY, algorithm="HS256")
    assert "kid" in refused(no_kid).reason
    too_long = jwt.encode({**body, "exp": int(NOW) + MAX_TTL + 1}, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert "lifetime" in refused(too_long).reason
    no_room = jwt.encode({k: v for k, v in body.items() if k != "room"}, KEY, algorithm="HS256",
                         headers={"kid": key_id(KEY)})
    assert "room" in refused(no_room).reason
    float_exp = jwt.encode({**body, "exp": NOW + 60.5}, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert "integer" in refused(float_exp).reason


def test_rotation_accepts_current_and_previous_by_kid() -> None:
    keys = HistoryKeys.from_settings(KEY, OLD)
    assert verify(token(key=OLD), keys, now=NOW).kid == key_id(OLD)
    assert verify(token(key=KEY), keys, now=NOW).kid == key_id(KEY)
    assert refused(token(key=OLD), keys=HistoryKeys.from_settings(KEY)).status == 401
    assert key_id(KEY) != key_id(OLD) and len(key_id(KEY)) == 12


def test_key_settings() -> None:
    assert not HistoryKeys.from_settings(None).configured
    assert not HistoryKeys.from_settings("   ").configured
    with pytest.raises(KeyConfigError, match="SIO_HISTORY_TOKEN_KEY is 5 characters") as info:
        HistoryKeys.from_settings("short")
    assert "short" not in str(info.value).replace("shorter", "")
    with pytest.raises(KeyConfigError, match="_PREVIOUS"):
        HistoryKeys.from_settings(KEY, "tiny")
    assert KEY not in repr(HistoryKeys.from_settings(KEY, OLD)) and OLD not in repr(HistoryKeys.from_settings(KEY, OLD))


def test_mint_refuses_what_it_cannot_scope() -> None:
    for kw in ({"ns": "chat"}, {"room": ""}, {"ttl": 0}, {"ttl": MAX_TTL + 1}):
        with pytest.raises(ValueError):
            token(**kw)


def test_verify_refuses_a_str_key_instead_of_iterating_its_characters() -> None:
    """A ``str`` would be a list of one-character keys: a token signed with "k" would pass."""
    signed_with_one_char = token(key=KEY)  # a real token; the point is verify's argument type
    with pytest.raises(KeyConfigError, match="not one str"):
        verify(signed_with_one_char, KEY, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(KeyConfigError):
        verify(signed_with_one_char, KEY.encode(), now=NOW)  # type: ignore[arg-type]


def test_verify_and_mint_enforce_32_character_keys() -> None:
    short = "k" * 31
    with pytest.raises(KeyConfigError, match="31 characters"):
        verify(token(), [KEY, short], now=NOW)
    with pytest.raises(KeyConfigError, match="31 characters"):
        mint(short, ns="/", room="r", since=0)
    with pytest.raises(KeyConfigError, match="must be a str"):
        verify(token(), [KEY, 12345678901234567890123456789012345], now=NOW)  # type: ignore[list-item]
    assert verify(token(), [KEY], now=NOW).room == "chat:lobby"


def test_since_is_carried_and_required() -> None:
    claims = verify(token(since=NOW - 5.25), [KEY], now=NOW)
    assert claims.since == NOW - 5.25 and not claims.whole_history
    assert verify(token(since=0), [KEY], now=NOW).whole_history
    for bad in (-1, float("nan"), float("inf"), True, "0"):
        with pytest.raises(ValueError, match="since"):
            mint(KEY, ns="/", room="r", since=bad)  # type: ignore[arg-type]
    # a token without 'since' (signed with the right key) is refused, not read as "everything"
    no_since = jwt.encode({"aud": AUDIENCE, "ns": "/", "room": "r", "iat": int(NOW), "exp": int(NOW) + 60},
                          KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert refused(no_since).reason == "token needs a 'since' claim"
