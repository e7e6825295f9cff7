"""The optional W3C trace context per envelope (``tp`` / ``tst``), in both directions of a rollout.

"Today's decoder" is the wire module as it was before the field existed, read from git at
:data:`PRE_TRACE_COMMIT`, so the test checks the rule an old node really runs, not a copy of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from socketio_servicebus.wire.envelope import (
    MAX_TRACEPARENT_LEN,
    Batch,
    Envelope,
    EnvelopeError,
    encode_envelope,
)

#: main before issue 24: its envelope.py knows nothing of traceparent.
PRE_TRACE_COMMIT = "a8da8d2"
ROOT = Path(__file__).resolve().parents[2]
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _old_envelope_module() -> Any:
    src = subprocess.run(
        ["git", "show", f"{PRE_TRACE_COMMIT}:socketio_servicebus/wire/envelope.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    assert "traceparent" not in src
    mod = types.ModuleType("pre_trace_envelope")
    sys.modules[mod.__name__] = mod  # dataclasses look the module up while building the class
    try:
        exec(compile(src, "pre_trace_envelope.py", "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
    return mod


def _env(**kw: Any) -> Envelope:
    return Envelope(kind="emit", origin_node="a1", origin_region="eu", body={"event": "chat", "data": ["hi"]}, **kw)


def test_traced_envelope_round_trips() -> None:
    env = _env(traceparent=TP, tracestate="sio=1,vendor=x")
    raw = encode_envelope(env)
    assert b'"tp":"' + TP.encode() + b'"' in raw and b'"tst":"sio=1,vendor=x"' in raw
    back = Batch.decode(Batch((env,)).encode()).envelopes[0]
    assert (back.traceparent, back.tracestate) == (TP, "sio=1,vendor=x")
    assert back == env and back.body == env.body


def test_untraced_envelope_writes_no_trace_keys() -> None:
    raw = Batch((_env(),)).encode()
    assert b'"tp"' not in raw and b'"tst"' not in raw and b"traceparent" not in raw
    assert Batch.decode(raw).envelopes[0].traceparent is None


def test_tracestate_alone_is_not_written() -> None:
    raw = encode_envelope(_env(tracestate="a=b"))
    assert b'"tst"' not in raw


def test_todays_decoder_reads_a_traced_envelope() -> None:
    old = _old_envelope_module()
    env = _env(traceparent=TP, tracestate="a=b", persist=True)
    body = Batch((env, _env(persist=True)), hops=1, visited=("eu",)).encode()
    decoded = old.Batch.decode(body)
    assert [e.id for e in decoded.envelopes] == [env.id, decoded.envelopes[1].id]
    assert decoded.envelopes[0].body == env.body
    assert (decoded.hops, decoded.visited) == (1, ("eu",))
    # and it forwards it without the field (the router of an old Function App): still valid for us
    again = Batch.decode(decoded.encode())
    assert again.envelopes[0].traceparent is None and again.envelopes[0].id == env.id


def test_new_decoder_reads_todays_encoding() -> None:
    old = _old_envelope_module()
    old_env = old.Envelope(kind="emit", origin_node="b1", origin_region="us", body={"x": 1})
    decoded = Batch.decode(old.Batch((old_env,)).encode()).envelopes[0]
    assert decoded.id == old_env.id and decoded.body == {"x": 1}
    assert decoded.traceparent is None and decoded.tracestate is None


@pytest.mark.parametrize("bad", [7, "", None, ["x"], "x" * (MAX_TRACEPARENT_LEN + 1)])
def test_bad_trace_context_on_the_wire_is_dropped_not_refused(bad: Any) -> None:
    raw = Batch((_env(),)).encode()
    doc = json.loads(raw)
    doc["envelopes"][0]["tp"] = bad
    doc["envelopes"][0]["tst"] = {"not": "a str"}
    env = Batch.decode(json.dumps(doc).encode()).envelopes[0]
    assert env.traceparent is None and env.tracestate is None


def test_bad_trace_context_in_code_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="bad-field:traceparent"):
        _env(traceparent="")
    with pytest.raises(EnvelopeError, match="bad-field:tracestate"):
        _env(traceparent=TP, tracestate="x" * 600)
