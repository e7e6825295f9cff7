"""The frame fixer on its own (no sockets): delivery-ids the SDK reuses under concurrency are
renumbered before proton sees them and mapped back in our dispositions; errors proton sends
without ``info`` get one; bytes it does not understand pass through unchanged."""

from __future__ import annotations

import struct
from typing import Any

from proton import Data, Described, symbol, uint, ulong, ushort

from servicebus_emulator.amqp_frames import FrameFixer

SASL_HEADER, AMQP_HEADER = b"AMQP\x03\x01\x00\x00", b"AMQP\x00\x01\x00\x00"


def frame(channel: int, code: int, fields: list[Any], payload: bytes = b"") -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), fields))
    body = bytes(data.encode()) + payload
    return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body


def fields_of(raw: bytes) -> tuple[int, int, list[Any], bytes]:
    """(channel, descriptor code, fields, payload) of one encoded frame."""
    channel = struct.unpack_from(">H", raw, 6)[0]
    data = Data()
    used = data.decode(raw[8:])
    data.rewind()
    data.next()
    obj = data.get_object()
    return channel, int(obj.descriptor), list(obj.value), raw[8 + used :]


def split(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        if raw[pos : pos + 4] == b"AMQP":
            pos += 8
            continue
        size = struct.unpack_from(">I", raw, pos)[0]
        out.append(raw[pos : pos + size])
        pos += size
    return out


def transfer(channel: int, handle: int, delivery_id: int, more: bool = False, payload: bytes = b"msg") -> bytes:
    return frame(channel, 0x14, [uint(handle), uint(delivery_id), b"\x00\x00\x00\x01", uint(0), False, more], payload)


def opened() -> FrameFixer:
    fixer = FrameFixer(max_frame=1 << 20)
    begin = frame(1, 0x11, [None, uint(0), uint(65536), uint(65536)])
    assert fixer.incoming(SASL_HEADER + AMQP_HEADER + begin) == SASL_HEADER + AMQP_HEADER + begin
    # our begin answers the client's channel 1 on our channel 0
    ours = frame(0, 0x11, [ushort(1), uint(0), uint(64), uint(64)])
    assert fixer.outgoing(AMQP_HEADER + ours) == AMQP_HEADER + ours
    return fixer


def test_reused_delivery_ids_are_renumbered_and_mapped_back() -> None:
    fixer = opened()
    wire = transfer(1, 4, 0) + transfer(1, 4, 0) + transfer(1, 4, 0) + transfer(1, 4, 3)
    seen = [fields_of(f) for f in split(fixer.incoming(wire))]
    assert [f[2][1] for f in seen] == [0, 1, 2, 3]
    assert all(f[3] == b"msg" for f in seen)  # payloads untouched
    assert fixer.renumbered == 2
    # proton settles 0..3 in one disposition; the client gets its own ids back (0 and 3)
    disposition = frame(0, 0x15, [True, uint(0), uint(3), True, Described(ulong(0x24), [])])
    back = [fields_of(f) for f in split(fixer.outgoing(disposition))]
    assert [(f[2][1], f[2][2]) for f in back] == [(0, 0), (3, 3)]
    assert all(f[2][3] is True for f in back)
    # once settled, the mapping is forgotten: the same frame passes unchanged
    assert fixer.outgoing(disposition) == disposition


def test_continuation_frames_keep_their_delivery_id() -> None:
    fixer = opened()
    wire = transfer(1, 4, 0) + transfer(1, 4, 0, more=True) + transfer(1, 4, 0, more=False) + transfer(1, 4, 2)
    ids = [fields_of(f)[2][1] for f in split(fixer.incoming(wire))]
    assert ids == [0, 1, 1, 2]


def test_frames_split_across_reads_are_reassembled() -> None:
    fixer = opened()
    wire = transfer(1, 4, 0) + transfer(1, 4, 0, payload=b"x" * 1000)
    out = b"".join(fixer.incoming(wire[i : i + 7]) for i in range(0, len(wire), 7))
    assert [fields_of(f)[2][1] for f in split(out)] == [0, 1]


def test_sender_side_dispositions_and_other_frames_pass_unchanged() -> None:
    fixer = opened()
    fixer.incoming(transfer(1, 4, 0) + transfer(1, 4, 0))
    ours = frame(0, 0x15, [False, uint(0), None, True, Described(ulong(0x24), [])])  # settles our transfers
    assert fixer.outgoing(ours) == ours
    flow = frame(0, 0x13, [uint(0), uint(64), uint(0), uint(64)])
    assert fixer.outgoing(flow) == flow


def test_errors_without_info_get_one() -> None:
    fixer = opened()
    close = frame(0, 0x18, [Described(ulong(0x1D), [symbol("amqp:session:invalid-field"), "sequencing error"])])
    (fixed,) = split(fixer.outgoing(close))
    error = fields_of(fixed)[2][0]
    assert error.value[0] == "amqp:session:invalid-field" and error.value[1] == "sequencing error"
    assert symbol("com.microsoft:tracking-id") in error.value[2]
    with_info = frame(0, 0x16, [uint(1), True, Described(ulong(0x1D), [symbol("x"), "y", {symbol("k"): "v"}])])
    assert fixer.outgoing(with_info) == with_info


def test_garbage_passes_through_for_proton_to_refuse() -> None:
    fixer = FrameFixer(max_frame=1 << 18)
    junk = AMQP_HEADER + b"\xff" * 300
    assert fixer.incoming(junk) == junk
    assert fixer.incoming(b"more") == b"more"
