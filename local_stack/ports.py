"""Who holds a TCP port (Linux ``/proc``): so a stack that cannot start names the port and the PID."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

__all__ = ["port_holder"]

_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _owner(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return int(pid)
    return None


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """``None`` if ``port`` is free on 127.0.0.1, else who holds it: ``"PID 1234 (python3 -m ...)"``."""
    inodes = _listening_inodes(port)
    if not inodes and _bindable(port):
        return None
    pid = _owner(inodes) if inodes else None
    if pid is None:
        return "a process this user cannot see" if inodes else "another socket"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"PID {pid} ({cmd[:80]})"
