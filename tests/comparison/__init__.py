"""Comparisons of ServiceBusManager with other ways to run python-socketio over Service Bus."""
