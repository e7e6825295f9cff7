"""A local Azure Service Bus emulator speaking AMQP 1.0 to the unmodified azure-servicebus SDK.

Needs the ``[emulator]`` extra (python-qpid-proton); :class:`Emulator` is imported on first use,
so ``servicebus-emulator`` can say which extra is missing instead of failing on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import EmulatorConfig, load_config, parse_config
from .errors import ConfigError

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["ConfigError", "Emulator", "EmulatorConfig", "load_config", "parse_config"]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from .server import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
