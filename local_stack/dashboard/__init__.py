"""A live dashboard of the local stack: regions, subscriptions, relay nodes, dead letters, flow.

:class:`~local_stack.dashboard.collector.Collector` probes everything once a second;
:class:`~local_stack.dashboard.server.Dashboard` serves one page that follows it over
server-sent events. :class:`local_stack.stack.LocalStack` starts both (``make run`` prints the URL).
"""

from .collector import Collector, NodeTarget, RegionTarget, parse_metrics
from .server import Dashboard

__all__ = ["Collector", "Dashboard", "NodeTarget", "RegionTarget", "parse_metrics"]
