"""The relay node: a python-socketio server scaled out over an Azure Service Bus topic.

``python -m relay_node --help`` lists the settings; ``docs/relay-node.md`` explains them.
"""

from .config import ConfigError, RelayConfig, from_args

__all__ = ["ConfigError", "RelayConfig", "from_args"]
