"""Fixtures: an emulator with two regions (namespaces) and relay node processes on it."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from socketio_servicebus.topology import load_topology
from tests.support.emulator_process import EmulatorProcess

from .support import RelayProcess

ONPREM_NODE = "onprem1"
ONPREM_KEY_NAME = "sio-onprem"
ONPREM_KEY = "onprem-listen-send-key"


def regions_config() -> dict:
    """Region A: root key. Region B: root key + a Listen+Send key scoped to the topic, and the
    on-premise node's pre-provisioned subscription with the node rule from topology.json."""
    topo = load_topology()
    node_sub = topo["nodeSubscription"]
    rule = {
        "Name": node_sub["rule"],
        "Properties": {"FilterType": "Sql",
                       "SqlFilter": {"SqlExpression": node_sub["sqlTemplate"].format(node=ONPREM_NODE)}},
    }
    return EmulatorProcess.default_config(
        {"Name": "regiona", "Topics": [{"Name": topo["topic"]}]},
        {
            "Name": "regionb",
            "Topics": [{
                "Name": topo["topic"],
                "SharedAccessPolicies": [{"Name": ONPREM_KEY_NAME, "Key": ONPREM_KEY, "Rights": ["Listen", "Send"]}],
                "Subscriptions": [{
                    "Name": node_sub["prefix"] + ONPREM_NODE,
                    "Properties": {"LockDuration": node_sub["lockDuration"],
                                   "MaxDeliveryCount": node_sub["maxDeliveryCount"]},
                    "Rules": [rule],
                }],
            }],
        },
    )


@pytest.fixture(scope="session")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    config: Path = tmp_path_factory.mktemp("relay-emulator") / "Config.json"
    config.write_text(json.dumps(regions_config()))
    proc = EmulatorProcess(config)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def conn_a(regions: EmulatorProcess) -> str:
    return regions.connection_string("regiona")


@pytest.fixture(scope="session")
def conn_b(regions: EmulatorProcess) -> str:
    return regions.connection_string("regionb")


@pytest.fixture(scope="session")
def region_a_nodes(conn_a: str) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    """Two nodes of region A, shared by the tests that do not stop them."""
    nodes = [RelayProcess("--connection-string", conn_a, "--node-id", f"a{i}", "--region", "A") for i in (1, 2)]
    for n in nodes:
        n.spawn()  # start both at once, then wait
    try:
        for n in nodes:
            n.wait_started()
        yield nodes[0], nodes[1]
    finally:
        for n in nodes:  # drain both at once
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in nodes:
            n.stop()
