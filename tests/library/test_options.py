"""The option groups, and the flat keywords they replace (accepted for one release, with a warning)."""

from __future__ import annotations

import warnings

import pytest

from socketio_servicebus import BatchingOptions, ClusterOptions, ConnectionOptions, Limits, ServiceBusManager

CONN = "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"


def test_groups_need_no_warning_and_reach_the_parts() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgr = ServiceBusManager(connection=ConnectionOptions(connection_string=CONN, topic="t1",
                                                             receive_mode="peek_lock"),
                                cluster=ClusterOptions(heartbeat_interval=2.5), limits=Limits(buffer_size=7),
                                batching=BatchingOptions(send_interval=0), write_only=True)
    assert (mgr.topic, mgr.receive_mode, mgr.cluster_options.heartbeat_interval, mgr.limits.buffer_size,
            mgr.batching.send_interval) == ("t1", "peek_lock", 2.5, 7, 0)


def test_flat_keywords_still_work_with_one_deprecation_warning_naming_the_groups() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        mgr = ServiceBusManager(connection_string=CONN, topic="t2", heartbeat_interval=2.5, buffer_size=7,
                                client_options=None, write_only=True)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "connection=ConnectionOptions" in text and "cluster=ClusterOptions" in text and "limits=Limits" in text
    assert (mgr.topic, mgr.cluster_options.heartbeat_interval, mgr.limits.buffer_size) == ("t2", 2.5, 7)
    assert mgr.connection.client_options == {}  # None meant "the default", as before


def test_flat_keywords_override_a_given_group_and_bad_values_still_fail() -> None:
    with pytest.warns(DeprecationWarning):
        mgr = ServiceBusManager(connection=ConnectionOptions(connection_string=CONN, topic="a"), topic="b",
                                write_only=True)
    assert mgr.topic == "b"
    with pytest.raises(TypeError, match="no_such_option"):
        ServiceBusManager(connection=ConnectionOptions(connection_string=CONN), no_such_option=1)
    with pytest.raises(ValueError, match="connection_string"):
        ConnectionOptions()
    with pytest.raises(ValueError, match="receive_mode"):
        ConnectionOptions(connection_string=CONN, receive_mode="sometimes")
    with pytest.raises(ValueError, match="4096"):
        Limits(max_message_bytes=1024)
