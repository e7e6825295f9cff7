"""Debian's ``tinyproxy`` as a real HTTP proxy for tests, in the foreground, with its own config.

It listens on 127.0.0.1 on an ephemeral port, allows CONNECT only to the ports given, and logs
every request (``LogLevel Info``: ``Request (file descriptor N): CONNECT host:port HTTP/1.1``)
to a file the test reads. ``make test`` installs it (``TEST_SYSTEM_PACKAGES`` in the Makefile).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TinyProxy:
    def __init__(self, directory: Path, connect_ports: list[int]):
        self.directory = directory
        self.connect_ports = connect_ports
        self.log_file = directory / "tinyproxy.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> TinyProxy:
        binary = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if Path("/usr/bin/tinyproxy").exists() else None)
        assert binary, "tinyproxy is missing: apt-get install -y tinyproxy (make test installs it)"
        for _ in range(3):  # the ephemeral port may be taken between picking and binding it
            self.port = _free_port()
            conf = self.directory / "tinyproxy.conf"
            conf.write_text("\n".join([
                "Listen 127.0.0.1",
                f"Port {self.port}",
                "Timeout 600",
                f'LogFile "{self.log_file}"',
                "LogLevel Info",
                "MaxClients 100",
                "DisableViaHeader Yes",
                *(f"ConnectPort {p}" for p in self.connect_ports),
            ]) + "\n")
            out = open(self.directory / "tinyproxy.out", "ab")  # noqa: SIM115 - closed with the process
            self.proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
            out.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"tinyproxy did not start: {(self.directory / 'tinyproxy.out').read_text(errors='replace')}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def connects(self) -> list[str]:
        """The ``host:port`` of every CONNECT request it logged."""
        return [line.split("): CONNECT ", 1)[1].split(" HTTP/")[0] for line in self.log().splitlines()
                if "Request (file descriptor" in line and "): CONNECT " in line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
