"""A Function App for ``test_host_encoding.py``, run by the local runner (``--app
tests.functions.host_probe_app``): four Service Bus triggers on one topic, cardinality one/many x
dataType string/binary, each writing what the project's handlers would read off every message to
``$PROBE_OUT/<function>.jsonl``.

The fields are read with the handlers' own helpers (``shared.routing.router.message_body`` /
``message_properties``, and the attributes ``router``/``persist``/``webpubsub`` use), so the test
compares exactly what the real functions see.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import azure.functions as func

from shared.routing.router import message_body, message_properties

app = func.FunctionApp()
TOPIC = os.environ.get("PROBE_TOPIC", "probe")
CONNECTION = "ProbeConnection"
OUT = Path(os.environ.get("PROBE_OUT", "."))
_lock = threading.Lock()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def record(fn: str, msg: func.ServiceBusMessage) -> dict[str, Any]:
    m: Any = msg  # the worker's subclass: metadata, locked_until, ... beyond func.ServiceBusMessage
    return {
        "fn": fn,
        # what shared/handlers.py and shared/routing/router.py read
        "body": base64.b64encode(message_body(msg)).decode(),
        "properties": message_properties(msg),
        "message_id": msg.message_id,
        "delivery_count": msg.delivery_count,
        "content_type": msg.content_type,
        "correlation_id": msg.correlation_id,
        "subject": getattr(msg, "subject", None) or getattr(msg, "label", None),
        # what the host passes beyond that (and what it leaves out)
        "application_properties": m.application_properties,
        "user_properties": m.user_properties,
        "label": m.label,
        "enqueued_time_utc": _iso(m.enqueued_time_utc),
        "expires_at_utc": _iso(m.expires_at_utc),
        "locked_until": _iso(m.locked_until),
        "lock_token": m.lock_token,
        "sequence_number": m.sequence_number,
        "time_to_live": str(m.time_to_live) if m.time_to_live is not None else None,
        "metadata_keys": sorted((m.metadata or {}).keys()),
    }


def _write(fn: str, rows: list[dict[str, Any]]) -> None:
    with _lock, (OUT / f"{fn}.jsonl").open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


@app.function_name("one_str")
@app.service_bus_topic_trigger(arg_name="msg", topic_name=TOPIC, subscription_name="one-str", connection=CONNECTION)
def one_str(msg: func.ServiceBusMessage) -> None:
    _write("one_str", [record("one_str", msg)])


@app.function_name("many_str")
@app.service_bus_topic_trigger(arg_name="msgs", topic_name=TOPIC, subscription_name="many-str",
                               connection=CONNECTION, cardinality="many", data_type="string")
def many_str(msgs: list[func.ServiceBusMessage]) -> None:
    _write("many_str", [record("many_str", m) for m in msgs])


@app.function_name("one_bin")
@app.service_bus_topic_trigger(arg_name="msg", topic_name=TOPIC, subscription_name="one-bin",
                               connection=CONNECTION, data_type="binary")
async def one_bin(msg: func.ServiceBusMessage) -> None:
    _write("one_bin", [record("one_bin", msg)])


@app.function_name("many_bin")
@app.service_bus_topic_trigger(arg_name="msgs", topic_name=TOPIC, subscription_name="many-bin",
                               connection=CONNECTION, cardinality="many", data_type="binary")
async def many_bin(msgs: list[func.ServiceBusMessage]) -> None:
    _write("many_bin", [record("many_bin", m) for m in msgs])
