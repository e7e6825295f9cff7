"""``servicebus-emulator`` / ``python -m servicebus_emulator``: checks the extra, then runs :mod:`.cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from socketio_servicebus.extras import require_extra


def main(argv: Sequence[str] | None = None) -> int:
    require_extra("emulator", "servicebus-emulator")
    from servicebus_emulator.cli import main as cli_main

    return cli_main(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
