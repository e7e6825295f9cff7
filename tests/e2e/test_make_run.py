"""``python -m local_stack`` (what ``make run`` starts): table, status line, Ctrl-C, crash recovery.

The stack's children run in their own sessions, so a SIGKILLed launcher leaves them orphaned;
the next run must find them through ``stack.json`` and stop them before starting anew. Ctrl-C
must stop every process and leave no port bound.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_stack.processes import ROOT


def launch(run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "local_stack", "--ephemeral", "--run-dir", str(run_dir), "--status-interval", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str], timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("local_stack exited early:\n" + "".join(seen))
        seen.append(line)
        if re.search(pattern, line):
            return
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "".join(seen))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_run_status_crash_recovery_and_clean_stop(tmp_path: Path) -> None:
    import json

    first: list[str] = []
    proc = launch(tmp_path)
    try:
        read_until(proc, r"nodes 4/4 ", first)
        table = "".join(first)
        assert "on-prem node factory1" in table and "/api/emit" in table
        # it says what it is: no client auth, local only (docs/security.md)
        assert "clients: anonymous (no client auth) and every service on 127.0.0.1 only" in table, table
        assert re.search(r"^dashboard http://127\.0\.0\.1:\d+/", table, re.M), table
        orphans = json.loads((tmp_path / "stack.json").read_text())["pids"]
        assert len(orphans) == 8
    finally:
        proc.kill()  # the launcher crashes; its children live on
        proc.wait(10)
    assert all(alive(pid) for pid in orphans), "children should outlive a SIGKILLed launcher"

    second: list[str] = []
    proc = launch(tmp_path)
    try:
        read_until(proc, r"nodes 4/4 ", second)
        assert not any(alive(pid) for pid in orphans), "stale processes of the crashed run were not stopped"
        # the emulator runs on .run/servicebus-data: the nodes' subscriptions (created through the
        # admin API by the first run, whose nodes were SIGKILLed) are restored, not re-provisioned
        assert "servicebus-data" in table
        log = (tmp_path / "logs" / "emulator.log").read_text()
        restored = re.search(r"namespace sb-westeurope restored from .*servicebus-data: \{'entities': (\d+)", log)
        assert restored and int(restored.group(1)) >= 2, log[-2000:]
        ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", "".join(second))]
        ports += [int(p) for p in re.findall(r"sb://localhost:(\d+)", "".join(second))]
        assert len(set(ports)) >= 8
        pids = json.loads((tmp_path / "stack.json").read_text())["pids"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        read_until(proc, r"^stopped\.", second, timeout=60)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(alive(pid) for pid in pids)
    bound = [p for p in set(ports) if listening(p)]
    assert not bound, f"ports still bound after Ctrl-C: {bound}"
    assert not (tmp_path / "stack.json").exists()
