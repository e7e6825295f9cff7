"""The trigger input exactly as the Functions host hands it to the Python worker, decoded by the
``azure.functions`` library's own converters.

The Functions host does not give a Python function a message object. It flattens the trigger into
gRPC ``TypedData`` values (the binding's *data* plus a map of *trigger metadata*), and the Python
worker turns each ``TypedData`` into a ``Datum`` and calls the library converter registered for the
binding (``ServiceBusMessageInConverter``, ``HttpRequestConverter``). Building objects by hand
(``func.ServiceBusMessage(...)``) skips both steps and with them every quirk a function meets in
Azure. This module reproduces the two steps; :mod:`function_runner.servicebus` and
:mod:`function_runner.http` only receive and answer.

Sources (read, not copied; versions current in autumn 2024 unless noted):

* Service Bus extension 5.x (extension bundle ``[4.*, 5.0.0)``), ``Azure/azure-sdk-for-net``
  ``sdk/servicebus/Microsoft.Azure.WebJobs.Extensions.ServiceBus/src/Triggers/``:
  ``ServiceBusTriggerBindingStrategy.cs`` (``AddBindingData`` for one message and for an array:
  the keys and their .NET types, ``Label``/``UserProperties`` kept for back-compat,
  ``TransactionPartitionKeyArray`` filled from the partition keys) and
  ``MessageToStringConverter.cs`` (body -> string: strict UTF-8, else ``BinaryData.ToString()``,
  i.e. lossy UTF-8; an AMQP value body must be a string; a sequence body cannot bind).
* Host -> worker encoding, ``Azure/azure-functions-host``
  ``src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs`` (``ToRpc``:
  ``byte[]`` -> bytes, ``string`` -> string, ``string[]`` -> collection_string **without empty
  entries** unless the worker declares ``IncludeEmptyEntriesInMessagePayload``, ``long[]`` ->
  collection_sint64, ``byte[][]`` -> collection_bytes, everything else -> ``json`` via
  Newtonsoft; ``ToRpcHttp``: lower-cased headers, query without empty values, route params,
  body only when ``Content-Length > 0``, raw bytes because the worker asks for
  ``RawHttpBodyBytes``), ``src/WebJobs.Script.Grpc/Extensions/ScriptInvocationContextExtensions.cs``
  (null binding data is left out of the trigger metadata), ``src/WebJobs.Script/Binding/
  GeneralScriptBindingProvider.cs`` + WebJobs ``JobHostMetadataProvider.GetDefaultType`` (no
  ``dataType`` -> ``string``, ``binary`` -> ``byte[]``, ``string`` -> ``string``; with
  ``cardinality: many`` an array of it, except that no ``dataType`` then gives ``object[]``, whose
  encoding this module does not guess: :func:`check_binding` refuses it).
* The worker, ``Azure/azure-functions-python-worker`` 4.34 ``azure_functions_worker/dispatcher.py``
  (capabilities: ``RawHttpBodyBytes``, ``TypedDataCollection``, ``RpcHttpBodyOnly``,
  ``RpcHttpTriggerMetadataRemoved`` - not ``IncludeEmptyEntriesInMessagePayload``) and
  ``bindings/datumdef.py`` / ``bindings/meta.py`` (``Datum.from_typed_data``: collections stay
  protobuf messages with ``.string`` / ``.bytes`` / ``.sint64``; ``from_incoming_proto`` calls
  ``binding.decode(datum, trigger_metadata=...)``).
* The library itself, ``azure-functions`` (installed): ``servicebus.py``, ``meta.py``, ``http.py``.

What the pyamqp-based Python SDK cannot tell us, and how it is filled in (see docs/functions.md):
application property values that are AMQP strings, symbols and binaries all arrive as ``bytes``
(valid UTF-8 is taken as a string, anything else as binary, which Newtonsoft writes as base64) and
AMQP timestamps arrive as integers (so they reach the function as numbers, where the host would
give an ISO string).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.http import HttpRequestConverter, HttpResponseConverter
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter

__all__ = [
    "BindingError",
    "check_binding",
    "CollectionBytes",
    "CollectionSInt64",
    "CollectionString",
    "ServiceBusTriggerInput",
    "decode_service_bus",
    "encode_http_response",
    "http_request_datum",
    "decode_http_request",
    "newtonsoft_json",
    "service_bus_input",
]

#: .NET ``DateTimeOffset.MaxValue`` as the host serialises ``ExpiresAtUtc`` of a message without
#: TTL (Newtonsoft, ``DateTimeKind.Unspecified``: no zone suffix, 7 fraction digits).
_MAX_DATETIME = "9999-12-31T23:59:59.9999999"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class BindingError(ValueError):
    """The host could not bind the message to the declared parameter type: the invocation fails
    before the function runs (Service Bus then redelivers, as after a function exception)."""


# ----------------------------------------------------------------- protobuf collection stand-ins
# ``Datum.from_typed_data`` keeps the protobuf collection message as the value; the library reads
# ``value.string`` / ``value.bytes`` / ``value.sint64``. These carry exactly those attributes.
@dataclass(frozen=True)
class CollectionString:
    string: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CollectionBytes:
    bytes: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class CollectionSInt64:
    sint64: list[int] = field(default_factory=list)


# ----------------------------------------------------------------- .NET value shapes
@dataclass(frozen=True)
class _DateTime:
    """A .NET ``DateTime``; ``utc`` = ``DateTimeKind.Utc`` (Newtonsoft appends ``Z``), else
    ``Unspecified`` (no suffix), which is what ``DateTimeOffset.DateTime`` returns."""

    value: datetime.datetime | None  # None = MaxValue
    utc: bool = False


@dataclass(frozen=True)
class _DateTimeOffset:
    value: datetime.datetime | None  # None = MaxValue


def _fraction(dt: datetime.datetime) -> str:
    # Newtonsoft's default "yyyy-MM-ddTHH:mm:ss.FFFFFFFK": trailing zeros of the 7-digit
    # fraction dropped, and the dot with them.
    frac = f"{dt.microsecond:06d}0".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "")


def _net_datetime(value: _DateTime | _DateTimeOffset) -> str:
    if value.value is None:
        text = _MAX_DATETIME
    else:
        v = value.value
        text = _fraction(v if v.tzinfo is None else v.astimezone(datetime.UTC).replace(tzinfo=None))
    if isinstance(value, _DateTimeOffset):
        return text + "+00:00"
    return text + ("Z" if value.utc and value.value is not None else "")


def _newtonsoft(value: Any) -> Any:
    """``value`` as the JSON-ready Python value whose ``json.dumps`` equals Newtonsoft's output."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"  # FloatFormatHandling.String, Newtonsoft's default
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")  # byte[] -> base64 string
    if isinstance(value, uuid.UUID):
        return str(value)  # Guid "D" format, lower case
    if isinstance(value, (_DateTime, _DateTimeOffset)):
        return _net_datetime(value)
    if isinstance(value, datetime.datetime):
        return _net_datetime(_DateTime(value, utc=value.tzinfo is not None))
    if isinstance(value, datetime.timedelta):
        total = int(value.total_seconds())
        days, rest = divmod(abs(total), 86400)
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        sign = "-" if total < 0 else ""
        return f"{sign}{days}.{h:02d}:{m:02d}:{s:02d}" if days else f"{sign}{h:02d}:{m:02d}:{s:02d}"
    if isinstance(value, Mapping):
        return {str(k): _newtonsoft(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_newtonsoft(v) for v in value]
    return str(value)


def newtonsoft_json(value: Any) -> str:
    """``JsonConvert.SerializeObject(value, Formatting.None)`` for the values the host meets."""
    return json.dumps(_newtonsoft(value), ensure_ascii=False, separators=(",", ":"))


def _json(value: Any) -> meta.Datum:
    return meta.Datum(newtonsoft_json(value), "json")


def _string_array(values: Sequence[str | None]) -> meta.Datum:
    # ToRpcStringArray(includeEmptyEntries: false): the Python worker does not declare
    # IncludeEmptyEntriesInMessagePayload, so null and "" entries are *dropped*, shifting the rest.
    return meta.Datum(CollectionString([v for v in values if v]), "collection_string")


# ----------------------------------------------------------------- Service Bus
def _plain_key(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else str(key)


def _property_value(value: Any) -> Any:
    """An application property as the .NET SDK would type it (see the module docstring)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")  # AMQP string/symbol (pyamqp hands both over as bytes)
        except UnicodeDecodeError:
            return raw  # AMQP binary -> byte[] -> base64 in JSON
    if isinstance(value, Mapping):
        return {_plain_key(k): _property_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_property_value(v) for v in value]
    if isinstance(value, datetime.datetime):
        return _DateTime(value, utc=True)
    return value


def application_properties(msg: Any) -> dict[str, Any]:
    return {_plain_key(k): _property_value(v) for k, v in (msg.application_properties or {}).items()}


def _amqp_time(raw: Any) -> datetime.datetime | None:
    if raw is None:
        return None
    if isinstance(raw, datetime.datetime):
        return raw
    return _EPOCH + datetime.timedelta(milliseconds=int(raw))


def _annotation(msg: Any, name: bytes) -> Any:
    annotations = getattr(getattr(msg, "raw_amqp_message", None), "annotations", None) or {}
    return annotations.get(name, annotations.get(name.decode()))


def _enqueued_time(msg: Any) -> datetime.datetime | None:
    # From the broker's millisecond annotation, not the SDK's float-seconds datetime, so the
    # fraction is exact (as .NET's DateTimeOffset from the same milliseconds).
    raw = _annotation(msg, b"x-opt-enqueued-time")
    return _amqp_time(raw) if raw is not None else msg.enqueued_time_utc


def _expires_at(msg: Any, enqueued: datetime.datetime | None) -> datetime.datetime | None:
    """.NET ``ServiceBusReceivedMessage.ExpiresAt``: absolute-expiry-time if set, else enqueued
    time + TTL, else ``DateTimeOffset.MaxValue`` (None here)."""
    raw = getattr(msg, "raw_amqp_message", None)
    absolute = getattr(getattr(raw, "properties", None), "absolute_expiry_time", None)
    if absolute:
        return _amqp_time(absolute)
    ttl: datetime.timedelta | None = msg.time_to_live
    if enqueued is None or ttl is None:
        return None
    try:
        return enqueued + ttl
    except OverflowError:
        return None


def _body_bytes(msg: Any) -> bytes:
    body = msg.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    return b"".join(bytes(part) for part in body)


def _body_string(msg: Any) -> str | None:
    """``MessageToStringConverter``: data body -> strict UTF-8, else lossy UTF-8 (the extension's
    DataContract fallback only matters for .NET senders); value body must be a string."""
    kind = str(getattr(msg, "body_type", "data")).lower()
    if kind.endswith("value"):
        value = msg.body
        if isinstance(value, (bytes, bytearray)):
            # pyamqp hands an AMQP string value over as bytes; .NET sees a string only if it was one.
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise BindingError("A message with a value type of System.Byte[] cannot be bound to a string.") from None
        if isinstance(value, str):
            return value
        raise BindingError(f"A message with a value type of {type(value).__name__} cannot be bound to a string.")
    if kind.endswith("sequence"):
        raise BindingError("A sequence body message cannot be bound to a string.")
    return _body_bytes(msg).decode("utf-8", "replace")


def _body_binary(msg: Any) -> bytes:
    kind = str(getattr(msg, "body_type", "data")).lower()
    if kind.endswith("value"):
        value = msg.body
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise BindingError(f"A message with a value type of {type(value).__name__} cannot be bound to a byte[].")
    if kind.endswith("sequence"):
        raise BindingError("A sequence body message cannot be bound to a byte[].")
    return _body_bytes(msg)


@dataclass
class _Fields:
    """One message's binding data, typed as the extension types it."""

    delivery_count: int
    dead_letter_source: str | None
    lock_token: str | None
    expires_at: datetime.datetime | None
    enqueued: datetime.datetime | None
    message_id: str | None
    content_type: str | None
    reply_to: str | None
    sequence_number: int
    to: str | None
    subject: str | None
    correlation_id: str | None
    properties: dict[str, Any]
    session_id: str | None
    reply_to_session_id: str | None
    partition_key: str | None
    transaction_partition_key: str | None


def _fields(msg: Any) -> _Fields:
    enqueued = _enqueued_time(msg)
    return _Fields(
        # .NET's DeliveryCount is the AMQP header's count + 1; the Python SDK returns the header.
        delivery_count=(msg.delivery_count or 0) + 1,
        dead_letter_source=msg.dead_letter_source,
        lock_token=str(msg.lock_token) if msg.lock_token else None,
        expires_at=_expires_at(msg, enqueued),
        enqueued=enqueued,
        message_id=msg.message_id,
        content_type=msg.content_type,
        reply_to=msg.reply_to,
        sequence_number=int(msg.sequence_number or 0),
        to=msg.to,
        subject=msg.subject,
        correlation_id=msg.correlation_id,
        properties=application_properties(msg),
        session_id=msg.session_id,
        reply_to_session_id=msg.reply_to_session_id,
        partition_key=msg.partition_key,
        transaction_partition_key=getattr(msg, "transaction_partition_key", None),
    )


@dataclass(frozen=True)
class ServiceBusTriggerInput:
    """What the worker receives for one invocation: the trigger's data and its metadata."""

    data: meta.Datum | None
    trigger_metadata: dict[str, meta.Datum]


def _actions_metadata(namespace: str | None) -> dict[str, meta.Datum]:
    # MessageReceiver/MessageSession/MessageActions/SessionActions/ReceiveActions/Client are objects
    # in the binding data; Newtonsoft serialises their public properties. Shape approximated: the
    # actions types expose none; the client exposes these four.
    empty = meta.Datum("{}", "json")
    out = {k: empty for k in ("MessageReceiver", "MessageSession", "MessageActions", "SessionActions", "ReceiveActions")}
    out["Client"] = _json(
        {"FullyQualifiedNamespace": namespace or "", "IsClosed": False, "TransportType": 0, "Identifier": ""}
    )
    return out


def _put(meta_map: dict[str, meta.Datum], key: str, datum: meta.Datum | None) -> None:
    if datum is not None:
        meta_map[key] = datum


def _str(value: str | None) -> meta.Datum | None:
    return None if value is None else meta.Datum(value, "string")


def service_bus_input(
    msgs: Sequence[Any], *, many: bool, data_type: str | None, namespace: str | None = None
) -> ServiceBusTriggerInput:
    """The ``TypedData`` the host sends for ``msgs`` (one message unless ``many``), as ``Datum`` s."""
    binary = str(data_type or "").lower() == "binary"
    md = _actions_metadata(namespace)
    if not many:
        (msg,) = msgs
        f = _fields(msg)
        data: meta.Datum | None
        if binary:
            data = meta.Datum(_body_binary(msg), "bytes")
        else:
            text = _body_string(msg)
            data = None if text is None else meta.Datum(text, "string")
        # Order and keys of ServiceBusTriggerBindingStrategy.AddBindingData(message).
        _put(md, "DeliveryCount", _json(f.delivery_count))  # int -> ToRpcDefault -> json
        _put(md, "DeadLetterSource", _str(f.dead_letter_source))
        _put(md, "LockToken", _str(f.lock_token))
        _put(md, "ExpiresAtUtc", _json(_DateTime(f.expires_at)))  # ExpiresAt.DateTime: Unspecified
        _put(md, "ExpiresAt", _json(_DateTimeOffset(f.expires_at)))
        if f.enqueued is not None:
            _put(md, "EnqueuedTimeUtc", _json(_DateTime(f.enqueued)))
            _put(md, "EnqueuedTime", _json(_DateTimeOffset(f.enqueued)))
        _put(md, "MessageId", _str(f.message_id))
        _put(md, "ContentType", _str(f.content_type))
        _put(md, "ReplyTo", _str(f.reply_to))
        _put(md, "SequenceNumber", _json(f.sequence_number))  # long -> json (only long[] is sint64)
        _put(md, "To", _str(f.to))
        _put(md, "Subject", _str(f.subject))
        _put(md, "Label", _str(f.subject))
        _put(md, "CorrelationId", _str(f.correlation_id))
        _put(md, "ApplicationProperties", _json(f.properties))
        _put(md, "UserProperties", _json(f.properties))
        _put(md, "SessionId", _str(f.session_id))
        _put(md, "ReplyToSessionId", _str(f.reply_to_session_id))
        _put(md, "PartitionKey", _str(f.partition_key))
        _put(md, "TransactionPartitionKey", _str(f.transaction_partition_key))
        return ServiceBusTriggerInput(data, md)

    fs = [_fields(m) for m in msgs]
    if binary:
        # byte[][] -> collection_bytes (null entries dropped; a message always has a body array)
        data = meta.Datum(CollectionBytes([_body_binary(m) for m in msgs]), "collection_bytes")
    else:
        # string[] -> collection_string, empty bodies dropped like every other empty entry (the
        # library then fails the batch with an IndexError, as in Azure). Without a dataType the
        # host binds object[] instead; the runner refuses that at start (see check_binding).
        bodies = [_body_string(m) for m in msgs]
        data = meta.Datum(CollectionString([b for b in bodies if b]), "collection_string")
    # Keys of ServiceBusTriggerBindingStrategy.AddBindingData(messages[]).
    md["DeliveryCountArray"] = _json([f.delivery_count for f in fs])  # int[] -> json
    md["DeadLetterSourceArray"] = _string_array([f.dead_letter_source for f in fs])
    md["LockTokenArray"] = _string_array([f.lock_token for f in fs])
    md["ExpiresAtUtcArray"] = _json([_DateTime(f.expires_at) for f in fs])
    md["ExpiresAtArray"] = _json([_DateTimeOffset(f.expires_at) for f in fs])
    md["EnqueuedTimeUtcArray"] = _json([_DateTime(f.enqueued) for f in fs])
    md["EnqueuedTimeArray"] = _json([_DateTimeOffset(f.enqueued) for f in fs])
    md["MessageIdArray"] = _string_array([f.message_id for f in fs])
    md["ContentTypeArray"] = _string_array([f.content_type for f in fs])
    md["ReplyToArray"] = _string_array([f.reply_to for f in fs])
    md["SequenceNumberArray"] = meta.Datum(CollectionSInt64([f.sequence_number for f in fs]), "collection_sint64")
    md["ToArray"] = _string_array([f.to for f in fs])
    md["SubjectArray"] = _string_array([f.subject for f in fs])
    md["LabelArray"] = _string_array([f.subject for f in fs])
    md["CorrelationIdArray"] = _string_array([f.correlation_id for f in fs])
    md["ApplicationPropertiesArray"] = _json([f.properties for f in fs])
    md["UserPropertiesArray"] = _json([f.properties for f in fs])
    md["SessionIdArray"] = _string_array([f.session_id for f in fs])
    md["ReplyToSessionIdArray"] = _string_array([f.reply_to_session_id for f in fs])
    md["PartitionKeyArray"] = _string_array([f.partition_key for f in fs])
    # sic: the extension fills TransactionPartitionKeyArray with the partition keys
    md["TransactionPartitionKeyArray"] = _string_array([f.partition_key for f in fs])
    return ServiceBusTriggerInput(data, md)


def check_binding(trigger: Mapping[str, Any]) -> None:
    """Refuse a Service Bus trigger whose host encoding is not reproduced here."""
    many = str(trigger.get("cardinality") or "one").lower() == "many"
    data_type = str(trigger.get("dataType") or "").lower()
    if many and data_type not in ("binary", "string"):
        raise BindingError(
            f"{trigger.get('name')}: cardinality 'many' without data_type 'binary' or 'string': the host then "
            "binds object[] and the local runner does not reproduce that encoding; declare the data_type"
        )


def decode_service_bus(
    msgs: Sequence[Any], *, many: bool, data_type: str | None, namespace: str | None = None
) -> ServiceBusMessage | list[ServiceBusMessage]:
    """Encode like the host, then decode with the library's ``ServiceBusMessageInConverter``."""
    given = service_bus_input(msgs, many=many, data_type=data_type, namespace=namespace)
    out = ServiceBusMessageInConverter.decode(
        given.data,  # type: ignore[arg-type]  # None for a null body, as the worker passes it
        trigger_metadata=given.trigger_metadata,
    )
    return out  # the library's subclass of func.ServiceBusMessage (or a list of them)


# ----------------------------------------------------------------- HTTP
def _joined(pairs: Iterable[tuple[str, str]], *, lower: bool) -> dict[str, str]:
    # ASP.NET Core keeps repeated names as StringValues; the host sends StringValues.ToString(),
    # i.e. the values joined with ",".
    grouped: dict[str, list[str]] = {}
    for k, v in pairs:
        grouped.setdefault(k.lower() if lower else k, []).append(v)
    return {k: ",".join(vs) for k, vs in grouped.items()}


def http_request_datum(
    *,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    route_params: Mapping[str, str | None],
    body: bytes,
    content_length: int | None,
) -> meta.Datum:
    """``ToRpcHttp`` for the Python worker's capabilities, as ``Datum.from_typed_data`` shapes it."""
    query_map = {k: v for k, v in _joined(query, lower=False).items() if v}  # empty values dropped
    # The body goes over only when Content-Length > 0 (a chunked request arrives with no body).
    body_datum = meta.Datum(body if content_length and content_length > 0 else b"", "bytes")
    return meta.Datum(
        {
            "method": meta.Datum(method, "string"),
            "url": meta.Datum(url, "string"),
            "headers": {k: meta.Datum(v, "string") for k, v in _joined(headers, lower=True).items()},
            "body": body_datum,
            "params": {k: meta.Datum(str(v), "string") for k, v in route_params.items() if v is not None},
            "query": {k: meta.Datum(v, "string") for k, v in query_map.items()},
        },
        "http",
    )


def decode_http_request(datum: meta.Datum) -> func.HttpRequest:
    req: func.HttpRequest = HttpRequestConverter.decode(datum, trigger_metadata={})
    return req


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def encode_http_response(value: Any) -> HttpResult:
    """The function's return value through the worker's ``HttpResponseConverter.encode`` (which
    sets a missing ``content-type`` and splits out ``Set-Cookie``), as the host writes it."""
    datum = HttpResponseConverter.encode(value, expected_type=None)
    if datum.type == "string":  # a plain str return: the host answers 200 with it
        return HttpResult(200, [], str(datum.value).encode("utf-8"))
    val = datum.value
    headers = [(k, str(d.value)) for k, d in val["headers"].items()]
    for cookie in val.get("cookies") or []:
        for morsel in cookie.values():
            headers.append(("Set-Cookie", morsel.OutputString()))
    body = val["body"].value if val["body"] is not None else b""
    return HttpResult(int(val["status_code"].value), headers, bytes(body or b""))
