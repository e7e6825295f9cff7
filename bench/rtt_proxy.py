"""A TCP proxy that adds a round-trip time: ``python bench/rtt_proxy.py --target HOST:PORT --rtt-ms X``.

Every chunk read from either side is written to the other ``X / 2`` ms later, in order (one
queue per direction, timestamps from when the chunk arrived), so a request and its answer
take ``X`` ms longer, as across a network. Bandwidth is not limited. Prints ``READY <port>``
once it listens on 127.0.0.1 (ephemeral port). Used by ``manager_bench.py --broker-rtt-ms``
in front of both brokers, Redis and the emulator, so the comparison stays fair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + delay, data))
        finally:
            queue.put_nowait((time.monotonic() + delay, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    reading = asyncio.ensure_future(read())
    try:
        await write()
    finally:
        reading.cancel()


async def _serve(target_host: str, target_port: int, rtt: float) -> None:
    delay = rtt / 2

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay),
                                 return_exceptions=True)
        finally:
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="HOST:PORT to forward to")
    p.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add, milliseconds")
    a = p.parse_args()
    host, _, port = a.target.rpartition(":")
    asyncio.run(_serve(host or "127.0.0.1", int(port), a.rtt_ms / 1000))


if __name__ == "__main__":
    main()
