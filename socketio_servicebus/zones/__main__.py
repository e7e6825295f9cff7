"""Zone keys from the command line.

``python -m socketio_servicebus.zones keygen factory1`` prints a new key pair as JSON:
``{"zone", "kid", "private_key", "public_key"}``. The private key (a base64url 32-byte seed) goes
into that zone's secret store only (``SIO_ZONE_KEY`` / ``--zone-key-file``; for the cloud zone the
Bicep parameter ``cloudZoneKey``); the public key goes into every verifier's zone document
(``SIO_ZONES``). ``python -m socketio_servicebus.zones public cloud < seed`` prints the public key
and kid of a seed read from stdin (e.g. to list the cloud zone in an on-premise site's document).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from socketio_servicebus.zones.signing import ZoneKey, ZoneKeyError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m socketio_servicebus.zones", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("keygen", help="a new key pair for a zone").add_argument("zone")
    sub.add_parser("public", help="the public key of a seed read from stdin").add_argument("zone")
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        key = ZoneKey.generate(args.zone)
        print(json.dumps({"zone": key.zone, "kid": key.kid, "private_key": key.text(),
                          "public_key": key.public.text()}))
        return 0
    try:
        key = ZoneKey.from_text(args.zone, sys.stdin.read())
    except ZoneKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"zone": key.zone, "kid": key.kid, "public_key": key.public.text()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
