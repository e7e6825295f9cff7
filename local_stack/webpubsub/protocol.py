"""The client protocols' frames, without I/O: what a connection sends and what it may receive.

Subprotocols ``json.webpubsub.azure.v1`` and ``json.reliable.webpubsub.azure.v1`` (the official
clients' default; the same frames plus ``sequenceId`` on messages and ``sequenceAck`` upstream).
A connection without a subprotocol ("plain") gets bare data frames: text for JSON and text
messages, binary for binary ones.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DataType", "Payload", "Protocol", "FrameError", "JoinGroup", "LeaveGroup", "SendToGroup", "SendEvent",
    "SequenceAck", "ClientFrame", "parse_client_frame", "payload_from_rest", "payload_from_client",
    "message_frame", "ack_frame", "connected_frame", "disconnected_frame", "group_name_ok",
]

MAX_FRAME_BYTES = 1024 * 1024
GROUP_MAX = 1024


class Protocol(enum.Enum):
    PLAIN = ""
    JSON = "json.webpubsub.azure.v1"
    JSON_RELIABLE = "json.reliable.webpubsub.azure.v1"

    @property
    def structured(self) -> bool:
        return self is not Protocol.PLAIN


class DataType(enum.Enum):
    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


class FrameError(ValueError):
    """A client frame the service cannot act on; ``ack_id`` is set when the client asked for an ack."""

    def __init__(self, message: str, ack_id: int | None = None) -> None:
        super().__init__(message)
        self.ack_id = ack_id


@dataclass(frozen=True)
class Payload:
    """One message's data: its type, its bytes (what a plain client gets) and its frame value."""

    data_type: DataType
    body: bytes
    #: ``data`` of a subprotocol frame: the JSON value, the text, or base64 of the bytes
    value: Any


def group_name_ok(group: object) -> bool:
    return isinstance(group, str) and 0 < len(group) <= GROUP_MAX and not group.isspace()


def payload_from_rest(content_type: str, body: bytes) -> Payload:
    """A REST ``:send`` body by its Content-Type; ``ValueError`` for what the service refuses."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            raise ValueError("body is not valid JSON") from None
        return Payload(DataType.JSON, body, value)
    if media == "text/plain":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("text/plain body is not UTF-8") from None
        return Payload(DataType.TEXT, body, text)
    if media == "application/octet-stream":
        return Payload(DataType.BINARY, body, base64.b64encode(body).decode("ascii"))
    raise ValueError(f"unsupported Content-Type {content_type!r}: use application/json, text/plain or "
                     "application/octet-stream")


def payload_from_client(data_type: object, data: object) -> Payload:
    if data_type == DataType.JSON.value:
        return Payload(DataType.JSON, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), data)
    if data_type == DataType.TEXT.value:
        if not isinstance(data, str):
            raise ValueError("text data must be a string")
        return Payload(DataType.TEXT, data.encode(), data)
    if data_type == DataType.BINARY.value:
        if not isinstance(data, str):
            raise ValueError("binary data must be a base64 string")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("binary data is not valid base64") from None
        return Payload(DataType.BINARY, raw, data)
    raise ValueError(f"unknown dataType {data_type!r}")


@dataclass(frozen=True)
class JoinGroup:
    group: str
    ack_id: int | None


@dataclass(frozen=True)
class LeaveGroup:
    group: str
    ack_id: int | None


@dataclass(frozen=True)
class SendToGroup:
    group: str
    ack_id: int | None
    payload: Payload
    no_echo: bool


@dataclass(frozen=True)
class SendEvent:
    event: str
    ack_id: int | None


@dataclass(frozen=True)
class SequenceAck:
    sequence_id: int


ClientFrame = JoinGroup | LeaveGroup | SendToGroup | SendEvent | SequenceAck


def _ack_id(doc: dict[str, Any]) -> int | None:
    ack = doc.get("ackId")
    if ack is None:
        return None
    if isinstance(ack, bool) or not isinstance(ack, int) or ack < 0:
        raise FrameError("ackId must be a non-negative integer")
    return ack


def parse_client_frame(text: str) -> ClientFrame:
    """One text frame from a subprotocol client; ``FrameError`` for anything else."""
    if len(text) > MAX_FRAME_BYTES:
        raise FrameError(f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError:
        raise FrameError("frame is not JSON") from None
    if not isinstance(doc, dict):
        raise FrameError("frame is not a JSON object")
    kind = doc.get("type")
    if kind == "sequenceAck":
        seq = doc.get("sequenceId")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise FrameError("sequenceAck needs an integer sequenceId")
        return SequenceAck(seq)
    ack_id = _ack_id(doc)
    if kind in ("joinGroup", "leaveGroup", "sendToGroup"):
        group = doc.get("group")
        if not group_name_ok(group):
            raise FrameError(f"invalid group name (1 to {GROUP_MAX} characters)", ack_id)
        assert isinstance(group, str)
        if kind == "joinGroup":
            return JoinGroup(group, ack_id)
        if kind == "leaveGroup":
            return LeaveGroup(group, ack_id)
        try:
            payload = payload_from_client(doc.get("dataType"), doc.get("data"))
        except ValueError as exc:
            raise FrameError(str(exc), ack_id) from None
        return SendToGroup(group, ack_id, payload, doc.get("noEcho") is True)
    if kind == "event":
        event = doc.get("event")
        if not isinstance(event, str) or not event:
            raise FrameError("event needs a name", ack_id)
        return SendEvent(event, ack_id)
    raise FrameError(f"unknown frame type {kind!r}", ack_id)


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def message_frame(payload: Payload, *, group: str | None, from_user_id: str | None,
                  sequence_id: int | None) -> str:
    """A ``message`` frame: ``from: server`` (``group`` None) or ``from: group``."""
    doc: dict[str, Any] = {"type": "message", "from": "server" if group is None else "group"}
    if group is not None:
        doc["group"] = group
        if from_user_id is not None:
            doc["fromUserId"] = from_user_id
    doc["dataType"] = payload.data_type.value
    doc["data"] = payload.value
    if sequence_id is not None:
        doc["sequenceId"] = sequence_id
    return _dump(doc)


def ack_frame(ack_id: int, error: tuple[str, str] | None = None) -> str:
    doc: dict[str, Any] = {"type": "ack", "ackId": ack_id, "success": error is None}
    if error is not None:
        doc["error"] = {"name": error[0], "message": error[1]}
    return _dump(doc)


def connected_frame(connection_id: str, user_id: str | None, reconnection_token: str | None) -> str:
    doc: dict[str, Any] = {"type": "system", "event": "connected", "connectionId": connection_id}
    if user_id is not None:
        doc["userId"] = user_id
    if reconnection_token is not None:
        doc["reconnectionToken"] = reconnection_token
    return _dump(doc)


def disconnected_frame(message: str) -> str:
    return _dump({"type": "system", "event": "disconnected", "message": message})
