"""AMQP message sections: split what a sender transferred, rebuild what a receiver gets.

The emulator keeps the bare message (properties, application-properties, body, footer) as the
sender encoded it, byte for byte, and on each delivery writes a fresh header (delivery count)
and message-annotations section (sequence number, enqueued time, lock expiry) in front of it.
Bodies (data, sequence and value sections) and the footer are never decoded into Python values,
only walked over to find where they end, so whatever the client sent is what the receiver gets,
whatever it holds (maps with binary keys, nested lists, symbols, timestamps, uuids, arrays).

A Service Bus batch (message-format 0x80013700) arrives as one transfer whose data sections are
each a complete encoded message; the proton binding does not expose the message-format, so a
payload made only of data sections that each hold a valid encoded message is a batch.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from proton import UNDESCRIBED, Array, Data, Described, symbol, timestamp, ubyte, uint, ulong

from .errors import BadRequest, DecodeError
from .store import Entry, Message

HEADER, DELIVERY_ANN, MESSAGE_ANN, PROPERTIES, APP_PROPS, DATA, SEQUENCE, VALUE, FOOTER = range(0x70, 0x79)
_SECTION_CODES = set(range(0x70, 0x79))
_BATCH_ENVELOPE = {HEADER, DELIVERY_ANN, MESSAGE_ANN, PROPERTIES}

SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")
LOCKED_UNTIL = symbol("x-opt-locked-until")
LOCK_TOKEN = symbol("x-opt-lock-token")
SCHEDULED_TIME = symbol("x-opt-scheduled-enqueue-time")
DEAD_LETTER_SOURCE = symbol("x-opt-deadletter-source")
MESSAGE_STATE = symbol("x-opt-message-state")  # 0 active, 1 deferred, 2 scheduled
_BROKER_ANNOTATIONS = {SEQUENCE_NUMBER, ENQUEUED_TIME, LOCKED_UNTIL, LOCK_TOKEN, DEAD_LETTER_SOURCE, MESSAGE_STATE}


@dataclass(slots=True)
class Sections:
    """One message, split: decoded header/annotations/properties, raw bare bytes."""

    header: list[Any]
    annotations: dict[Any, Any]
    properties: list[Any]
    app_props: dict[str, Any]
    properties_raw: bytes
    body_raw: bytes  # body + footer sections, as sent
    size: int
    app_props_raw: bytes = b""

    # -- fields filters and the engine need -------------------------------------------------
    def prop(self, index: int) -> Any:
        return self.properties[index] if len(self.properties) > index else None

    @property
    def message_id(self) -> str | None:
        value = self.prop(0)
        return None if value is None else str(value)

    @property
    def ttl_seconds(self) -> float | None:
        ttl = self.header[2] if len(self.header) > 2 else None
        return None if ttl is None else int(ttl) / 1000.0

    @property
    def scheduled_at(self) -> float | None:
        value = self.annotations.get(SCHEDULED_TIME)
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value.timestamp()
        return int(value) / 1000.0

    def system_properties(self) -> dict[str, Any]:
        def text(value: Any) -> Any:
            if isinstance(value, (bytes, memoryview)):
                return bytes(value).decode("utf-8", "replace")
            return None if value is None else str(value)

        return {
            "messageid": text(self.prop(0)),
            "to": text(self.prop(2)),
            "label": text(self.prop(3)),
            "replyto": text(self.prop(4)),
            "correlationid": text(self.prop(5)),
            "contenttype": text(self.prop(6)),
            "sessionid": text(self.prop(10)),
            "replytosessionid": text(self.prop(12)),
            "size": self.size,
            "timetolive": self.ttl_seconds,
        }


_SECTION_NAMES = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANN,
    "amqp:message-annotations:map": MESSAGE_ANN,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APP_PROPS,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": SEQUENCE,
    "amqp:amqp-value:*": VALUE,
    "amqp:footer:map": FOOTER,
}
# sections the engine reads; the body sections (and the footer) stay opaque bytes, so any value
# the sender could encode comes back byte for byte, whatever its keys or nesting
_DECODED = {HEADER, DELIVERY_ANN, MESSAGE_ANN, PROPERTIES, APP_PROPS}
_MAX_DEPTH = 64


def plain_object(data: Data, depth: int = 0) -> Any:
    """The current node of ``data`` as a plain Python value that outlives ``data``.

    Like ``Data.get_object`` but binaries become ``bytes`` (proton hands out memoryviews into
    its own buffer, which are unhashable and die with the ``Data``), and map keys that Python
    cannot hash (binary, list, map) are made hashable, so a map with binary keys decodes.
    """
    if depth > _MAX_DEPTH:
        raise DecodeError(f"AMQP value nested deeper than {_MAX_DEPTH} levels")
    kind = data.type()
    if kind == Data.BINARY:
        return bytes(data.get_binary())
    if kind == Data.LIST:
        out: list[Any] = []
        if data.enter():
            try:
                while data.next():
                    out.append(plain_object(data, depth + 1))
            finally:
                data.exit()
        return out
    if kind == Data.MAP:
        result: dict[Any, Any] = {}
        if data.enter():
            try:
                while data.next():
                    key = _hashable(plain_object(data, depth + 1))
                    result[key] = plain_object(data, depth + 1) if data.next() else None
            finally:
                data.exit()
        return result
    if kind == Data.DESCRIBED:
        data.enter()
        try:
            data.next()
            descriptor = plain_object(data, depth + 1)
            data.next()
            value = plain_object(data, depth + 1)
        finally:
            data.exit()
        return Described(descriptor, value)
    if kind == Data.ARRAY:
        _, described, element_type = data.get_array()
        elements: list[Any] = []
        array_descriptor: Any = UNDESCRIBED
        data.enter()
        try:
            if described:
                data.next()
                array_descriptor = plain_object(data, depth + 1)
            while data.next():
                elements.append(plain_object(data, depth + 1))
        finally:
            data.exit()
        return Array(array_descriptor, int(element_type or Data.NULL), *elements)
    return data.get_object()


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, Array):
        return tuple(_hashable(v) for v in value.elements)
    if isinstance(value, Described):
        return (_hashable(value.descriptor), _hashable(value.value))
    return value


def _decode_sections(raw: bytes | memoryview) -> list[tuple[int, Any, bytes]]:
    """Split an encoded message into ``(section code, value, encoded bytes)``.

    The value is decoded for the sections the engine reads and for data sections (batch
    detection needs their bytes); for the other body sections and the footer it is ``None``.
    """
    view = memoryview(raw)
    data = Data()
    out = []
    offset = 0
    while offset < len(view):
        data.clear()
        try:
            used = data.decode(bytes(view[offset:]))
        except Exception as exc:  # proton raises DataException subclasses
            raise DecodeError(f"malformed AMQP message at byte {offset}: {exc}") from exc
        if used <= 0:
            raise DecodeError(f"malformed AMQP message at byte {offset}")
        data.rewind()
        if data.next() != Data.DESCRIBED:
            raise DecodeError(f"malformed AMQP message: byte {offset} does not start a message section")
        data.enter()
        data.next()
        descriptor = data.get_object()
        code = _SECTION_NAMES.get(str(descriptor), -1) if isinstance(descriptor, str) else int(descriptor or 0)
        if code not in _SECTION_CODES:
            raise DecodeError(f"malformed AMQP message: byte {offset} does not start a message section")
        value: Any = None
        if data.next():
            if code in _DECODED:
                value = plain_object(data)
            elif code == DATA and data.type() == Data.BINARY:
                value = bytes(data.get_binary())
        data.exit()
        out.append((code, value, bytes(view[offset : offset + used])))
        offset += used
    return out


def parse_message(raw: bytes | memoryview) -> Sections:
    sections = _decode_sections(raw)
    header: list[Any] = []
    annotations: dict[Any, Any] = {}
    properties: list[Any] = []
    app_props: dict[str, Any] = {}
    properties_raw = b""
    app_props_raw = b""
    body = bytearray()
    for code, value, chunk in sections:
        if code == HEADER:
            header = list(value or [])
        elif code == MESSAGE_ANN:
            annotations = dict(value or {})
        elif code == PROPERTIES:
            properties = list(value or [])
            properties_raw = chunk
        elif code == APP_PROPS:
            app_props = {_key(k): v for k, v in (value or {}).items()}
            app_props_raw = chunk
        elif code in (DATA, SEQUENCE, VALUE, FOOTER):
            body += chunk
    return Sections(
        header, annotations, properties, app_props, properties_raw, bytes(body), len(raw), app_props_raw
    )


def _key(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def parse_transfer(raw: bytes) -> list[Sections]:
    """One transfer's payload as a list of messages (more than one for a batch)."""
    sections = _decode_sections(raw)
    bodies = [value for code, value, _ in sections if code == DATA]
    envelope_only = all(code in _BATCH_ENVELOPE for code, _, _ in sections if code != DATA)
    if bodies and envelope_only:
        inner: list[Sections] = []
        for value in bodies:
            if not (isinstance(value, bytes) and value[:2] == b"\x00S"):
                inner = []
                break
            try:
                inner.append(parse_message(value))
            except BadRequest:
                inner = []
                break
        if inner:
            return inner
    return [parse_message(raw)]


def _section(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def to_timestamp(seconds: float) -> timestamp:
    return timestamp(int(seconds * 1000))


def encode_delivery(
    msg: Sections,
    *,
    seq: int,
    enqueued_at: float,
    delivery_count: int,
    locked_until: float | None = None,
    lock_token: uuid.UUID | None = None,
    app_overrides: dict[str, Any] | None = None,
    dead_letter_source: str | None = None,
    message_state: int | None = None,
) -> bytes:
    """The message as a receiver gets it: fresh header and broker annotations, bare message as sent.

    ``message_state`` (``x-opt-message-state``) is what the SDK reports as ``message.state``;
    left out, the SDK reports ACTIVE."""
    old = msg.header
    header = [
        old[0] if len(old) > 0 else None,
        old[1] if len(old) > 1 else None,
        old[2] if len(old) > 2 else None,
        bool(delivery_count == 0),
        uint(delivery_count),
    ]
    if header[1] is not None:
        header[1] = ubyte(int(header[1]))
    if header[2] is not None:
        header[2] = uint(int(header[2]))
    annotations = {k: v for k, v in msg.annotations.items() if k not in _BROKER_ANNOTATIONS}
    annotations[SEQUENCE_NUMBER] = int(seq)
    annotations[ENQUEUED_TIME] = to_timestamp(enqueued_at)
    if locked_until is not None:
        annotations[LOCKED_UNTIL] = to_timestamp(locked_until)
    if lock_token is not None:
        annotations[LOCK_TOKEN] = lock_token
    if dead_letter_source:
        annotations[DEAD_LETTER_SOURCE] = dead_letter_source
    if message_state is not None:
        annotations[MESSAGE_STATE] = int(message_state)
    parts = [_section(HEADER, header), _section(MESSAGE_ANN, annotations), msg.properties_raw]
    if app_overrides:
        parts.append(_section(APP_PROPS, {**msg.app_props, **app_overrides}))
    else:
        parts.append(msg.app_props_raw)
    parts.append(msg.body_raw)
    return b"".join(parts)


def to_stored(sections: Sections) -> Message:
    """What the engine stores of one received message: its sections, as sent, and the fields
    the engine reads (id, system and application properties, size, TTL, schedule)."""
    system = sections.system_properties()
    return Message(
        message_id=sections.message_id,
        system=system,
        user=sections.app_props,
        payload=sections,
        size=sections.size,
        ttl=sections.ttl_seconds,
        scheduled_at=sections.scheduled_at,
    )


def encode_entry(entry: Entry, peek: bool = False) -> bytes:
    """``entry`` as a receiver gets it; ``peek``: without lock expiry, with the message state
    (active, deferred or scheduled) in ``x-opt-message-state``."""
    overrides = dict(entry.user_overrides or {})
    if entry.dead_letter is not None:
        overrides["DeadLetterReason"] = entry.dead_letter[0]
        overrides["DeadLetterErrorDescription"] = entry.dead_letter[1]
    return encode_delivery(
        entry.msg.payload,
        seq=entry.seq,
        enqueued_at=entry.msg.enqueued_at,
        delivery_count=entry.delivery_count,
        locked_until=None if peek or entry.lock_token is None else entry.locked_until,
        app_overrides=overrides or None,
        dead_letter_source=entry.dead_letter_source,
        message_state=entry.state if peek else None,
    )
