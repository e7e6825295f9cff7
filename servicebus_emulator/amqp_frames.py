"""Frame-level fixes between the socket and proton's engine: delivery-ids, error info.

**Delivery-ids.** The SDK's pure-Python AMQP stack (``azure/servicebus/_pyamqp/aio/_session_async.py``
``_outgoing_transfer``) reads the session's ``next_outgoing_id``, awaits the socket write, and
only then increments it. Two management requests sent concurrently on one session
(``AutoLockRenewer`` renewing several locks at once; ``send_messages`` calls are serialised by
the SDK) therefore go out with the *same* delivery-id (and the same delivery-tag), and the counter then jumps by the number of
transfers. A protocol trace of ``AutoLockRenewer`` with five locks (``PN_TRACE_FRM=1``)::

    <- @transfer [handle=0x4, delivery-id=0x1, delivery-tag=b"\\x00\\x00\\x00\\x01", settled=false, more=false]
       (renew-lock for token 1)
    <- @transfer [handle=0x4, delivery-id=0x1, delivery-tag=b"\\x00\\x00\\x00\\x01", settled=false, more=false]
       (renew-lock for token 2)
    -> @close [error=@error [condition=:"amqp:session:invalid-field",
                             description="sequencing error, expected delivery-id 2, got 1"]]

Proton's engine enforces the spec (delivery-ids of a session are consecutive) and closes the
whole connection; the close has no ``info`` field, and the SDK indexes the error list by
position and fails with ``IndexError``. Azure Service Bus serves these requests. So before
proton sees a transfer, :class:`FrameFixer` renumbers it with the id the session expects
(the k-th new delivery of a session gets ``initial + k``; continuation frames of a multi-frame
delivery keep their delivery's id), and remembers the client's own id; the dispositions we
send for those deliveries are rewritten back to the client's ids, so the SDK matches them to
its pending requests (it settles every pending delivery with that id; the management replies
themselves are matched by correlation-id, not by delivery-id). Since the SDK increments its
counter once per transfer, its ``next-outgoing-id`` in flow frames stays in step with ours.

**Error info.** Errors proton raises on its own (framing, session or link protocol errors) go
out as ``close``/``end``/``detach`` with an error of two fields; the SDK reads
``[condition, description, info]`` by index. The fixer appends an ``info`` map carrying a
tracking id to such errors, so the SDK raises a proper error instead of ``IndexError``.

The fixer never refuses bytes: anything it does not understand is passed through unchanged,
for proton to judge.
"""

from __future__ import annotations

import logging
import struct
import uuid

log = logging.getLogger("servicebus_emulator.amqp")

_BEGIN, _TRANSFER, _DISPOSITION, _DETACH, _END, _CLOSE, _ERROR = 0x11, 0x14, 0x15, 0x16, 0x17, 0x18, 0x1D
_AMQP_FRAME = 0
_MASK = 0xFFFFFFFF
_MAX_REMEMBERED = 100_000  # renumbered deliveries awaiting their disposition, per connection


class _Malformed(Exception):
    pass


def _skip(buf: bytes, pos: int) -> int:
    """End offset of the AMQP value encoded at ``pos``."""
    code = buf[pos]
    if code == 0x00:  # described: descriptor, then value
        return _skip(buf, _skip(buf, pos + 1))
    width = code >> 4
    if width == 0x4:
        end = pos + 1
    elif width in (0x5, 0x6, 0x7, 0x8, 0x9):
        end = pos + 1 + (1, 2, 4, 8, 16)[width - 0x5]
    elif width in (0xA, 0xC, 0xE):
        end = pos + 2 + buf[pos + 1]
    elif width in (0xB, 0xD, 0xF):
        end = pos + 5 + struct.unpack_from(">I", buf, pos + 1)[0]
    else:
        raise _Malformed(f"unknown constructor 0x{code:02x}")
    if end > len(buf):
        raise _Malformed("value runs past the frame")
    return end


def _read_uint(buf: bytes, pos: int) -> int | None:
    code = buf[pos]
    if code == 0x43:
        return 0
    if code == 0x52:
        return buf[pos + 1]
    if code == 0x70:
        return int(struct.unpack_from(">I", buf, pos + 1)[0])
    if code == 0x40:
        return None
    raise _Malformed(f"0x{code:02x} is not a uint")


def _read_bool(buf: bytes, pos: int) -> bool | None:
    code = buf[pos]
    if code in (0x41, 0x42):
        return code == 0x41
    if code == 0x56:
        return buf[pos + 1] != 0
    return None


def _uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 256:
        return bytes((0x52, value))
    return b"\x70" + struct.pack(">I", value)


def _list(fields: list[bytes]) -> bytes:
    body = b"".join(fields)
    if not fields:
        return b"\x45"
    if len(body) + 1 <= 255 and len(fields) <= 255:
        return bytes((0xC0, len(body) + 1, len(fields))) + body
    return b"\xd0" + struct.pack(">II", len(body) + 4, len(fields)) + body


class _Frame:
    """One AMQP frame split into header, performative fields and payload."""

    def __init__(self, raw: bytes):
        self.raw = raw
        doff = raw[4] * 4
        if doff < 8 or doff > len(raw):
            raise _Malformed("bad data offset")
        self.channel = struct.unpack_from(">H", raw, 6)[0]
        self.head = raw[:doff]
        pos = doff
        if len(raw) <= pos or raw[pos] != 0x00:
            raise _Malformed("no performative")
        descriptor_end = _skip(raw, pos + 1)
        self.descriptor = raw[pos:descriptor_end]
        self.code = self.descriptor_code(raw, pos)
        code = raw[descriptor_end]
        if code == 0x45:
            count, start, end = 0, descriptor_end + 1, descriptor_end + 1
        elif code == 0xC0:
            count, start, end = raw[descriptor_end + 2], descriptor_end + 3, descriptor_end + 2 + raw[descriptor_end + 1]
        elif code == 0xD0:
            size, count = struct.unpack_from(">II", raw, descriptor_end + 1)
            start, end = descriptor_end + 9, descriptor_end + 5 + size
        else:
            raise _Malformed("performative is not a list")
        self.fields: list[bytes] = []
        for _ in range(count):
            after = _skip(raw, start)
            self.fields.append(raw[start:after])
            start = after
        if start != end:
            raise _Malformed("performative list size mismatch")
        self.payload = raw[end:]

    @staticmethod
    def descriptor_code(raw: bytes, pos: int) -> int:
        if raw[pos + 1] == 0x53:
            return raw[pos + 2]
        if raw[pos + 1] == 0x80:
            return int(struct.unpack_from(">Q", raw, pos + 2)[0])
        return -1

    def field(self, index: int) -> bytes | None:
        return self.fields[index] if index < len(self.fields) else None

    def encode(self, fields: list[bytes] | None = None) -> bytes:
        body = self.descriptor + _list(self.fields if fields is None else fields) + self.payload
        return struct.pack(">I", len(self.head) + len(body)) + self.head[4:] + body


class _Splitter:
    """Cuts a byte stream into protocol headers and whole frames."""

    def __init__(self, max_frame: int | None = None) -> None:
        self.buffer = bytearray()
        self.max_frame = max_frame
        self.leftover: list[bytes] = []  # whole frames cut before the one that was not a frame

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        pos = 0
        buf = self.buffer
        while True:
            left = len(buf) - pos
            if left >= 4 and buf[pos : pos + 4] == b"AMQP":
                if left < 8:
                    break
                out.append(bytes(buf[pos : pos + 8]))
                pos += 8
                continue
            if left < 8:
                break
            size = struct.unpack_from(">I", buf, pos)[0]
            if size < 8 or (self.max_frame is not None and size > self.max_frame) or buf[pos + 4] < 2:
                # not a frame proton would wait for: hand what is left to it unchanged
                del buf[:pos]
                self.leftover = out
                raise _Malformed(f"frame size {size}")
            if left < size:
                break
            out.append(bytes(buf[pos : pos + size]))
            pos += size
        del buf[:pos]
        return out


class _Session:
    """Delivery-ids of one session of the client (its channel)."""

    def __init__(self, next_id: int):
        self.next_id = next_id
        self.partial: dict[bytes, int] = {}  # handle -> id of the delivery still being transferred
        self.client_ids: dict[int, int] = {}  # our delivery-id -> the id the client used


class FrameFixer:
    """Per connection: renumber incoming transfers, map dispositions back, add error info."""

    def __init__(self, name: str = "", max_frame: int | None = None) -> None:
        """``max_frame``: the largest frame proton accepts; a bigger size is passed to proton
        (which refuses it) instead of being waited for."""
        self.name = name
        self._in = _Splitter(max_frame)
        self._out = _Splitter()
        self._sessions: dict[int, _Session] = {}  # by the client's channel
        self._remote_channel: dict[int, int] = {}  # our channel -> the client's channel
        self._remembered = 0
        self.renumbered = 0
        self._broken = False

    # -- client -> proton --------------------------------------------------------------------
    def incoming(self, data: bytes) -> bytes:
        if self._broken:
            return data
        try:
            chunks = self._in.feed(data)
        except _Malformed:
            # not AMQP framing we understand: let proton judge it (and close with an error)
            self._broken = True
            rest = b"".join(self._in.leftover) + bytes(self._in.buffer)
            self._in.buffer.clear()
            return rest
        return b"".join(self._fix_incoming(chunk) for chunk in chunks)

    def _fix_incoming(self, raw: bytes) -> bytes:
        if len(raw) < 12 or raw[:4] == b"AMQP" or raw[5] != _AMQP_FRAME:
            return raw
        descriptor = _Frame.descriptor_code(raw, raw[4] * 4) if raw[raw[4] * 4 : raw[4] * 4 + 1] == b"\x00" else -1
        if descriptor not in (_BEGIN, _TRANSFER, _END):
            return raw
        try:
            frame = _Frame(raw)
            if frame.code == _BEGIN:
                field = frame.field(1)
                self._sessions[frame.channel] = _Session(_read_uint(field, 0) or 0 if field else 0)
                return raw
            if frame.code == _END:
                gone = self._sessions.pop(frame.channel, None)
                if gone is not None:
                    self._remembered -= len(gone.client_ids)
                return raw
            return self._renumber(frame)
        except (_Malformed, IndexError, struct.error):
            return raw

    def _renumber(self, frame: _Frame) -> bytes:
        session = self._sessions.get(frame.channel)
        handle = frame.field(0)
        id_field = frame.field(1)
        if session is None or handle is None:
            return frame.raw
        more_field = frame.field(5)
        more = bool(more_field and _read_bool(more_field, 0))
        settled_field = frame.field(4)
        settled = bool(settled_field and _read_bool(settled_field, 0))
        ongoing = session.partial.get(handle)
        if ongoing is not None:
            ours = ongoing
            if not more:
                del session.partial[handle]
        else:
            ours = session.next_id
            session.next_id = (session.next_id + 1) & _MASK
            if more:
                session.partial[handle] = ours
        theirs = _read_uint(id_field, 0) if id_field else None
        if theirs is None or theirs == ours:
            return frame.raw
        if ongoing is None:
            self.renumbered += 1
            log.debug("%s: channel %d: delivery-id %d renumbered to %d", self.name, frame.channel, theirs, ours)
            if not settled and self._remembered < _MAX_REMEMBERED:
                session.client_ids[ours] = theirs
                self._remembered += 1
        fields = list(frame.fields)
        fields[1] = _uint(ours)
        return frame.encode(fields)

    # -- proton -> client --------------------------------------------------------------------
    def outgoing(self, data: bytes) -> bytes:
        if self._broken:
            return data
        try:
            chunks = self._out.feed(data)
        except _Malformed:
            self._broken = True
            rest = b"".join(self._out.leftover) + bytes(self._out.buffer)
            self._out.buffer.clear()
            return rest
        return b"".join(self._fix_outgoing(chunk) for chunk in chunks)

    def _fix_outgoing(self, raw: bytes) -> bytes:
        if len(raw) < 12 or raw[:4] == b"AMQP" or raw[5] != _AMQP_FRAME:
            return raw
        doff = raw[4] * 4
        if raw[doff : doff + 1] != b"\x00":
            return raw
        descriptor = _Frame.descriptor_code(raw, doff)
        if descriptor == _DISPOSITION and not self._remembered:
            return raw
        if descriptor not in (_BEGIN, _DISPOSITION, _DETACH, _END, _CLOSE):
            return raw
        try:
            frame = _Frame(raw)
            if frame.code == _BEGIN:
                field = frame.field(0)
                if field and field[0] == 0x60:
                    self._remote_channel[frame.channel] = struct.unpack_from(">H", field, 1)[0]
                return raw
            if frame.code == _DISPOSITION:
                return self._map_disposition(frame)
            return self._add_error_info(frame)
        except (_Malformed, IndexError, struct.error):
            return raw

    def _map_disposition(self, frame: _Frame) -> bytes:
        role, first_field = frame.field(0), frame.field(1)
        if not role or not _read_bool(role, 0) or not first_field:
            return frame.raw  # we are the sender: it settles our own transfers
        session = self._sessions.get(self._remote_channel.get(frame.channel, -1))
        if session is None or not session.client_ids:
            return frame.raw
        first = _read_uint(first_field, 0)
        last_field = frame.field(2)
        last = _read_uint(last_field, 0) if last_field else None
        if first is None:
            return frame.raw
        last = first if last is None else last
        if (last - first) & _MASK > 10_000:
            return frame.raw
        settled_field = frame.field(3)
        settled = bool(settled_field and _read_bool(settled_field, 0))
        ids = [(first + i) & _MASK for i in range((last - first & _MASK) + 1)]
        if not any(i in session.client_ids for i in ids):
            return frame.raw
        theirs: list[int] = []
        for ours in ids:
            theirs.append(session.client_ids.get(ours, ours))
            if settled and ours in session.client_ids:
                del session.client_ids[ours]
                self._remembered -= 1
        # one disposition per run of consecutive client ids (duplicates collapse)
        runs: list[list[int]] = []
        for value in theirs:
            if runs and value in (runs[-1][1], (runs[-1][1] + 1) & _MASK):
                runs[-1][1] = value
            else:
                runs.append([value, value])
        out = []
        for start, end in runs:
            fields = list(frame.fields)
            while len(fields) < 3:
                fields.append(b"\x40")
            fields[1] = _uint(start)
            fields[2] = _uint(end)
            out.append(frame.encode(fields))
        return b"".join(out)

    def _add_error_info(self, frame: _Frame) -> bytes:
        index = {_DETACH: 2, _END: 0, _CLOSE: 0}[frame.code]
        error = frame.field(index)
        if not error or error[0] != 0x00 or _Frame.descriptor_code(error, 0) != _ERROR:
            return frame.raw
        inner = _Frame(struct.pack(">IBBH", 8 + len(error), 2, 0, 0) + error)
        if len(inner.fields) >= 3 and inner.fields[2] != b"\x40":
            return frame.raw
        tracking = str(uuid.uuid4()).encode()
        key = b"com.microsoft:tracking-id"
        info_body = bytes((0xA3, len(key))) + key + bytes((0xA1, len(tracking))) + tracking
        info = bytes((0xC1, len(info_body) + 1, 2)) + info_body
        error_fields = list(inner.fields[:2])
        while len(error_fields) < 2:
            error_fields.append(b"\x40")
        new_error = inner.descriptor + _list([*error_fields, info])
        fields = list(frame.fields)
        fields[index] = new_error
        return frame.encode(fields)


__all__ = ["FrameFixer"]
