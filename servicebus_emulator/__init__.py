"""A local Azure Service Bus emulator speaking AMQP 1.0 to the unmodified azure-servicebus SDK."""

from .config import ConfigError, EmulatorConfig, load_config, parse_config
from .server import Emulator

__all__ = ["ConfigError", "Emulator", "EmulatorConfig", "load_config", "parse_config"]
