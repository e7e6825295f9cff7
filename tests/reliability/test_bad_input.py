"""Bad input is refused and costs bounded CPU and memory (the fast part of the reliability suite).

Covered elsewhere, not repeated:

* envelope decoder properties (hypothesis) and a mutational fuzz target:
  ``tests/library/test_envelope.py`` (``test_prop_*``, ``test_fuzz_mutated_valid_batches``); the
  standalone fuzz runner is ``bench/fuzz_envelope.py`` (run briefly below);
* garbage AMQP frames, a client that never settles, abrupt disconnects, 200 connections at the
  emulator: ``tests/emulator/test_robustness.py``;
* wrong key, expired SAS token, Listen-only cannot send, Send-only cannot receive, topic-scoped
  keys, no token no attach: ``tests/emulator/test_auth.py``; a Listen+Send key cannot manage:
  ``tests/emulator/test_admin.py::test_listen_send_key_cannot_manage_entities``;
* emit API validation (malformed JSON, wrong types, huge bodies, missing key):
  ``tests/functions/test_handlers.py::test_emit_rejects_*`` and
  ``tests/functions/test_e2e.py::test_emit_api_validation_and_auth``; a 10 MB body through the
  real runner: ``tests/reliability/test_faults.py::test_emit_api_refuses_huge_and_malformed_bodies_and_keeps_serving``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import websockets
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusAuthorizationError

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from socketio_servicebus.wire.envelope import (
    MAX_BATCH_BYTES,
    MAX_ENVELOPES,
    Batch,
    Envelope,
    EnvelopeError,
    Kind,
)
from tests.relay_node.support import RelayProcess, clean_env
from tests.support.emulator_process import EmulatorProcess

from .support import ROOT, figure, rss_bytes, wait_until

pytestmark = pytest.mark.timeout(120)


# ====================================================================== decoder bounds
def measure(fn: Any) -> tuple[Any, float, float, int]:
    """(result or exception, cpu seconds, wall seconds, peak traced bytes)."""
    tracemalloc.start()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        result: Any = fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to check
        result = exc
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, cpu, wall, peak


def _envelope(i: int, pad: int) -> Envelope:
    """A small envelope (about 75 bytes on the wire plus ``pad``)."""
    return Envelope(kind=Kind.HEARTBEAT, id=f"i{i}", origin_node="n", origin_region="r", ts=1.0,
                    body={"p": "x" * pad} if pad else {})


def test_decoder_cpu_and_memory_are_bounded_for_deep_and_huge_inputs() -> None:
    depth = 100_000
    deep_arrays = b'{"v":1,"e":[' + b"[" * depth + b"]" * depth + b"]}"
    deep_objects = b'{"v":1,"e":[{"b":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}]}"
    # a valid batch of MAX_ENVELOPES envelopes just under MAX_BATCH_BYTES
    probe = Batch(tuple(_envelope(i, 1) for i in range(MAX_ENVELOPES))).encoded_size()
    pad = max(1, (MAX_BATCH_BYTES - probe) // MAX_ENVELOPES)
    huge_ok = Batch(tuple(_envelope(i, pad) for i in range(MAX_ENVELOPES))).encode()
    assert MAX_BATCH_BYTES - 32 * 1024 < len(huge_ok) <= MAX_BATCH_BYTES
    too_many = huge_ok[:-2] + b"," + json.dumps(_envelope(MAX_ENVELOPES + 1, 1).to_wire()).encode() + b"]}"
    over_limit = huge_ok[:-2] + b"," + json.dumps(_envelope(0, 100_000).to_wire()).encode() + b"]}"
    nul_flood = b"\x00" * MAX_BATCH_BYTES
    cases = {
        "deep arrays 100k": (deep_arrays, "too-deep"),
        "deep objects 100k": (deep_objects, "too-deep"),
        "1 MiB, 10k envelopes": (huge_ok, None),
        "10,001 envelopes": (too_many, None),  # decoded then refused as too-many (or too-large)
        "over 1 MiB": (over_limit, "too-large"),
        "1 MiB of NUL": (nul_flood, None),
    }
    rows = {}
    for name, (data, reason) in cases.items():
        result, cpu, wall, peak = measure(lambda d=data: Batch.decode(d))
        rows[name] = {"bytes": len(data), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                      "peak_mb": round(peak / 2**20, 1),
                      "result": type(result).__name__ if not isinstance(result, EnvelopeError) else result.reason}
        if name == "1 MiB, 10k envelopes":
            assert isinstance(result, Batch) and len(result.envelopes) == MAX_ENVELOPES
        else:
            assert isinstance(result, EnvelopeError), (name, result)
            if reason:
                assert result.reason == reason, (name, result.reason)
        # bounds, with room for a slow CI machine; tracemalloc itself makes decoding ~2x slower
        assert cpu < 5.0, (name, cpu)
        assert peak < 96 * 2**20, (name, peak)
    figure("decoder-bounds", **{k.replace(" ", "_").replace(",", ""): v for k, v in rows.items()})


def test_fuzz_runner_finds_nothing_in_a_short_run(tmp_path: Path) -> None:
    report = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz_envelope.py"), "--seconds", "4", "--seed", "1",
         "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    figure("fuzz-envelope", iterations=doc["iterations"], seconds=doc["seconds"], unexpected=len(doc["unexpected"]),
           max_input_ms=doc["max_input_ms"], peak_mb=doc["peak_mb"], reasons=len(doc["reasons"]))
    assert doc["iterations"] > 1000 and not doc["unexpected"]
    assert doc["max_input_ms"] < 2000


# ====================================================================== no pickle
def test_no_pickle_or_marshal_anywhere_json_only_on_the_wire() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|marshal|shelve|dill|cloudpickle)\b|"
                         r"\b(pickle|marshal)\.(loads?|dumps?)\(", re.M)
    roots = ["shared", "relay_node", "function_runner", "servicebus_emulator", "local_stack", "function_app.py", "bench"]
    files = [p for r in roots for p in ([ROOT / r] if r.endswith(".py") else (ROOT / r).rglob("*.py"))]
    hits = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in files for m in pattern.finditer(p.read_text())]
    figure("no-pickle", files_scanned=len(files), hits=len(hits))
    assert len(files) > 40 and not hits, hits


# ====================================================================== SAS rights
@pytest.fixture(scope="module")
def rights_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    cfg = tmp_path_factory.mktemp("rights") / "Config.json"
    cfg.write_text(json.dumps(EmulatorProcess.default_config({
        "Name": "rights",
        "SharedAccessPolicies": [
            {"Name": "root", "Key": "root-key", "Rights": ["Manage", "Listen", "Send"]},
            {"Name": "listen", "Key": "listen-key", "Rights": ["Listen"]},
            {"Name": "send", "Key": "send-key", "Rights": ["Send"]},
        ],
        "Topics": [{"Name": "socketio", "Subscriptions": [{"Name": "s1"}]}],
    })))
    proc = EmulatorProcess(cfg)
    proc.start()
    yield proc
    proc.stop()


def _cs(em: EmulatorProcess, name: str, key: str) -> str:
    base = em.connection_string("rights")
    return re.sub(r"SharedAccessKeyName=[^;]+;SharedAccessKey=[^;]+", f"SharedAccessKeyName={name};SharedAccessKey={key}", base)


async def _outcome(coro: Any) -> str:
    try:
        await asyncio.wait_for(coro, 20)
        return "allowed"
    except (ServiceBusAuthorizationError, ServiceBusAuthenticationError, ClientAuthenticationError) as exc:
        return f"refused ({type(exc).__name__})"
    except HttpResponseError as exc:
        return f"refused (HTTP {exc.status_code})" if exc.status_code in (401, 403) else f"error HTTP {exc.status_code}"


async def test_under_privileged_and_wrong_keys_are_refused(rights_emulator: EmulatorProcess) -> None:
    async def send(cs: str) -> None:
        async with servicebus_client(connection_string=cs) as c, c.get_topic_sender("socketio") as s:
            await s.send_messages(ServiceBusMessage(b"{}"))

    async def receive(cs: str) -> None:
        async with servicebus_client(connection_string=cs) as c, \
                c.get_subscription_receiver("socketio", "s1", max_wait_time=1) as r:
            await r.receive_messages(max_wait_time=1)

    async def create_subscription(cs: str) -> None:
        async with admin_client(connection_string=cs) as a:
            await a.create_subscription("socketio", "intruder")

    async def delete_topic(cs: str) -> None:
        async with admin_client(connection_string=cs) as a:
            await a.delete_topic("socketio")

    em = rights_emulator
    keys = {"listen": _cs(em, "listen", "listen-key"), "send": _cs(em, "send", "send-key"),
            "wrong": _cs(em, "root", "not-the-key")}
    results = {
        "listen-only send": await _outcome(send(keys["listen"])),
        "listen-only receive": await _outcome(receive(keys["listen"])),
        "send-only send": await _outcome(send(keys["send"])),
        "send-only receive": await _outcome(receive(keys["send"])),
        "send-only create subscription": await _outcome(create_subscription(keys["send"])),
        "listen-only create subscription": await _outcome(create_subscription(keys["listen"])),
        "send-only delete topic": await _outcome(delete_topic(keys["send"])),
        "wrong key send": await _outcome(send(keys["wrong"])),
        "wrong key admin": await _outcome(create_subscription(keys["wrong"])),
    }
    figure("sas-rights", **{k.replace(" ", "_"): v for k, v in results.items()})
    allowed = {"listen-only receive", "send-only send"}
    for what, outcome in results.items():
        if what in allowed:
            assert outcome == "allowed", (what, outcome)
        else:
            assert outcome.startswith("refused"), (what, outcome)
    async with admin_client(connection_string=_cs(em, "root", "root-key")) as a:
        names = [s.name async for s in a.list_subscriptions("socketio")]
    assert names == ["s1"]


# ====================================================================== relay node: malformed and oversized client input
@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    cfg = tmp_path_factory.mktemp("relay-bad") / "Config.json"
    cfg.write_text(json.dumps(EmulatorProcess.default_config({"Name": "bad", "Topics": [{"Name": "socketio"}]})))
    em = EmulatorProcess(cfg)
    em.start()
    node = RelayProcess("--node-id", "bad1", "--region", "r1",
                        env=clean_env(SERVICEBUS_CONNECTION_STRING=em.connection_string("bad")))
    try:
        node.start()
        yield node
    finally:
        node.stop()
        em.stop()


async def _chatting(url: str, room: str) -> tuple[socketio.AsyncClient, socketio.AsyncClient, list[Any]]:
    inbox: list[Any] = []
    a, b = socketio.AsyncClient(reconnection=False), socketio.AsyncClient(reconnection=False)
    b.on("chat", lambda m: inbox.append(m["text"]))
    for c in (a, b):
        await c.connect(url, transports=["websocket"], wait_timeout=10)
        assert (await c.call("join", room, timeout=10))["ok"]
    return a, b, inbox


async def _raw(url: str, frames: list[str | bytes], wait: float = 1.0) -> str:
    """Open an Engine.IO WebSocket, send ``frames`` after the handshake; how it ended."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(ws_url, max_size=None, open_timeout=10) as ws:
        await asyncio.wait_for(ws.recv(), 5)  # the Engine.IO open packet
        try:
            for frame in frames:
                await ws.send(frame)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        except TimeoutError:
            return "open (ignored)"
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            return f"closed {code}"
    return "closed"


async def test_malformed_and_oversized_client_input_is_refused_node_unaffected(relay: RelayProcess) -> None:
    a, b, inbox = await _chatting(relay.url, "robust")
    rss_before = rss_bytes(relay.proc.pid)  # type: ignore[union-attr]
    results: dict[str, str] = {}
    results["garbage text"] = await _raw(relay.url, ["garbage", "\x00\xff\x01"])
    results["binary junk"] = await _raw(relay.url, [b"\xff" * 1000])
    results["bad socket.io packet"] = await _raw(relay.url, ["40", '42["chat",', "4" + "9" * 50, '43999["x"]'])
    results["unknown namespace"] = await _raw(relay.url, ["40/nope,", '42/nope,["chat",1]'])
    results["chat before join / wrong types"] = await _raw(
        relay.url, ["40", '42["chat",{"room":["x"],"text":{"a":1}}]', '420["join",{"$gt":""}]'])
    results["10 MB message"] = await _raw(relay.url, ["40", '42["chat",{"room":"robust","text":"' + "x" * 10_000_000 + '"}]'])
    # 10 MB by long-polling
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.url + "/socket.io/?EIO=4&transport=polling") as resp:
            sid = json.loads((await resp.text())[1:])["sid"]
        try:
            async with asyncio.timeout(20), session.post(
                    relay.url + f"/socket.io/?EIO=4&transport=polling&sid={sid}",
                    data=b"4" + b"x" * 10_000_000, expect100=True) as resp:
                results["10 MB polling POST"] = f"HTTP {resp.status}"
        except aiohttp.ClientError as exc:  # refused and closed before the upload finished
            results["10 MB polling POST"] = f"closed ({type(exc).__name__})"
    # the node is unaffected: the two good clients keep chatting
    for i in range(5):
        await a.call("chat", {"room": "robust", "text": f"still {i}"}, timeout=10)
    await wait_until(lambda: inbox[-5:] == [f"still {i}" for i in range(5)], 10, "chat after the abuse")
    async with aiohttp.ClientSession() as session, session.get(relay.url + "/healthz") as resp:
        health = resp.status
    rss_after = rss_bytes(relay.proc.pid)  # type: ignore[union-attr]
    figure("relay-bad-input", **{k.replace(" ", "_"): v for k, v in results.items()}, healthz=health,
           good_clients_still_chatting=a.connected and b.connected, rss_mb_before=round(rss_before / 2**20, 1),
           rss_mb_after=round(rss_after / 2**20, 1))
    await a.disconnect()
    await b.disconnect()
    assert health == 200 and relay.proc.poll() is None  # type: ignore[union-attr]
    assert results["10 MB message"].startswith("closed") and results["10 MB message"] != "closed None"
    assert results["10 MB polling POST"] == "HTTP 413"
    # garbage either closes that one connection or is ignored by engine.io / socket.io
    for what in ("garbage text", "binary junk", "bad socket.io packet", "unknown namespace",
                 "chat before join / wrong types"):
        assert results[what].startswith(("closed", "open (ignored)")), (what, results[what])
    assert rss_after - rss_before < 40 * 2**20
