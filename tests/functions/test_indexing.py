"""What the Functions host indexes: every function's bindings match topology.json and infra/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import azure.functions as func
import pytest

from shared.routing.plan import RegionMapError
from socketio_servicebus.topology import load_topology

from .conftest import import_function_app

ROOT = Path(__file__).resolve().parents[2]
TOPO = load_topology()
ENV = {
    "SIO_REGION": "westeurope",
    "SIO_REGION_MAP": json.dumps({
        "westeurope": {"fullyQualifiedNamespace": "sb-x-westeurope.servicebus.windows.net"},
        "northeurope": {"fullyQualifiedNamespace": "sb-x-northeurope.servicebus.windows.net"},
        "factory1": {"fullyQualifiedNamespace": "sb-x-factory1.servicebus.windows.net", "neighbors": ["westeurope"]},
    }),
}


@pytest.fixture(scope="module")
def functions() -> dict[str, dict]:
    mod = import_function_app(ENV)
    assert isinstance(mod.app, func.FunctionApp)
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in mod.app.get_functions()}


def test_one_trigger_per_subscription_per_region(functions: dict[str, dict]) -> None:
    regions = ["westeurope", "northeurope", "factory1"]
    expected = {f"{kind}_{r}" for r in regions for kind in TOPO["functionSubscriptions"]}
    assert expected | {"history", "history_server", "emit", "negotiate"} == set(functions)
    for region in regions:
        for kind, sub in TOPO["functionSubscriptions"].items():
            (binding,) = functions[f"{kind}_{region}"]["bindings"]
            assert binding == {
                "direction": "IN",
                "type": "serviceBusTrigger",
                "name": "msg",
                "connection": TOPO["regionConnectionTemplate"].replace("{region}", region),
                "topicName": TOPO["topic"],
                "subscriptionName": sub["name"],
            }
            # cardinality one (the default), no sessions, host settles (autoComplete)
            assert "cardinality" not in binding and "isSessionsEnabled" not in binding


def test_connection_names_are_the_ones_infra_writes(functions: dict[str, dict]) -> None:
    api = (ROOT / "infra" / "app" / "api.bicep").read_text()
    readme = (ROOT / "infra" / "README.md").read_text()
    # infra builds the per-region prefix from the same template + __fullyQualifiedNamespace
    assert "replace(topology.regionConnectionTemplate, '{region}', region.key)}__fullyQualifiedNamespace" in api
    assert "ServiceBusConnection_<region>__fullyQualifiedNamespace" in readme
    conns = {b["connection"] for f in functions.values() for b in f["bindings"] if "connection" in b}
    assert conns == {f"ServiceBusConnection_{r}" for r in ("westeurope", "northeurope", "factory1")}
    for key in ("region", "regionMap", "topic", "historyTable", "webPubSubHub", "hooksModule"):
        assert TOPO["appSettings"][key] in readme


def test_http_functions(functions: dict[str, dict]) -> None:
    # history is read by browsers after a reconnect: anonymous at the host, the function checks a history
    # token; history/server (server-side callers), emit and negotiate need a function key
    for name, route, methods, auth in (("history", "history", ["GET"], "ANONYMOUS"),
                                       ("history_server", "history/server", ["GET"], "FUNCTION"),
                                       ("emit", "emit", ["POST"], "FUNCTION"),
                                       ("negotiate", "negotiate", ["GET", "POST"], "FUNCTION")):
        trigger, out = functions[name]["bindings"]
        assert trigger == {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": methods,
                           "authLevel": auth, "route": route}
        assert out == {"direction": "OUT", "type": "http", "name": "$return"}


def test_user_functions_are_coroutines(functions: dict[str, dict]) -> None:
    import inspect

    mod = import_function_app(ENV)
    for f in mod.app.get_functions():
        assert inspect.iscoroutinefunction(f.get_user_function()), f.get_function_name()


def test_function_names_are_valid_for_the_host(functions: dict[str, dict]) -> None:
    for name in functions:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]{0,127}", name)


def test_broken_region_map_fails_loudly() -> None:
    with pytest.raises(RegionMapError, match="unknown region"):
        import_function_app({"SIO_REGION_MAP": '{"eu": {"neighbors": ["us"]}}'})


def test_single_region_without_map() -> None:
    mod = import_function_app({"SIO_REGION": "eu"})
    names = {f.get_function_name() for f in mod.app.get_functions()}
    assert {"router_eu", "persist_eu", "webpubsub_eu", "history", "history_server", "emit", "negotiate"} == names


def test_host_json() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    sb = host["extensions"]["serviceBus"]
    assert sb["autoCompleteMessages"] is True
    for key in ("prefetchCount", "maxConcurrentCalls", "maxMessageBatchSize", "maxAutoLockRenewalDuration",
                "clientRetryOptions"):
        assert key in sb


def test_local_settings_example_names_every_connection() -> None:
    doc = json.loads((ROOT / "local.settings.example.json").read_text())
    values = doc["Values"]
    rmap = json.loads(values["SIO_REGION_MAP"])
    for region in rmap:
        assert f"ServiceBusConnection_{region}" in values
    for key in ("serviceBusConnection", "tablesConnection", "webPubSubConnection", "region", "regionMap",
                "historyTokenKey", "historyTokenKeyPrevious"):
        assert TOPO["appSettings"][key] in values
    # a placeholder the Function App refuses (too short) until a real key replaces it
    from shared.appcontext import AppSettings

    problem = AppSettings.from_env(values).history_keys_problem
    assert problem and "at least 32 random characters" in problem
