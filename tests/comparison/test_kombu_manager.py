"""python-socketio's ``KombuManager`` over kombu's ``azureservicebus://`` transport, against
``ServiceBusManager``, both on the project's Service Bus emulator with two real servers each.

``KombuManager`` is python-socketio's only built-in manager that can reach Azure Service Bus (its
others are Redis, Kafka, ZeroMQ and, for asyncio, Redis and aio-pika/AMQP 0-9-1). The first test
shows that it delivers nothing from one server to another and says nothing about it:

* python-socketio delivers an emit to the emitting server's own clients first
  (``PubSubManager.emit`` calls ``_handle_emit`` before ``_publish``), so one server looks fine;
* ``KombuManager`` publishes to a ``fanout`` exchange; kombu's Azure transport is a *virtual*
  transport whose ``Channel`` leaves ``supports_fanout = False`` (``kombu/transport/virtual/base.py``),
  and ``FanoutExchange.deliver`` (``kombu/transport/virtual/exchange.py``) does nothing at all when
  ``supports_fanout`` is false: no Service Bus call, no exception, no log line.

The servers run as separate processes (``socketio.Server`` in threading mode, werkzeug's threaded
WSGI server with simple-websocket), each with a real ``socketio.Client`` over a websocket.
Observers in the server processes record kombu's fanout ``deliver`` and its Service Bus ``_put``
calls; they call kombu's own code unchanged.

The second test runs the same scenario with ``ServiceBusManager``: the other server's client gets
the event.

Run: ``.venv/bin/python -m pytest tests/comparison -q``.  See ``docs/kombu-comparison.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from azure.core.pipeline.transport import RequestsTransport

from tests.support.emulator_process import EmulatorProcess, running_emulator

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "sbemulatorns"
#: What a user writes for kombu (policy and key are the emulator's; the host is kombu's default
#: ``<namespace>.servicebus.windows.net``, redirected to the emulator by :func:`point_kombu_at_emulator`).
KOMBU_URL = f"azureservicebus://RootManageSharedAccessKey:SAS_KEY_VALUE@{NAMESPACE}"
#: How long the other server's client is given to receive what it must not receive.
QUIET = 5.0


# ====================================================================== the emulator


@pytest.fixture(scope="module")
def sb_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own emulator (namespace ``sbemulatorns``, topic ``socketio``)."""
    config = EmulatorProcess.default_config()
    # the key KOMBU_URL names (a namespace without policies gets a random one)
    config["UserConfig"]["Namespaces"][0]["SharedAccessPolicies"] = [
        {"Name": "RootManageSharedAccessKey", "Key": "SAS_KEY_VALUE", "Rights": ["Manage", "Listen", "Send"]}]
    with running_emulator(tmp_path_factory.mktemp("kombu-cmp"), config) as proc:
        yield proc.connection_string(NAMESPACE)


class PlainHttp(RequestsTransport):  # type: ignore[misc]
    """The admin client's https:// requests as http:// to the same host and port: the emulator
    serves its admin API in plain HTTP beside AMQP (as ``socketio_servicebus.servicebus.clients``
    does for the aio client)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith("https://"):
            request.url = "http://" + request.url[len("https://"):]
        return super().send(request, **kwargs)


def sync_admin(conn_str: str) -> Any:
    from azure.servicebus.management import ServiceBusAdministrationClient

    return ServiceBusAdministrationClient.from_connection_string(conn_str, transport=PlainHttp())


def point_kombu_at_emulator(conn_str: str, setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make kombu's Azure transport connect to the emulator instead of ``<ns>.servicebus.windows.net``.

    kombu builds ``Endpoint=sb://<ns>.servicebus.windows.net;SharedAccessKeyName=..;SharedAccessKey=..``
    itself (``Channel._try_parse_connection_string``) and has no way to say
    ``UseDevelopmentEmulator=true`` (local port, no TLS).  This changes WHERE it connects and
    nothing else: kombu still parses the URL, then its connection string is swapped for the
    emulator's one for the same namespace, policy and key; its admin client gets the plain-HTTP
    transport (same host and port as AMQP).  Exchanges, bindings, queue names, publishing and
    consuming (how kombu ROUTES) are kombu's own, untouched code.
    """
    from kombu.transport import azureservicebus as asb
    from kombu.utils.objects import cached_property

    host = f"{NAMESPACE}.servicebus.windows.net"
    original = asb.Channel._try_parse_connection_string

    def _try_parse_connection_string(self: Any) -> None:
        original(self)
        assert self._namespace == host, f"kombu parsed namespace {self._namespace!r}, expected {host!r}"
        self._connection_string = conn_str

    def queue_mgmt_service(self: Any) -> Any:
        return asb.ServiceBusAdministrationClient.from_connection_string(
            self._connection_string, transport=PlainHttp()
        )

    prop = cached_property(queue_mgmt_service)
    prop.__set_name__(asb.Channel, "queue_mgmt_service")
    setattr_(asb.Channel, "_try_parse_connection_string", _try_parse_connection_string)
    setattr_(asb.Channel, "queue_mgmt_service", prop)


# ====================================================================== a KombuManager server process


def serve_kombu(conn_str: str) -> None:
    """One python-socketio server with ``KombuManager``, as its own process (``python -c``).

    Reports on stdout, one JSON object a line: ``listening`` (port), every log record at WARNING
    or above from any logger plus the socketio server logger at DEBUG (``log``), Python warnings
    (as ``py.warnings`` log records) and what kombu did: ``new_queue`` (a queue declared on
    Service Bus), ``fanout_deliver`` (a publish to a fanout exchange) and ``put`` (a message sent
    to a Service Bus queue).
    """
    import warnings

    from kombu.transport import azureservicebus as asb
    from kombu.transport.virtual import exchange as vexchange
    from werkzeug.serving import make_server

    lock = threading.Lock()

    def report(kind: str, **fields: Any) -> None:
        with lock:
            print(json.dumps({"kind": kind, "t": time.monotonic(), **fields}, default=repr), flush=True)

    class Report(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            report("log", level=record.levelname, levelno=record.levelno, logger=record.name,
                   message=record.getMessage(), exc=bool(record.exc_info))

    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    root.addHandler(Report())
    logging.captureWarnings(True)
    warnings.simplefilter("always")

    point_kombu_at_emulator(conn_str)

    # Observers: each records the call, then runs kombu's own method unchanged.
    deliver = vexchange.FanoutExchange.deliver

    def observed_deliver(self: Any, message: Any, exchange: Any, routing_key: Any, **kw: Any) -> Any:
        report("fanout_deliver", exchange=exchange, supports_fanout=self.channel.supports_fanout,
               channel=type(self.channel).__module__ + "." + type(self.channel).__name__)
        return deliver(self, message, exchange, routing_key, **kw)

    put = asb.Channel._put

    def observed_put(self: Any, queue: str, message: Any, **kw: Any) -> Any:
        report("put", queue=queue)
        return put(self, queue, message, **kw)

    new_queue = asb.Channel._new_queue

    def observed_new_queue(self: Any, queue: str, **kw: Any) -> Any:
        report("new_queue", queue=queue, arguments=kw.get("arguments"),
               entity=self.entity_name(self.queue_name_prefix + queue))  # its Service Bus name
        return new_queue(self, queue, **kw)

    vexchange.FanoutExchange.deliver = observed_deliver  # type: ignore[method-assign]
    asb.Channel._put = observed_put  # type: ignore[method-assign]
    asb.Channel._new_queue = observed_new_queue  # type: ignore[method-assign]

    sio_logger = logging.getLogger("kombu_comparison.socketio")
    sio_logger.setLevel(logging.DEBUG)
    mgr = socketio.KombuManager(KOMBU_URL)  # exactly as python-socketio documents it
    sio = socketio.Server(async_mode="threading", client_manager=mgr, logger=sio_logger)

    @sio.event
    def shout(sid: str, data: Any) -> str:
        sio.emit("news", data)  # to every client of every server
        return "emitted"

    server = make_server("127.0.0.1", 0, socketio.WSGIApp(sio), threaded=True)
    report("listening", port=server.server_port, host_id=mgr.host_id)
    server.serve_forever()


class KombuServer:
    """A :func:`serve_kombu` process and what it reported."""

    def __init__(self, conn_str: str):
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from tests.comparison.test_kombu_manager import serve_kombu; serve_kombu(sys.argv[1])",
             conn_str],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for("listening", timeout=30)["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"kind": "raw", "line": line.rstrip("\n")}
            self.events.append(event)

    def of(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[since:] if e.get("kind") == kind]

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(kind)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"server reported no {kind!r}; its output:\n" + self.dump())

    def dump(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-80:])

    def problems(self) -> list[dict[str, Any]]:
        """Log records at ERROR or above, and anything that looks like a traceback."""
        return [e for e in self.events
                if (e["kind"] == "log" and (e["levelno"] >= logging.ERROR or e.get("exc")))
                or (e["kind"] == "raw" and ("Traceback" in e["line"] or "Error" in e["line"]))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class SyncClient:
    """A real ``socketio.Client`` over a websocket that records what it receives."""

    def __init__(self, url: str, events: tuple[str, ...] = ("news", "control")):
        self.sio = socketio.Client(reconnection=False)
        self.got: dict[str, list[Any]] = {e: [] for e in events}
        for e in events:
            self.sio.on(e, self._recorder(e))
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _recorder(self, event: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            self.got[event].append(args[0] if len(args) == 1 else list(args))

        return handler


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ====================================================================== 1. KombuManager


def test_kombu_manager_delivers_nothing_across_servers_and_reports_no_error(
    sb_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kombu

    point_kombu_at_emulator(sb_conn, monkeypatch.setattr)  # for this process's control message
    servers: list[KombuServer] = []
    clients: list[SyncClient] = []
    try:
        servers += [KombuServer(sb_conn), KombuServer(sb_conn)]
        s1, s2 = servers
        c1, c2 = SyncClient(s1.url), SyncClient(s2.url)
        clients += [c1, c2]

        # The first connection starts each manager's listener thread, which declares the
        # server's own queue on Service Bus (through the admin API) and starts consuming from it.
        q1 = s1.wait_for("new_queue", timeout=20)
        q2 = s2.wait_for("new_queue", timeout=20)
        assert q1["queue"] != q2["queue"] and q1["queue"].startswith("python-socketio.")
        # KombuManager asks for x-expires (300 s); kombu's Azure _new_queue ignores its kwargs.
        assert q1["arguments"] == {"x-expires": 300000}

        # Control: kombu CAN carry a message over the emulator into each server's listener and on
        # to its client, when it is sent straight to the queue (kombu's anonymous exchange ->
        # Channel._put).  So both listeners are live and the transport works.
        control = {"method": "emit", "event": "control", "data": ["ping"], "binary": False,
                   "namespace": "/", "room": None, "skip_sid": None, "callback": None,
                   "host_id": "comparison-test"}
        with kombu.Connection(KOMBU_URL) as conn:
            producer = conn.Producer()
            for q in (q1["queue"], q2["queue"]):
                producer.publish(json.dumps(control), exchange="", routing_key=q)
        wait_until(lambda: c1.got["control"] == ["ping"] and c2.got["control"] == ["ping"],
                   timeout=20, what="the control message on both servers' clients")

        # The scenario: client 1 asks server 1 to emit to everybody.
        mark1, mark2 = len(s1.events), len(s2.events)
        news = {"id": uuid.uuid4().hex, "text": "hello from server 1"}
        assert c1.sio.call("shout", news, timeout=10) == "emitted"

        # Local delivery works: that is why one server looks fine.
        wait_until(lambda: c1.got["news"] == [news], timeout=5, what="local delivery on server 1")
        # Nothing crosses to server 2, however long we wait ...
        time.sleep(QUIET)
        assert c2.got["news"] == [], "client 2 received the emit: kombu's Azure transport did fan out"
        assert c1.got["news"] == [news]

        # ... because the publish reached kombu's fanout exchange, which dropped it: the channel
        # says supports_fanout=False, and no message was sent to any Service Bus queue.
        delivers = s1.of("fanout_deliver", since=mark1)
        assert len(delivers) == 1, s1.dump()
        assert delivers[0]["exchange"] == "socketio"
        assert delivers[0]["supports_fanout"] is False
        assert delivers[0]["channel"] == "kombu.transport.azureservicebus.Channel"
        assert s1.of("put", since=mark1) == [] and s2.of("put", since=mark2) == []

        # ... and nothing is waiting unconsumed in the servers' queues either.
        with sync_admin(sb_conn) as admin:
            for q in (q1, q2):
                assert admin.get_queue_runtime_properties(q["entity"]).total_message_count == 0

        # No error anywhere: no exception, no ERROR log record, not even a Python warning.
        for s in servers:
            assert s.problems() == [], s.dump()
            warned = [e for e in s.of("log") if e["levelno"] >= logging.WARNING]
            assert warned == [], s.dump()
    finally:
        for c in clients:
            with contextlib.suppress(Exception):  # teardown: the client may already be gone
                c.sio.disconnect()
        for s in servers:
            s.stop()

    # The servers are gone; their queues stay (no AutoDeleteOnIdle: x-expires was ignored).
    with sync_admin(sb_conn) as admin:
        for q in (q1, q2):
            props = admin.get_queue(q["entity"])
            assert props.auto_delete_on_idle is None or props.auto_delete_on_idle.days > 3650, props


# ====================================================================== 2. ServiceBusManager


async def test_servicebus_manager_delivers_across_servers(sb_conn: str, caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web

    from socketio_servicebus import ServiceBusManager

    caplog.set_level(logging.INFO, logger="socketio.servicebus")
    nodes: list[tuple[ServiceBusManager, web.AppRunner]] = []
    clients: list[socketio.AsyncClient] = []
    got: list[list[Any]] = [[], []]
    both = asyncio.Event()

    def recorder(i: int) -> Callable[[Any], None]:
        def handler(data: Any) -> None:
            got[i].append(data)
            if got[0] and got[1]:
                both.set()

        return handler
    try:
        for i in range(2):
            mgr = ServiceBusManager(connection_string=sb_conn, topic="socketio",
                                    node_id=f"cmp{i}-{uuid.uuid4().hex[:6]}")
            sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr)

            def bind(sio: socketio.AsyncServer) -> None:
                @sio.event
                async def shout(sid: str, data: Any) -> str:
                    await sio.emit("news", data)
                    return "emitted"

            bind(sio)
            app = web.Application()
            sio.attach(app)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            nodes.append((mgr, runner))
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            assert await mgr.wait_ready(15), mgr.health()  # own subscription with its SQL rule, receiving

            client = socketio.AsyncClient(reconnection=False)
            client.on("news", recorder(i))
            await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
            clients.append(client)

        news = {"id": uuid.uuid4().hex, "text": "hello from server 1"}
        assert await clients[0].call("shout", news, timeout=10) == "emitted"
        try:
            await asyncio.wait_for(both.wait(), 10)
        except TimeoutError:
            pass
        assert got[0] == [news], "local delivery on server 1"
        assert got[1] == [news], "client 2 on server 2 did not receive the emit"
        await asyncio.sleep(1.0)
        assert got == [[news], [news]], "delivered more than once"
        assert nodes[0][0].metrics.snapshot()["envelopes_published"] >= 1
        assert nodes[1][0].metrics.snapshot()["envelopes_received"] >= 1
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        for client in clients:
            with contextlib.suppress(Exception):  # teardown: the client may already be gone
                await client.disconnect()
        for mgr, runner in nodes:
            await mgr.close()
            await runner.cleanup()
