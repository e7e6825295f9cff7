"""The local runner's pieces in-process: metadata from the app, connection resolution, HTTP
(auth level, CORS preflight, methods), ServiceBusMessage conversion."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import azure.functions as func
import pytest
from aiohttp.test_utils import TestClient, TestServer

from function_runner.app import host_settings, load_settings, specs_of
from function_runner.http import build_http_app
from function_runner.servicebus import timespan_seconds, to_func_message
from shared.connections import AZURITE_TABLES, ConnectionNotConfigured, resolve

from .conftest import import_function_app

ROOT = Path(__file__).resolve().parents[2]


def test_specs_come_from_the_app_metadata() -> None:
    mod = import_function_app({"SIO_REGION": "eu", "SIO_REGION_MAP": '{"eu": {}, "us": {}}'})
    specs = {s.name: s for s in specs_of(mod.app)}
    assert specs["router_us"].trigger["subscriptionName"] == "router"
    assert specs["router_us"].describe() == (
        "router_us: serviceBusTrigger socketio/router via ServiceBusConnection_us (cardinality one)")
    assert specs["emit"].describe() == "emit: httpTrigger POST /api/emit (auth FUNCTION)"
    assert specs["emit"].func is mod.emit._function.get_user_function()  # the undecorated coroutine


def test_connection_resolution_matches_the_host() -> None:
    env = {"A": "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v", "AzureWebJobsB": "Endpoint=sb://b/;x=y",
           "C__fullyQualifiedNamespace": "c.servicebus.windows.net", "C__credential": "managedidentity",
           "C__clientId": "cid", "D:fullyQualifiedNamespace": "d.servicebus.windows.net",
           "T": "UseDevelopmentStorage=true", "W__serviceUri": "https://w.webpubsub.azure.com"}
    assert resolve("A", "servicebus", env).connection_string == env["A"]
    assert resolve("B", "servicebus", env).connection_string == env["AzureWebJobsB"]
    c = resolve("C", "servicebus", env)
    assert (c.endpoint, c.credential, c.client_id, c.identity_based) == ("c.servicebus.windows.net", "managedidentity",
                                                                        "cid", True)
    assert resolve("D", "servicebus", env).endpoint == "d.servicebus.windows.net"
    assert resolve("T", "tables", env).connection_string == AZURITE_TABLES
    assert resolve("W", "webpubsub", env).endpoint == "https://w.webpubsub.azure.com"
    with pytest.raises(ConnectionNotConfigured, match="E__fullyQualifiedNamespace"):
        resolve("E", "servicebus", env)


def test_local_settings_do_not_override_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"X_ONE": "file", "X_TWO": "file"}, "Host": {"CORS": "http://a, http://b"}}))
    monkeypatch.setenv("X_ONE", "env")
    monkeypatch.delenv("X_TWO", raising=False)
    s = load_settings(path)
    import os

    assert os.environ["X_ONE"] == "env" and os.environ["X_TWO"] == "file"
    assert s.cors == ["http://a", "http://b"]
    monkeypatch.delenv("X_TWO")


def test_host_json_is_read() -> None:
    host = host_settings(ROOT)
    assert host["maxConcurrentCalls"] == 16
    assert timespan_seconds(host["maxAutoLockRenewalDuration"], 0) == 300
    assert timespan_seconds("1.00:00:01", 0) == 86401


def test_received_message_becomes_a_worker_message() -> None:
    received = SimpleNamespace(
        body=iter([b'{"a":', b"1}"]), application_properties={b"sio_hops": 1, b"sio_kind": b"emit"},
        content_type="application/json", correlation_id=None, dead_letter_error_description=None,
        dead_letter_reason=None, dead_letter_source=None, delivery_count=0, enqueued_sequence_number=None,
        enqueued_time_utc=None, expires_at_utc=None, subject="s", locked_until_utc=None, lock_token="t",
        message_id="m", partition_key=None, reply_to=None, reply_to_session_id=None,
        scheduled_enqueue_time_utc=None, sequence_number=7, session_id=None, time_to_live=None, to=None)
    msg = to_func_message(received)
    assert isinstance(msg, func.ServiceBusMessage)
    assert msg.get_body() == b'{"a":1}' and msg.message_id == "m" and msg.delivery_count == 1
    assert msg.application_properties == {"sio_hops": 1, "sio_kind": "emit"} and msg.sequence_number == 7


async def test_http_auth_cors_and_methods() -> None:
    mod = import_function_app({"SIO_REGION": "eu"})
    specs = [s for s in specs_of(mod.app) if s.trigger_type == "httpTrigger"]
    app = build_http_app(specs, key="k", cors=["http://page"], cors_credentials=False, log=lambda _: None)
    async with TestClient(TestServer(app)) as client:
        resp = await client.options("/api/history", headers={
            "Origin": "http://page", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization"  # the page's history token
        assert resp.headers["Access-Control-Allow-Origin"] == "http://page"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
        resp = await client.post("/api/emit", headers={"Origin": "http://page"}, json={})
        assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == "http://page"
        assert (await client.get("/api/history/server?limit=0")).status == 401  # authLevel function
        resp = await client.get("/api/history/server?limit=0&code=k", headers={"Origin": "http://evil"})
        assert resp.status == 400 and "Access-Control-Allow-Origin" not in resp.headers
        assert "between" in (await resp.json())["error"]
        resp = await client.put("/api/emit", headers={"x-functions-key": "k"})
        assert resp.status == 405
        resp = await client.post("/api/emit", headers={"x-functions-key": "k"}, data=b"[]")
        assert resp.status == 400 and resp.headers["Content-Type"].startswith("application/json")


async def test_the_runner_never_logs_the_function_key_of_a_query() -> None:
    """A failing function is logged by path, without the query string that carries ``?code=<key>``."""
    mod = import_function_app({"SIO_REGION": "eu"})  # no TablesConnection: the history query raises
    specs = [s for s in specs_of(mod.app) if s.trigger_type == "httpTrigger"]
    lines: list[str] = []
    app = build_http_app(specs, key="the-function-key-0123", cors=[], cors_credentials=False, log=lines.append)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/history/server?room=r&code=the-function-key-0123")
        assert resp.status == 500
        ok = await client.get("/api/history/server?limit=0", headers={"x-functions-key": "the-function-key-0123"})
        assert ok.status == 400
    assert any("raised" in line for line in lines), lines
    assert not [line for line in lines if "code=" in line or "the-function-key-0123" in line], lines
