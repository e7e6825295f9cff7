"""The runner hands trigger input over the way the Functions host does (``function_runner.host_encoding``).

* Fast: the encoding's rules on plain message records (dates as Newtonsoft writes them, string
  arrays without empty entries, property types, bodies a binding cannot take) and the HTTP path
  through the runner's aiohttp app (headers, query, route params, body, response headers).
* Slow (``test_one_and_many_see_the_same_fields``): real messages sent with azure-servicebus
  through the emulator, received by the runner subprocess running ``host_probe_app`` (cardinality
  one/many x dataType string/binary); every field the handlers read must arrive the same.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from aiohttp.test_utils import TestClient, TestServer
from azure.servicebus import ServiceBusMessage

from function_runner.app import specs_of
from function_runner.host_encoding import BindingError, check_binding, decode_service_bus, service_bus_input
from function_runner.http import build_http_app
from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess

from .conftest import Runner

UTC = datetime.UTC
ENQUEUED = datetime.datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


def received(**over: Any) -> SimpleNamespace:
    """A record with the attributes of a received ``azure.servicebus`` message."""
    fields: dict[str, Any] = dict(
        body=iter([b'{"a":', b"1}"]), body_type="data", application_properties={b"sio_hops": 1},
        delivery_count=0, dead_letter_source=None, lock_token=uuid.UUID(int=7), enqueued_time_utc=ENQUEUED,
        time_to_live=None, message_id="m1", content_type="application/json", reply_to=None, sequence_number=5,
        to=None, subject="s", correlation_id="c", session_id=None, reply_to_session_id=None, partition_key=None,
    )
    fields.update(over)
    return SimpleNamespace(**fields)


# ------------------------------------------------------------------ Service Bus, pure
def test_single_message_metadata_is_typed_like_the_host() -> None:
    given = service_bus_input([received()], many=False, data_type=None)
    md = given.trigger_metadata
    assert given.data is not None and (given.data.type, given.data.value) == ("string", '{"a":1}')
    # int/long/DateTime/dictionaries go through Newtonsoft as json; DateTime from a DateTimeOffset
    # has kind Unspecified (no "Z"), the DateTimeOffset itself "+00:00".
    assert (md["DeliveryCount"].type, md["DeliveryCount"].value) == ("json", "1")
    assert (md["SequenceNumber"].type, md["SequenceNumber"].value) == ("json", "5")
    assert md["EnqueuedTimeUtc"].value == '"2026-01-02T03:04:05.123"'
    assert md["EnqueuedTime"].value == '"2026-01-02T03:04:05.123+00:00"'
    assert md["ExpiresAtUtc"].value == '"9999-12-31T23:59:59.9999999"'  # no TTL: DateTimeOffset.MaxValue
    assert (md["MessageId"].type, md["LockToken"].value) == ("string", str(uuid.UUID(int=7)))
    assert md["Label"] == md["Subject"] and md["UserProperties"] == md["ApplicationProperties"]
    assert "ReplyTo" not in md and "SessionId" not in md  # null binding data is not sent
    assert "LockedUntil" not in md and "DeadLetterReason" not in md  # not in the extension's binding data

    msg = decode_service_bus([received()], many=False, data_type=None)
    assert isinstance(msg, func.ServiceBusMessage) and not isinstance(msg, list)
    assert msg.get_body() == b'{"a":1}' and msg.delivery_count == 1 and msg.sequence_number == 5
    assert msg.enqueued_time_utc == ENQUEUED.replace(tzinfo=None)  # naive, as the library parses it
    assert msg.expires_at_utc == datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert msg.locked_until is None and msg.time_to_live is None and msg.dead_letter_reason is None
    assert msg.user_properties == msg.application_properties == {"sio_hops": 1}


def test_property_values_are_json_typed_like_the_dotnet_sdk() -> None:
    u = uuid.uuid4()
    props = {b"s": b"text", b"bin": b"\xff\x00\xfe", "i": -7, "big": 2**40, "f": 1.5, "t": True, "u": u,
             "nan": float("nan")}
    msg = decode_service_bus([received(application_properties=props)], many=False, data_type=None)
    assert not isinstance(msg, list)
    assert msg.application_properties == {
        "s": "text", "bin": base64.b64encode(b"\xff\x00\xfe").decode(), "i": -7, "big": 2**40, "f": 1.5, "t": True,
        "u": str(u), "nan": "NaN"}


def test_bodies_by_data_type() -> None:
    raw = b"\xff\xfe\x00ok"
    as_string = decode_service_bus([received(body=[raw])], many=False, data_type=None)
    as_bytes = decode_service_bus([received(body=[raw])], many=False, data_type="binary")
    assert not isinstance(as_string, list) and not isinstance(as_bytes, list)
    assert as_string.get_body() == raw.decode("utf-8", "replace").encode()  # lossy, like BinaryData.ToString()
    assert as_bytes.get_body() == raw
    value = decode_service_bus([received(body="v", body_type="value")], many=False, data_type=None)
    assert not isinstance(value, list) and value.get_body() == b"v"
    with pytest.raises(BindingError, match="value type"):
        decode_service_bus([received(body=12, body_type="value")], many=False, data_type=None)
    with pytest.raises(BindingError, match="sequence"):
        decode_service_bus([received(body=[[1]], body_type="sequence")], many=False, data_type="binary")


def test_batches_drop_empty_string_entries_like_the_host() -> None:
    """The Python worker does not declare IncludeEmptyEntriesInMessagePayload, so the host leaves
    null/"" entries out of every string array: a batch mixing messages with and without a field
    shifts that field onto the wrong messages. Reproduced on purpose."""
    msgs = [received(message_id=f"m{i}", correlation_id=c) for i, c in enumerate([None, "c1", "c2"])]
    out = decode_service_bus(msgs, many=True, data_type="string")
    assert isinstance(out, list) and [m.message_id for m in out] == ["m0", "m1", "m2"]
    assert [m.correlation_id for m in out] == ["c1", "c2", None]  # shifted, as in Azure
    assert [m.delivery_count for m in out] == [1, 1, 1]  # int[] goes as json: no shift
    # an empty body is an empty string entry too: the library then indexes past the bodies
    with pytest.raises(IndexError):
        decode_service_bus([received(), received(body=[b""])], many=True, data_type="string")
    out = decode_service_bus([received(), received(body=[b""])], many=True, data_type="binary")
    assert isinstance(out, list) and [m.get_body() for m in out] == [b'{"a":1}', b""]


def test_many_without_data_type_is_refused() -> None:
    check_binding({"name": "m", "cardinality": "many", "dataType": "binary"})
    check_binding({"name": "m"})
    with pytest.raises(BindingError, match="object"):
        check_binding({"name": "m", "cardinality": "many"})


# ------------------------------------------------------------------ HTTP through the runner's app
echo_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@echo_app.route(route="echo/{item}", methods=["GET", "POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    doc = {"method": req.method, "url": req.url, "headers": dict(req.headers), "params": dict(req.params),
           "route": dict(req.route_params), "body": base64.b64encode(req.get_body()).decode()}
    resp = func.HttpResponse(json.dumps(doc), mimetype="application/json")
    resp.headers["Set-Cookie"] = "a=1; Path=/"
    return resp


async def test_http_request_arrives_as_the_host_encodes_it() -> None:
    app = build_http_app(specs_of(echo_app), key="k", cors=[], cors_credentials=False, log=lambda _: None)
    async with TestClient(TestServer(app)) as client:
        raw = b"\xff\x00binary"
        resp = await client.post(
            "/api/echo/42?code=k&empty=&multi=1&multi=2", data=raw,
            headers=[("Authorization", "Bearer t"), ("X-Functions-Key", "k"), ("X-Many", "a"), ("X-Many", "b"),
                     ("Content-Type", "application/octet-stream")])
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"  # the worker's converter: no charset
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/"]
        doc = await resp.json()
        assert doc["method"] == "POST" and doc["route"] == {"item": "42"}
        assert doc["url"].endswith("/api/echo/42?code=k&empty=&multi=1&multi=2")
        assert doc["params"] == {"code": "k", "multi": "1,2"}  # empty values dropped, repeats joined
        headers = doc["headers"]
        assert all(k == k.lower() for k in headers)
        assert headers["authorization"] == "Bearer t" and headers["x-functions-key"] == "k"
        assert headers["x-many"] == "a,b"
        assert base64.b64decode(doc["body"]) == raw

        async def chunks() -> Any:
            yield b'{"chunked":'
            yield b"true}"

        resp = await client.post("/api/echo/1", data=chunks())  # Transfer-Encoding: chunked
        assert resp.status == 200 and (await resp.json())["body"] == ""  # the host passes no body


# ------------------------------------------------------------------ e2e: SDK -> emulator -> runner
FUNCTIONS = ("one_str", "many_str", "one_bin", "many_bin")
#: What the handlers read (shared/handlers.py, shared/routing/router.py) - besides the body.
HANDLER_FIELDS = ("properties", "message_id", "delivery_count", "content_type", "correlation_id", "subject")
NOT_UTF8 = b"\xff\xfe\x00\x80 not utf-8"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, Runner, Path]]:
    base = tmp_path_factory.mktemp("probe")
    out = base / "out"
    out.mkdir()
    subs = [{"Name": n, "Properties": {"LockDuration": "PT30S", "MaxDeliveryCount": 3}}
            for n in ("one-str", "many-str", "one-bin", "many-bin")]
    cfg = base / "Config.json"
    cfg.write_text(json.dumps(EmulatorProcess.default_config(
        {"Name": "probe", "Topics": [{"Name": "probe", "Subscriptions": subs}]})))
    emulator = EmulatorProcess(cfg)
    emulator.start()
    runner = Runner({"ProbeConnection": emulator.connection_string("probe"), "PROBE_OUT": str(out),
                     "PROBE_TOPIC": "probe"}, app="tests.functions.host_probe_app")
    try:
        runner.start()
        yield emulator, runner, out
    finally:
        runner.stop()
        emulator.stop()


def read_rows(out: Path, fn: str) -> dict[str, dict[str, Any]]:
    path = out / f"{fn}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["message_id"]: r for r in rows}


@pytest.mark.slow
async def test_one_and_many_see_the_same_fields(probe: tuple[EmulatorProcess, Runner, Path]) -> None:
    emulator, runner, out = probe
    run = uuid.uuid4().hex[:8]
    u = uuid.uuid4()
    props = {"sio_kind": "emit", "sio_hops": 0, "sio_persist": True, "big": 2**31 - 1, "neg": -3, "ratio": 0.25,
             "guid": u, "text_bytes": "caf\u00e9".encode()}  # the SDK sends bytes as a string (and refuses non-UTF-8)
    bodies = {
        f"{run}-json": b'{"v":1,"hops":0,"visited":["eu"],"envelopes":[]}',
        f"{run}-utf8": "h\u00e9llo \u2713".encode(),
        f"{run}-bytes": NOT_UTF8,
    }
    async with servicebus_client(connection_string=emulator.connection_string("probe")) as client, \
            client.get_topic_sender("probe") as sender:
        await sender.send_messages([
            ServiceBusMessage(body, message_id=mid, application_properties=props, content_type="application/json",
                              correlation_id=f"corr-{mid}", subject="chat")
            for mid, body in bodies.items()])

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = {fn: read_rows(out, fn) for fn in FUNCTIONS}
        if all(set(bodies) <= set(r) for r in rows.values()):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"not every function saw every message: { {fn: sorted(r) for fn, r in rows.items()} }\n"
                    + "".join(runner.output[-40:]))

    expected_props = {"sio_kind": "emit", "sio_hops": 0, "sio_persist": True, "big": 2**31 - 1, "neg": -3,
                      "ratio": 0.25, "guid": str(u), "text_bytes": "caf\u00e9"}
    for mid, sent in bodies.items():
        seen = {fn: rows[fn][mid] for fn in FUNCTIONS}
        for fn, row in seen.items():
            assert row["delivery_count"] == 1 and row["message_id"] == mid, (fn, row)
            assert row["properties"] == expected_props, (fn, row["properties"])
            assert row["user_properties"] == row["application_properties"] == expected_props
            assert (row["content_type"], row["correlation_id"], row["subject"], row["label"]) == (
                "application/json", f"corr-{mid}", "chat", "chat"), (fn, row)
            # the host's DateTime without a zone: the library gives a naive datetime
            enq = datetime.datetime.fromisoformat(row["enqueued_time_utc"])
            assert enq.tzinfo is None
            assert abs((enq.replace(tzinfo=UTC) - datetime.datetime.now(UTC)).total_seconds()) < 120
            assert row["locked_until"] is None and row["time_to_live"] is None  # the host does not pass them
            assert row["lock_token"] and isinstance(row["sequence_number"], int)
            arrays = "many" in fn
            assert ("UserPropertiesArray" in row["metadata_keys"]) is arrays
            assert ("MessageId" in row["metadata_keys"]) is not arrays
        # every field the handlers read: the same for cardinality one and many
        for kind in ("str", "bin"):
            one, many = seen[f"one_{kind}"], seen[f"many_{kind}"]
            assert {f: one[f] for f in (*HANDLER_FIELDS, "body")} == {f: many[f] for f in (*HANDLER_FIELDS, "body")}
        # the body: exact with dataType binary; as a string binding it is decoded as UTF-8, lossily
        assert base64.b64decode(seen["one_bin"]["body"]) == sent
        assert base64.b64decode(seen["one_str"]["body"]) == sent.decode("utf-8", "replace").encode()
    assert base64.b64decode(rows["one_str"][f"{run}-bytes"]["body"]) != NOT_UTF8
    assert not runner.lines(r"failed \(delivery"), runner.output[-40:]

