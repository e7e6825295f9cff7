"""Static checks of infra/ (issue 6): fast, no network, no Azure.

What can be checked without the Bicep compiler is checked here by parsing the files:
socketio_servicebus/topology.json, every loadJsonContent path, module wiring (paths, params),
app setting names, role ids, main.parameters.json, the on-premise subscription
template, the relay Container App, azure.yaml and infra/README.md.
When `bicep` (or `az`) is on PATH, `bicep build` and `bicep lint` also run; that is the
only test that may skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TOPOLOGY_PATH = ROOT / "socketio_servicebus" / "topology.json"
MAIN = INFRA / "main.bicep"
PARAMS = INFRA / "main.parameters.json"
README = INFRA / "README.md"

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
REGION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# Service Bus subscription names: letters, digits, '.', '-', '_'; at most 50 characters.
SUBSCRIPTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def load_topology() -> dict:
    return json.loads(TOPOLOGY_PATH.read_text(encoding="utf-8"))


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def all_bicep_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in bicep_files())


def mask_bicep(text: str) -> str:
    """Return text of the same length with comments and string literals blanked.

    Positions stay aligned with the original, so the original can be sliced with indexes
    found in the masked text. String interpolations (which may hold nested strings and
    braces) are blanked with their string. Raises ValueError on an unterminated string.
    """
    n = len(text)
    out = list(text)

    def blank(start: int, end: int) -> None:
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = " "

    def skip_string(i: int) -> int:
        if text.startswith("'''", i):
            j = text.find("'''", i + 3)
            if j < 0:
                raise ValueError(f"unterminated multi-line string at {i}")
            return j + 3
        i += 1
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "'":
                return i + 1
            if text.startswith("${", i):
                i = skip_expression(i + 2)
                continue
            if c == "\n":
                raise ValueError(f"unterminated string before offset {i}")
            i += 1
        raise ValueError("unterminated string at end of file")

    def skip_expression(i: int) -> int:
        depth = 0
        while i < n:
            c = text[i]
            if c == "'":
                i = skip_string(i)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    return i + 1
                depth -= 1
            i += 1
        raise ValueError("unterminated interpolation")

    i = 0
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated block comment")
            blank(i, j + 2)
            i = j + 2
        elif text[i] == "'":
            j = skip_string(i)
            blank(i, j)
            out[i] = "'"
            out[j - 1] = "'"
            i = j
        else:
            i += 1
    return "".join(out)


def matching_close(masked: str, open_index: int) -> int:
    pairs = {"{": "}", "[": "]", "(": ")"}
    opener = masked[open_index]
    closer = pairs[opener]
    depth = 0
    for k in range(open_index, len(masked)):
        if masked[k] == opener:
            depth += 1
        elif masked[k] == closer:
            depth -= 1
            if depth == 0:
                return k
    raise ValueError(f"no closing {closer} for offset {open_index}")


PARAM_LINE = re.compile(r"^param\s+(\w+)\s+([^=\n]+?)\s*(=.*)?$", re.M)


def declared_params(path: Path) -> dict[str, bool]:
    """name -> required (no default value and not a nullable type)."""
    masked = mask_bicep(path.read_text(encoding="utf-8"))
    result = {}
    for m in PARAM_LINE.finditer(masked):
        name, type_, default = m.group(1), m.group(2).strip(), m.group(3)
        result[name] = default is None and not type_.endswith("?")
    return result


def top_level_keys(masked_block: str) -> set[str]:
    """Keys at depth 1 of a '{ ... }' block (masked text)."""
    keys = set()
    depth = 0
    line_start = True
    for idx, c in enumerate(masked_block):
        if line_start and depth == 1:
            m = re.match(r"[ \t]*(\w+)\s*:", masked_block[idx:])
            if m:
                keys.add(m.group(1))
        line_start = c == "\n"
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
    return keys


MODULE_DECL = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s*=", re.M)
NEXT_DECL = re.compile(r"^(module|resource|output|var|param|type)\s", re.M)


def module_uses(path: Path) -> list[tuple[str, Path, set[str]]]:
    """(symbol, target path, passed param names) for every module in a file."""
    text = path.read_text(encoding="utf-8")
    masked = mask_bicep(text)
    uses = []
    for m in MODULE_DECL.finditer(text):
        start = m.end()
        nxt = NEXT_DECL.search(masked, start)
        end = nxt.start() if nxt else len(masked)
        body = masked[start:end]
        p = re.search(r"\bparams\s*:\s*\{", body)
        passed: set[str] = set()
        if p:
            open_index = start + p.end() - 1
            close_index = matching_close(masked, open_index)
            passed = top_level_keys(masked[open_index : close_index + 1])
        uses.append((m.group(1), (path.parent / m.group(2)).resolve(), passed))
    return uses


def resources_of_type(text: str, type_prefix: str) -> list[str]:
    """Bodies (original text) of resource declarations whose type starts with type_prefix."""
    masked = mask_bicep(text)
    bodies = []
    for m in re.finditer(r"^\s*resource\s+\w+\s+'([^']+)'[^=\n]*=", text, re.M):
        if not m.group(1).startswith(type_prefix):
            continue
        brace = masked.find("{", m.end())
        bodies.append(text[brace : matching_close(masked, brace) + 1])
    return bodies


def parameters_file() -> dict:
    return json.loads(PARAMS.read_text(encoding="utf-8"))["parameters"]


def expected_app_setting_names(topology: dict, regions: list[str]) -> list[str]:
    """The Function App setting names infra/README.md promises to the Python side."""
    s = topology["appSettings"]
    names = []
    for prefix in (s["serviceBusConnection"],):
        names += [f"{prefix}__fullyQualifiedNamespace", f"{prefix}__credential", f"{prefix}__clientId"]
    for region in regions:
        prefix = topology["regionConnectionTemplate"].replace("{region}", region)
        names += [f"{prefix}__fullyQualifiedNamespace", f"{prefix}__credential", f"{prefix}__clientId"]
    t = s["tablesConnection"]
    names += [f"{t}__tableServiceUri", f"{t}__credential", f"{t}__clientId"]
    w = s["webPubSubConnection"]
    names += [f"{w}__serviceUri", f"{w}__endpoint", f"{w}__credential", f"{w}__clientId"]
    names += [s["region"], s["regionMap"], s["topic"], s["historyTable"], s["webPubSubHub"], s["hooksModule"]]
    names += [s["historyTokenKey"], s["historyTokenKeyPrevious"]]
    names += [
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
    ]
    return names


# --------------------------------------------------------------------------------------------
# socketio_servicebus/topology.json
# --------------------------------------------------------------------------------------------


def test_topology_is_valid_and_complete():
    t = load_topology()
    assert isinstance(t["topic"], str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", t["topic"])
    assert set(t["functionSubscriptions"]) == {"router", "persist", "webpubsub"}
    for key, sub in t["functionSubscriptions"].items():
        for field in ("name", "rule", "sql", "lockDuration", "maxDeliveryCount", "defaultMessageTimeToLive"):
            assert field in sub, f"functionSubscriptions.{key}.{field} missing"
        assert SUBSCRIPTION_NAME.match(sub["name"])
        assert ISO_DURATION.match(sub["lockDuration"]) and ISO_DURATION.match(sub["defaultMessageTimeToLive"])
        assert isinstance(sub["maxDeliveryCount"], int) and 1 <= sub["maxDeliveryCount"] <= 2000
    node = t["nodeSubscription"]
    for field in ("prefix", "rule", "sqlTemplate", "defaultMessageTimeToLive", "autoDeleteOnIdle", "lockDuration", "maxDeliveryCount"):
        assert field in node, f"nodeSubscription.{field} missing"
    assert "{node}" in node["sqlTemplate"]
    for field in ("defaultMessageTimeToLive", "autoDeleteOnIdle", "lockDuration"):
        assert ISO_DURATION.match(node[field]), field
    for key in (
        "serviceBusConnection", "region", "regionMap", "topic", "tablesConnection",
        "historyTable", "webPubSubConnection", "webPubSubHub", "hooksModule",
    ):
        assert t["appSettings"].get(key), f"appSettings.{key} missing"
    assert t["defaults"]["historyTable"] and t["defaults"]["webPubSubHub"]
    for name, role in t["roles"].items():
        assert GUID.match(role), f"roles.{name} is not a GUID"
    # keys added for infra (issue 6)
    assert t["onPremPolicy"]
    assert t["regionConnectionTemplate"] == t["appSettings"]["serviceBusConnection"] + "_{region}"
    for role in ("serviceBusDataOwner", "storageQueueDataContributor", "monitoringMetricsPublisher"):
        assert role in t["roles"]


def test_sql_filters_only_use_declared_properties():
    t = load_topology()
    declared = set(t["properties"].values())
    sqls = [s["sql"] for s in t["functionSubscriptions"].values()] + [t["nodeSubscription"]["sqlTemplate"]]
    for sql in sqls:
        unquoted = re.sub(r"'[^']*'", "''", sql)
        used = set(re.findall(r"\bsio_\w+\b", unquoted))
        assert used <= declared, f"{sql!r} uses undeclared {used - declared}"


# --------------------------------------------------------------------------------------------
# Bicep files: structure and wiring
# --------------------------------------------------------------------------------------------


def test_expected_files_exist():
    for rel in (
        "infra/main.bicep",
        "infra/main.parameters.json",
        "infra/abbreviations.json",
        "infra/README.md",
        "infra/app/relay-containerapp.bicep",
        "azure.yaml",
    ):
        assert (ROOT / rel).is_file(), rel
    json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_delimiters_balanced(path):
    masked = mask_bicep(path.read_text(encoding="utf-8"))
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for k, c in enumerate(masked):
        if c in "([{":
            stack.append((c, k))
        elif c in ")]}":
            assert stack and stack[-1][0] == pairs[c], f"unbalanced {c!r} at line {masked.count(chr(10), 0, k) + 1}"
            stack.pop()
    assert not stack, f"unclosed {stack[-1][0]!r} at line {masked.count(chr(10), 0, stack[-1][1]) + 1}"


def test_every_load_json_content_path_exists():
    found = 0
    for path in bicep_files():
        for rel in re.findall(r"loadJsonContent\('([^']+)'\)", path.read_text(encoding="utf-8")):
            found += 1
            assert (path.parent / rel).resolve().is_file(), f"{path.name}: {rel}"
    assert found
    assert "loadJsonContent('../socketio_servicebus/topology.json')" in MAIN.read_text(encoding="utf-8")


def test_modules_exist_and_get_valid_params():
    seen = 0
    for path in bicep_files():
        for symbol, target, passed in module_uses(path):
            seen += 1
            assert target.is_file(), f"{path.name}: module {symbol} -> {target}"
            declared = declared_params(target)
            unknown = passed - set(declared)
            assert not unknown, f"{path.name}: module {symbol} passes undeclared {sorted(unknown)}"
            missing = {name for name, required in declared.items() if required} - passed
            assert not missing, f"{path.name}: module {symbol} lacks required {sorted(missing)}"
    assert seen >= 8


def test_main_is_azd_style():
    text = MAIN.read_text(encoding="utf-8")
    assert re.search(r"^targetScope = 'subscription'$", text, re.M)
    for param in ("environmentName", "location", "regions"):
        assert param in declared_params(MAIN)
    assert "uniqueString(subscription().id, environmentName, location)" in text
    assert "'azd-env-name': environmentName" in text
    assert "loadJsonContent('abbreviations.json')" in text
    outputs = re.findall(r"^output\s+(\w+)\s", text, re.M)
    assert outputs
    for name in outputs:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"output {name} is not UPPER_SNAKE"
    assert "'azd-service-name': serviceName" in (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")


def test_api_versions():
    text = all_bicep_text()
    wanted = {
        "Microsoft.ServiceBus/namespaces": {"2022-10-01-preview", "2024-01-01"},
        "Microsoft.Web/sites": {"2024-04-01"},
        "Microsoft.SignalRService/webPubSub": {"2024-03-01"},
        "Microsoft.Storage/storageAccounts": {"2023-05-01"},
        "Microsoft.App/containerApps": {"2024-03-01"},
    }
    for type_, versions in wanted.items():
        used = set(re.findall(re.escape(type_) + r"(?:/[\w/]+)?@([\w-]+)'", text))
        assert used, f"{type_} not used"
        assert used <= versions, f"{type_}: {used}"


def test_role_assignments_are_named_by_scope_principal_role():
    count = 0
    for path in bicep_files():
        for body in resources_of_type(path.read_text(encoding="utf-8"), "Microsoft.Authorization/roleAssignments"):
            count += 1
            m = re.search(r"^\s*name:\s*guid\(([^\n]+)\)\s*$", body, re.M)
            assert m, f"{path.name}: role assignment not named with guid(...)"
            assert len([a for a in m.group(1).split(",") if a.strip()]) == 3, m.group(0)
            assert "subscriptionResourceId('Microsoft.Authorization/roleDefinitions'" in body
    assert count >= 6


def test_every_topology_role_is_referenced():
    text = all_bicep_text()
    for key, role in load_topology()["roles"].items():
        assert f"topology.roles.{key}" in text or role in text, f"role {key} ({role}) unused"


def test_every_app_setting_name_is_referenced():
    text = all_bicep_text()
    for key, value in load_topology()["appSettings"].items():
        assert f"appSettings.{key}" in text or f"names.{key}" in text or value in text, f"app setting {key}={value}"
    api = (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")
    for suffix in ("__fullyQualifiedNamespace", "__tableServiceUri", "__serviceUri", "__endpoint", "__credential", "__clientId"):
        assert suffix in api
    assert "topology.regionConnectionTemplate" in api


def test_flex_consumption_function_app():
    host = (INFRA / "core" / "host" / "functions-flex.bicep").read_text(encoding="utf-8")
    assert "name: 'FC1'" in host and "tier: 'FlexConsumption'" in host
    assert "kind: 'functionapp,linux'" in host
    assert "functionAppConfig" in host and "type: 'blobContainer'" in host
    assert "type: 'UserAssignedIdentity'" in host
    api = (INFRA / "app" / "api.bicep").read_text(encoding="utf-8")
    assert "runtimeName: 'python'" in api and "runtimeVersion: '3.11'" in api
    # Flex Consumption rejects these settings: runtime and version come from functionAppConfig.
    for text in (host, api, MAIN.read_text(encoding="utf-8")):
        masked = mask_bicep(text)
        keys = set(re.findall(r"^\s*'?(\w+)'?\s*:", text, re.M))
        for forbidden in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "AzureWebJobsStorage"):
            assert forbidden not in keys
        assert "listKeys" not in masked or "logAnalytics.listKeys" in masked


# --------------------------------------------------------------------------------------------
# Service Bus region module, on-premise nodes
# --------------------------------------------------------------------------------------------


def test_region_module_builds_everything_from_topology():
    text = (INFRA / "app" / "servicebus-region.bicep").read_text(encoding="utf-8")
    assert "loadJsonContent('../../socketio_servicebus/topology.json')" in text
    assert "items(topology.functionSubscriptions)" in text
    for field in ("name", "rule", "sql", "lockDuration", "maxDeliveryCount", "defaultMessageTimeToLive"):
        assert f"sub.value.{field}" in text, field
    assert "filterType: 'SqlFilter'" in text
    assert "name: topology.topic" in text
    # no literal Service Bus names: they live in topology.json only
    t = load_topology()
    literals = set(re.findall(r"'([^'$]*)'", text))
    for sub in t["functionSubscriptions"].values():
        assert sub["name"] not in literals and sub["rule"] not in literals
    assert t["topic"] not in literals


def test_on_prem_subscription_uses_node_template():
    text = (INFRA / "app" / "servicebus-region.bicep").read_text(encoding="utf-8")
    assert "replace(nodeTemplate.sqlTemplate, '{node}', node)" in text
    assert "var nodeTemplate = topology.nodeSubscription" in text
    assert "'${nodeTemplate.prefix}${node}'" in text
    assert "name: nodeTemplate.rule" in text
    (subs,) = [b for b in resources_of_type(text, "Microsoft.ServiceBus/namespaces/topics/subscriptions@") if "nodeTemplate" in b]
    assert "autoDeleteOnIdle" not in subs, "pre-provisioned node subscriptions must never auto-delete"
    (policy,) = resources_of_type(text, "Microsoft.ServiceBus/namespaces/topics/authorizationRules")
    rights = re.findall(r"'(\w+)'", policy[policy.index("rights") :])
    assert sorted(rights) == ["Listen", "Send"]
    assert "name: topology.onPremPolicy" in policy


def test_on_prem_outputs_carry_no_secret():
    text = MAIN.read_text(encoding="utf-8")
    assert "output ON_PREM_NODES" in text
    assert "az servicebus topic authorization-rule keys list" in text
    assert "authorizationRuleId" in text
    masked = mask_bicep(text)
    assert "listKeys" not in masked and "listConnectionStrings" not in masked
    assert not re.search(r"PrimaryKey|primaryKey", masked)


# --------------------------------------------------------------------------------------------
# cloud relay nodes
# --------------------------------------------------------------------------------------------


def test_relay_container_app():
    text = (INFRA / "app" / "relay-containerapp.bicep").read_text(encoding="utf-8")
    assert "param image string" in text
    assert re.search(r"stickySessions:\s*\{\s*affinity:\s*'sticky'", text)
    assert "activeRevisionsMode: 'Single'" in text
    for env in ("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "SERVICEBUS_TOPIC", "RELAY_REGION", "RELAY_NODE_ID", "AZURE_CLIENT_ID"):
        assert f"'{env}'" in text, env
    assert "'dataOwner'" in text and "'preProvisioned'" in text
    for role in ("serviceBusDataOwner", "serviceBusDataSender", "serviceBusDataReceiver"):
        assert f"topology.roles.{role}" in text
    main = MAIN.read_text(encoding="utf-8")
    assert "param relaySubscriptionAccess string = 'dataOwner'" in main
    assert "module relays 'app/relay-containerapp.bicep'" in main


# --------------------------------------------------------------------------------------------
# main.parameters.json
# --------------------------------------------------------------------------------------------


def test_parameters_match_main():
    params = parameters_file()
    declared = declared_params(MAIN)
    assert set(params) <= set(declared), f"unknown parameters: {set(params) - set(declared)}"
    required = {name for name, req in declared.items() if req}
    assert required <= set(params), f"missing required: {required - set(params)}"
    for name, entry in params.items():
        assert set(entry) == {"value"}, name


def test_parameters_example_regions():
    params = parameters_file()
    regions = params["regions"]["value"]
    names = [r["name"] for r in regions]
    assert len(names) == 2 and len(set(names)) == 2
    assert sum(len(r.get("onPremNodes", [])) for r in regions) == 1
    assert regions[1].get("onPremNodes"), "the example on-premise node lives in the second region"
    allowed_keys = set(top_level_keys_of_region_type())
    prefix = load_topology()["nodeSubscription"]["prefix"]
    nodes = []
    for r in regions:
        assert set(r) <= allowed_keys, set(r) - allowed_keys
        assert REGION_NAME.match(r["name"]), r["name"]
        for neighbor in r.get("neighbors", []):
            assert neighbor in names and neighbor != r["name"]
        for node in r.get("onPremNodes", []) + r.get("relayNodes", []):
            assert SUBSCRIPTION_NAME.match(prefix + node), node
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,28}", node), node
            nodes.append(node)
    assert len(nodes) == len(set(nodes))


def top_level_keys_of_region_type() -> set[str]:
    text = MAIN.read_text(encoding="utf-8")
    masked = mask_bicep(text)
    m = re.search(r"^type regionConfig = \{", masked, re.M)
    assert m
    open_index = m.end() - 1
    return top_level_keys(masked[open_index : matching_close(masked, open_index) + 1])


# --------------------------------------------------------------------------------------------
# azure.yaml, README
# --------------------------------------------------------------------------------------------


def test_azure_yaml():
    text = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # plain text checks are enough without PyYAML
        assert re.search(r"^services:\n  api:\n", text, re.M)
        for line in ("project: .", "language: python", "host: function"):
            assert f"    {line}\n" in text
        return
    doc = yaml.safe_load(text)
    api = doc["services"]["api"]
    assert api["project"] == "." and api["language"] == "python" and api["host"] == "function"
    assert doc.get("infra", {}).get("path", "infra") == "infra"


def test_readme_documents_settings_and_steps():
    text = README.read_text(encoding="utf-8")
    t = load_topology()
    for name in expected_app_setting_names(t, ["<region>"]):
        assert f"`{name}`" in text, f"README does not document {name}"
    assert "`ServiceBusConnection_<region>__fullyQualifiedNamespace`" in text
    for region in (r["name"] for r in parameters_file()["regions"]["value"]):
        for name in expected_app_setting_names(t, [region]):
            if region in name:
                assert f"`{name}`" in text, f"README example lacks {name}"
    for phrase in (
        "az deployment sub create -l",
        "-f infra/main.bicep -p infra/main.parameters.json",
        "func azure functionapp publish",
        "--python",
        "az servicebus topic authorization-rule keys list",
        t["onPremPolicy"],
        "Azure Service Bus Data Owner",
        "stickySessions",
    ):
        assert phrase in text, phrase
    for heading in ("add a region", "add an on-premise node", "hand to an on-premise node", "cost"):
        assert re.search(heading, text, re.I), heading


# --------------------------------------------------------------------------------------------
# the Bicep compiler, when available (the only test allowed to skip)
# --------------------------------------------------------------------------------------------


def _bicep_commands() -> list[tuple[str, list[str]]] | None:
    files = [str(p) for p in bicep_files()]
    if shutil.which("bicep"):
        return [("build", ["bicep", "build", str(MAIN), "--stdout"])] + [
            (f"lint {Path(f).name}", ["bicep", "lint", f]) for f in files
        ]
    if shutil.which("az"):
        return [("build", ["az", "bicep", "build", "--file", str(MAIN), "--stdout"])] + [
            (f"lint {Path(f).name}", ["az", "bicep", "lint", "--file", f]) for f in files
        ]
    return None


def test_bicep_build_and_lint():
    commands = _bicep_commands()
    if commands is None:
        pytest.skip("bicep CLI not available (neither `bicep` nor `az` on PATH): bicep build/lint not run")
    failures = []
    for label, cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        errors = [line for line in proc.stderr.splitlines() if re.search(r"\bError\b", line)]
        if proc.returncode != 0 or errors:
            failures.append(f"{label}: rc={proc.returncode}\n" + "\n".join(errors or [proc.stderr[-2000:]]))
    assert not failures, "\n\n".join(failures)


def test_history_token_key_is_a_secret_wired_to_the_function_app_and_the_relay_nodes() -> None:
    """The key the code reads (shared/appcontext.py, relay_node/config.py) under the names it reads,
    from secure parameters, never in an output."""
    from relay_node.config import ENV_VARS

    names = load_topology()["appSettings"]
    assert names["historyTokenKey"] == ENV_VARS["history_token_key"] == "SIO_HISTORY_TOKEN_KEY"
    assert names["historyTokenKeyPrevious"] == "SIO_HISTORY_TOKEN_KEY_PREVIOUS"
    main, api, relay, flex = (MAIN.read_text(), (INFRA / "app" / "api.bicep").read_text(),
                              (INFRA / "app" / "relay-containerapp.bicep").read_text(),
                              (INFRA / "core" / "host" / "functions-flex.bicep").read_text())
    for text, params in ((main, ("historyTokenKey", "historyTokenKeyPrevious")),
                         (api, ("historyTokenKey", "historyTokenKeyPrevious")), (relay, ("historyTokenKey",))):
        for param in params:
            assert re.search(rf"@secure\(\)(?:(?!\nparam ).)*\nparam {param} string", text, re.S), param
    assert re.search(r"@minLength\(32\)(?:(?!\nparam ).)*\nparam historyTokenKey string", main, re.S)
    assert "historyTokenKey: historyTokenKey" in main and main.count("historyTokenKey: historyTokenKey") == 2
    assert "historyTokenKeyPrevious: historyTokenKeyPrevious" in main
    # Function App: app settings under the names the code reads
    assert "'${names.historyTokenKey}': historyTokenKey" in api
    assert "'${names.historyTokenKeyPrevious}': historyTokenKeyPrevious" in api
    assert "historySettings)" in api and re.search(r"@secure\(\)\nparam appSettings object", flex)
    # relay nodes: a Container Apps secret referenced by the env var, and the history URL
    assert re.search(r"name: 'SIO_HISTORY_TOKEN_KEY'\n\s*secretRef: 'history-token-key'", relay)
    assert re.search(r"name: 'history-token-key'\n\s*value: historyTokenKey", relay)
    assert "historyUrl: '${api.outputs.uri}/api/history'" in main and "name: 'RELAY_HISTORY_URL'" in relay
    # no output carries it
    for text in (main, api, relay, flex):
        for line in text.splitlines():
            if line.startswith("output "):
                assert "historyTokenKey" not in line and "appSettings" not in line.split("=", 1)[1], line
    assert parameters_file()["historyTokenKey"] == {"value": "${SIO_HISTORY_TOKEN_KEY}"}  # azd fills it from the env


def test_relay_container_env_vars_are_ones_the_relay_node_reads() -> None:
    """A Container Apps env var the relay node does not read is a silent day-one misconfiguration."""
    from relay_node.config import ENV_VARS

    text = (INFRA / "app" / "relay-containerapp.bicep").read_text()
    names = set(re.findall(r"name: '([A-Z][A-Z0-9_]+)'", text))
    known = set(ENV_VARS.values()) | {"AZURE_CLIENT_ID"}  # read by azure-identity's DefaultAzureCredential
    assert names, "no env vars found in relay-containerapp.bicep"
    assert names <= known, f"not read by relay_node: {sorted(names - known)}"
    for needed in ("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "RELAY_HOST", "RELAY_PORT", "RELAY_SUBSCRIPTION"):
        assert needed in names


# --------------------------------------------------------------------------------------------
# client auth of the cloud relay nodes: required unless allowAnonymousClients=true
# --------------------------------------------------------------------------------------------


def _bicep_vars(text: str) -> dict[str, str]:
    """``var name = <expression>`` (multi-line until the next top-level declaration) -> expression."""
    out = {}
    for m in re.finditer(r"^var (\w+) = (.*?)(?=^\S)", text + "\n~", re.M | re.S):
        out[m.group(1)] = re.sub(r"\s*//.*$", "", m.group(2), flags=re.M).strip()
    return out


def test_relay_refuses_to_deploy_without_client_auth_unless_anonymous_is_allowed() -> None:
    from tests.infra.bicep_expr import BicepFail, evaluate

    relay = (INFRA / "app" / "relay-containerapp.bicep").read_text(encoding="utf-8")
    found = _bicep_vars(relay)

    def mode(**given: object) -> object:
        params: dict[str, object] = {"authJwtKey": "", "authJwtPublicKey": "", "authJwtIssuer": "",
                                     "authJwtAudience": "", "allowAnonymousClients": False, **given}
        scope = dict(params)
        for name in ("jwtKeyGiven", "jwtPublicKeyGiven"):
            scope[name] = evaluate(found[name], scope)
        return evaluate(found["clientAuthMode"], scope)

    with pytest.raises(BicepFail, match="Client auth is required.*allowAnonymousClients=true"):
        mode()  # the defaults: no auth, not anonymous -> the deployment stops
    assert mode(allowAnonymousClients=True) == "anonymous"
    with pytest.raises(BicepFail, match="at least 32 characters"):
        mode(authJwtKey="k" * 31, authJwtIssuer="https://idp", authJwtAudience="chat")
    with pytest.raises(BicepFail, match="authJwtIssuer and authJwtAudience"):
        mode(authJwtPublicKey="-----BEGIN PUBLIC KEY-----")
    assert mode(authJwtKey="k" * 32, authJwtIssuer="https://idp", authJwtAudience="chat") == "jwt"
    assert mode(authJwtPublicKey="-----BEGIN PUBLIC KEY-----", authJwtIssuer="i", authJwtAudience="a") == "jwt"

    # the check runs at validation because the Container App uses its result, and the settings reach
    # the node under the names it reads (the key as a Container Apps secret)
    assert "'sio-client-auth': clientAuthMode" in relay
    assert re.search(r"@secure\(\)\n@description\([^\n]*\)\nparam authJwtKey string = ''", relay)
    assert "name: 'RELAY_AUTH_JWT_KEY', secretRef: 'auth-jwt-key'" in relay
    assert "{ name: 'auth-jwt-key', value: authJwtKey }" in relay
    from relay_node.config import ENV_VARS
    for env in ("RELAY_AUTH_JWT_KEY", "RELAY_AUTH_JWT_PUBLIC_KEY", "RELAY_AUTH_JWT_ISSUER", "RELAY_AUTH_JWT_AUDIENCE"):
        assert f"'{env}'" in relay and env in ENV_VARS.values(), env
    # /metrics and /readyz only on the ops port, which the ingress does not forward; readiness probes it
    assert "name: 'RELAY_OPS_PORT'" in relay and "RELAY_OPS_PORT" in ENV_VARS.values()
    assert re.search(r"type: 'Readiness'\s*httpGet: \{\s*path: '/readyz'\s*port: opsPort", relay)
    assert re.search(r"ingress: \{[^}]*targetPort: targetPort", relay)
    described = re.search(r"@description\('''(.*?)'''\)\nparam allowAnonymousClients bool = false", relay, re.S)
    assert described and "anyone on the internet" in described.group(1)

    # main.bicep hands every setting to each relay module; the defaults keep auth required
    main = MAIN.read_text(encoding="utf-8")
    for module_param, main_param in (("authJwtKey", "relayAuthJwtKey"), ("authJwtPublicKey", "relayAuthJwtPublicKey"),
                                     ("authJwtIssuer", "relayAuthJwtIssuer"), ("authJwtAudience", "relayAuthJwtAudience"),
                                     ("allowAnonymousClients", "relayAllowAnonymousClients")):
        assert f"{module_param}: {main_param}\n" in main, module_param
    assert "param relayAllowAnonymousClients bool = false" in main
    assert re.search(r"@secure\(\)\n@description\([^\n]*\)\nparam relayAuthJwtKey string = ''", main)
