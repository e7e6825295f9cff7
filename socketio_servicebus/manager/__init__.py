"""The python-socketio client manager over a Service Bus topic and its parts."""

from socketio_servicebus.manager.client_manager import ServiceBusManager
from socketio_servicebus.manager.lifecycle import ManagerClosed
from socketio_servicebus.manager.options import BatchingOptions, ClusterOptions, ConnectionOptions, Limits
from socketio_servicebus.manager.results import ClusterResult, IncompleteResult
from socketio_servicebus.metrics import ManagerMetrics

__all__ = ["BatchingOptions", "ClusterOptions", "ClusterResult", "ConnectionOptions", "IncompleteResult", "Limits",
           "ManagerClosed", "ManagerMetrics", "ServiceBusManager"]
