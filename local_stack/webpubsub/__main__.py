"""``python -m local_stack.webpubsub``: the local Web PubSub service on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import os

from .app import ACCESS_KEY, serve


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Azure Web PubSub service (REST API + client WebSockets).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--access-key", default=os.environ.get("WEBPUBSUB_ACCESS_KEY", ACCESS_KEY),
                        help="the AccessKey of the connection string (env WEBPUBSUB_ACCESS_KEY)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.access_key))


if __name__ == "__main__":
    main()
