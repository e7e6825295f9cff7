"""What ``func azure functionapp publish`` would upload: the repository root filtered by
``.funcignore`` (gitignore syntax, as Core Tools reads it), installed with ``requirements.txt``
alone into a fresh venv outside the repository, indexed, and running one real route.

- the package holds the Function App and the library as source, and none of the dev tools;
- every file it holds is one git would keep too (local junk such as caches must be funcignored);
- ``function_app`` imports from the package with only ``requirements.txt`` installed and indexes
  as many functions as the repo's own indexing test expects;
- the local runner, run by that venv's python from the package directory, forwards a batch sent to
  region A's topic into region B's topic, where a node subscription of region B receives it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pathspec
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode

from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.topology import load_topology
from socketio_servicebus.wire.envelope import Batch
from tests.functions.conftest import FUNCTION_KEY, Runner, import_function_app
from tests.functions.helpers import emit_envelope
from tests.support.emulator_process import EmulatorProcess
from tests.support.stack_config import region_settings, stack_config

from .support import ROOT, Venv, inside

pytestmark = pytest.mark.slow

TOPO = load_topology()
PACKAGE = {"function_app.py", "host.json", "requirements.txt", "shared", "socketio_servicebus"}
NOT_PACKAGED = ("relay_node", "servicebus_emulator", "tests", "local_stack", "function_runner", "infra", "bench",
                "node_modules")
REGIONS = ["eu", "us"]
#: a node of region B, as a relay node there would have it (rule from topology.json)
NODE = "pkgnode"
NODE_SUB = TOPO["nodeSubscription"]["prefix"] + NODE


def funcignore() -> pathspec.PathSpec:
    # GitIgnoreSpec: pathspec's gitignore semantics ("gitwildmatch" is deprecated in pathspec 1.x)
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text(encoding="utf-8").splitlines())


def publish_files(root: Path, spec: pathspec.PathSpec) -> list[str]:
    """Every file under ``root`` that ``.funcignore`` does not deny, as Core Tools walks the folder
    (the file system, not git: whatever lies in the checkout is uploaded unless funcignored)."""
    kept = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not spec.match_file(f"{(rel / d).as_posix()}/"))
        kept += [(rel / f).as_posix() for f in sorted(files) if not spec.match_file((rel / f).as_posix())]
    return kept


def git_files(root: Path) -> set[str]:
    """Tracked files plus untracked ones that .gitignore does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return {f for f in out.split("\0") if f}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pkg = tmp_path_factory.mktemp("funcpkg") / "app"
    for rel in publish_files(ROOT, funcignore()):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, pkg / rel)
    return pkg


@pytest.mark.timeout(900)
def test_package_is_the_function_app_and_the_library(package: Path) -> None:
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert {f.split("/")[0] for f in files} == PACKAGE
    for folder in NOT_PACKAGED:
        assert not (package / folder).exists(), folder
    for path in ("function_app.py", "host.json", "requirements.txt", "shared/__init__.py",
                 "shared/routing/router.py", "socketio_servicebus/__init__.py", "socketio_servicebus/topology.json",
                 "socketio_servicebus/_version.py", "socketio_servicebus/wire/envelope.py"):
        assert path in files, f"{path} is missing from the package"
    for package_dir in ("shared", "socketio_servicebus"):  # the whole source trees, not a part
        for src in (ROOT / package_dir).rglob("*.py"):
            assert src.relative_to(ROOT).as_posix() in files, f"{src} is missing from the package"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # nothing that git ignores (caches, local settings, build output) would be uploaded
    stray = sorted(files - git_files(ROOT))
    assert not stray, f"func would upload files that git ignores; add them to .funcignore: {stray[:20]}"


# ----------------------------------------------------------------------- requirements.txt alone


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, package: Path) -> Venv:
    v = Venv.create(tmp_path_factory.mktemp("funcvenv") / "env")
    v.pip_install("-r", package / "requirements.txt", cwd=tmp_path_factory.mktemp("pip"))
    return v


INDEX = """
import json, os, sys
os.environ["SIO_REGION"] = "eu"
os.environ["SIO_REGION_MAP"] = json.dumps({"eu": {}, "us": {}})
import function_app, shared, socketio_servicebus
print(json.dumps({"functions": sorted(f.get_function_name() for f in function_app.app.get_functions()),
                  "library": socketio_servicebus.__file__, "shared": shared.__file__,
                  "function_app": function_app.__file__}))
"""


def expected_functions(regions: list[str]) -> set[str]:
    """As tests/functions/test_indexing.py counts them: one trigger per function subscription per
    region, plus the HTTP functions."""
    return {f"{kind}_{r}" for r in regions for kind in TOPO["functionSubscriptions"]} | {"history", "history_server", "emit", "negotiate"}


@pytest.mark.timeout(900)
def test_requirements_alone_index_the_app_from_the_package(venv: Venv, package: Path, tmp_path: Path) -> None:
    # the library is not installed in this venv: the package's copy is the only one
    r = venv.run([venv.python, "-c", "import socketio_servicebus"], cwd=tmp_path)
    assert r.returncode != 0 and "No module named 'socketio_servicebus'" in r.stderr, r.stderr

    r = venv.run([venv.python, "-c", INDEX], cwd=package)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("library", "shared", "function_app"):
        assert inside(got[key], package), got
    expected = expected_functions(REGIONS)
    assert set(got["functions"]) == expected and len(got["functions"]) == len(expected) == 10, got["functions"]
    # and the same app, imported here from the checkout with the same settings, agrees
    dev = import_function_app({"SIO_REGION": "eu", "SIO_REGION_MAP": json.dumps({"eu": {}, "us": {}})})
    assert sorted(f.get_function_name() for f in dev.app.get_functions()) == got["functions"]


# --------------------------------------------------------------------- one route, through the runner


class PackageRunner(Runner):
    """``python -m function_runner`` run by the package venv's python, cwd = the package, with only
    a copy of ``function_runner/`` on PYTHONPATH (``shared`` and the library come from the package)."""

    def __init__(self, venv: Venv, package: Path, tools: Path, env: dict[str, str], *, only: str) -> None:
        super().__init__(env, only=only)
        self.venv = venv
        self.package = package
        self.tools = tools

    def start(self, timeout: float = 60.0) -> None:
        args = [str(self.venv.python), "-m", "function_runner", "--root", str(self.package),
                "--settings", "no-such-local.settings.json", "--port", "0", "--only", self.only]
        env = self.venv.env(PYTHONPATH=str(self.tools), FUNCTIONS_LOCAL_KEY=FUNCTION_KEY, **self.env)
        self.proc = subprocess.Popen(args, cwd=self.package, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("function runner exited early:\n" + "".join(self.output))
            self.output.append(line)
            if "function-runner: ready" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("function runner did not start:\n" + "".join(self.output))


def node_subscription() -> dict[str, object]:
    node = TOPO["nodeSubscription"]
    return {
        "Name": NODE_SUB,
        "Properties": {"LockDuration": node["lockDuration"], "MaxDeliveryCount": node["maxDeliveryCount"]},
        "Rules": [{"Name": node["rule"], "Properties": {
            "FilterType": "Sql", "SqlFilter": {"SqlExpression": node["sqlTemplate"].format(node=NODE)}}}],
    }


class Routed:
    def __init__(self, emulator: EmulatorProcess, runner: PackageRunner) -> None:
        self.emulator = emulator
        self.runner = runner


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, venv: Venv, package: Path) -> Iterator[Routed]:
    """The emulator (dev venv) with one namespace per region, the function subscriptions of
    topology.json and region B's node subscription; the runner running the routers from the package."""
    cfg = tmp_path_factory.mktemp("funcstack") / "Config.json"
    cfg.write_text(json.dumps(stack_config(REGIONS, extra_subscriptions={NODE_SUB: node_subscription()})))
    tools = tmp_path_factory.mktemp("tools")
    shutil.copytree(ROOT / "function_runner", tools / "function_runner",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    emulator = EmulatorProcess(cfg)
    runner: PackageRunner | None = None
    try:
        emulator.start(timeout=60)
        env = region_settings({r: emulator.connection_string(r) for r in REGIONS}, home="eu")
        runner = PackageRunner(venv, package, tools, env, only=",".join(f"router_{r}" for r in REGIONS))
        runner.start()
        yield Routed(emulator, runner)
    finally:
        if runner is not None:
            runner.stop()
        emulator.stop()


@pytest.mark.timeout(900)
async def test_runner_from_the_package_forwards_a_batch_to_the_other_region(routed: Routed, package: Path) -> None:
    runner = routed.runner
    text = "".join(runner.output)
    for region in REGIONS:
        assert f"router_{region}: serviceBusTrigger socketio/router via ServiceBusConnection_{region}" in text, text
    assert "persist_" not in text and "webpubsub_" not in text  # --only

    env = emit_envelope("eu", node="pkg-origin", room="pkgroom", data="through the package")
    mid = f"pkg-{uuid.uuid4().hex[:8]}"
    batch = Batch((env,), 0, ("eu",))
    topic = TOPO["topic"]
    async with servicebus_client(connection_string=routed.emulator.connection_string("eu")) as client, \
            client.get_topic_sender(topic) as sender:
        await sender.send_messages(ServiceBusMessage(batch.encode(), message_id=mid,
                                                     application_properties=batch.application_properties()))

    got = []
    async with servicebus_client(connection_string=routed.emulator.connection_string("us")) as client, \
            client.get_subscription_receiver(topic, NODE_SUB,
                                             receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as rx:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = [m for m in await rx.receive_messages(max_message_count=10, max_wait_time=1)]
    assert got, "nothing arrived in region us; runner output:\n" + "".join(runner.output[-40:])
    forwarded = Batch.decode(b"".join(got[0].body))
    assert [e.id for e in forwarded.envelopes] == [env.id]
    assert forwarded.envelopes[0].body["data"] == ["through the package"]
    assert forwarded.visited == ("eu", "us") and forwarded.hops == 1
    assert runner.proc is not None and runner.proc.poll() is None
    assert not [line for line in runner.output if re.search(r"Traceback|ModuleNotFoundError", line)], runner.output
