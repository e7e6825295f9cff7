"""The python-socketio client manager over a Service Bus topic and its bookkeeping parts."""

from socketio_servicebus.manager.client_manager import ServiceBusManager
from socketio_servicebus.manager.lifecycle import ManagerClosed
from socketio_servicebus.manager.metrics import ManagerMetrics
from socketio_servicebus.manager.results import ClusterResult, IncompleteResult

__all__ = ["ClusterResult", "IncompleteResult", "ManagerClosed", "ManagerMetrics", "ServiceBusManager"]
