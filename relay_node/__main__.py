"""``relay-node`` / ``python -m relay_node``: checks the extra, then runs :mod:`.cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from socketio_servicebus.extras import require_extra


def main(argv: Sequence[str] | None = None) -> int:
    require_extra("relay", "relay-node")
    from relay_node.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
