"""Builders for real azure.functions objects and a context with recording senders."""

from __future__ import annotations

import datetime
import json
import uuid
from types import SimpleNamespace
from typing import Any

import azure.functions as func

from function_runner.servicebus import to_func_message
from shared.appcontext import AppContext, AppSettings
from socketio_servicebus.wire.envelope import Batch, Envelope, Kind


def emit_envelope(region: str = "eu", *, room: str | None = "lobby", event: str = "chat", data: Any = "hi",
                  ns: str = "/", persist: bool = False, ts: float | None = None, node: str = "node-a",
                  skip_sid: str | None = None) -> Envelope:
    body = {"method": "emit", "event": event, "data": [data], "binary": False, "namespace": ns, "room": room,
            "skip_sid": skip_sid, "callback": None, "host_id": node}
    kwargs: dict[str, Any] = {}
    if ts is not None:
        kwargs["ts"] = ts
    return Envelope(kind=Kind.EMIT, origin_node=node, origin_region=region, ns=ns, persist=persist, body=body,
                    **kwargs)


def sb_message(batch: Batch | bytes, *, message_id: str = "m-1", props: dict[str, Any] | None = None,
               delivery_count: int = 1, route_done: bool = False) -> func.ServiceBusMessage:
    if isinstance(batch, Batch):
        body = batch.encode()
        props = batch.application_properties(route_done=route_done) if props is None else props
    else:
        body = batch
        props = props or {}
    # A record shaped like a received azure-servicebus message, handed over as the Functions host
    # encodes it and decoded by azure.functions' converter (function_runner.host_encoding).
    received = SimpleNamespace(
        body=[body], body_type="data", application_properties=dict(props), delivery_count=delivery_count - 1,
        dead_letter_source=None, lock_token=uuid.uuid4(), enqueued_time_utc=datetime.datetime.now(datetime.UTC),
        time_to_live=None, message_id=message_id, content_type="application/json", reply_to=None, sequence_number=1,
        to=None, subject=None, correlation_id=None, session_id=None, reply_to_session_id=None, partition_key=None,
    )
    return to_func_message(received)


def http_request(method: str, path: str, *, params: dict[str, str] | None = None, body: bytes | str | dict | None = None,
                 headers: dict[str, str] | None = None) -> func.HttpRequest:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"content-type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    return func.HttpRequest(method=method, url=f"http://localhost/api/{path}", headers=hdrs, params=params or {},
                            route_params={}, body=body or b"")


class RecordingSender:
    def __init__(self, region: str, fail: int = 0) -> None:
        self.region = region
        self.sent: list[Any] = []
        self.fail = fail

    async def send_messages(self, msg: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError(f"region {self.region} is down")
        self.sent.append(msg)

    async def close(self) -> None:
        pass


class FakeContext(AppContext):
    """An AppContext whose Service Bus senders record instead of sending."""

    def __init__(self, env: dict[str, str], **kwargs: Any) -> None:
        super().__init__(AppSettings.from_env(env), **kwargs)
        self.senders: dict[str, RecordingSender] = {}

    async def region_sender(self, region: str) -> RecordingSender:
        return self.senders.setdefault(region, RecordingSender(region))

    async def home_sender(self) -> RecordingSender:
        return await self.region_sender(f"home:{self.settings.region}")

    async def drop_sender(self, sender: Any) -> None:
        pass
