"""The way users get it: the wheel and sdist built from this checkout, installed into a fresh venv
outside the repository, and run from empty directories through the venv's own console scripts.

- ``python -m build`` + ``twine check --strict``; what the wheel holds and declares;
- the bare wheel: the library imports, ``relay-node`` / ``servicebus-emulator`` stop with one line
  naming their extra, no qpid-proton;
- ``[relay,emulator]``: ``servicebus-emulator`` and two ``relay-node`` processes serve the page
  and carry a chat from one node to the other;
- README's "Use the manager in your own python-socketio app" snippet, run as ``app.py`` in a
  folder with a ``shared/`` package of its own, then served by ``uvicorn app:app`` and talking to
  the relay nodes both ways.
"""

from __future__ import annotations

import asyncio
import json
import re
import runpy
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import aiohttp
import pytest

from tests.functions.conftest import free_port, wait_port
from tests.relay_node.support import RelayProcess, _Lines
from tests.relay_node.test_process import collector, sio_client
from tests.support.emulator_process import EmulatorProcess

from .support import ROOT, Venv, inside

pytestmark = pytest.mark.slow

VERSION: str = runpy.run_path(str(ROOT / "socketio_servicebus" / "_version.py"))["__version__"]
PACKAGES = {"socketio_servicebus", "relay_node", "servicebus_emulator"}
NOT_SHIPPED = ("shared", "local_stack", "function_runner", "tests", "bench")
PACKAGE_DATA = (
    "socketio_servicebus/topology.json",
    "socketio_servicebus/py.typed",
    "relay_node/static/index.html",
    "relay_node/static/app.js",
    "relay_node/static/vendor/socket.io.min.js",
    "relay_node/static/vendor/socket.io-client.LICENSE",
)
WAIT = 20.0
APP_SHARED = "app's own shared"


class Dists:
    def __init__(self, folder: Path) -> None:
        (self.wheel,) = folder.glob("*.whl")
        (self.sdist,) = folder.glob("*.tar.gz")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), "."], cwd=ROOT,
                       capture_output=True, text=True, timeout=800)
    assert r.returncode == 0, f"python -m build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return Dists(out)


@pytest.mark.timeout(900)
def test_twine_check_strict(dists: Dists) -> None:
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists.wheel),
                        str(dists.sdist)], cwd=dists.wheel.parent, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASSED") == 2, r.stdout


@pytest.mark.timeout(900)
def test_wheel_contents_and_metadata(dists: Dists) -> None:
    assert dists.wheel.name == f"socketio_servicebus-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(dists.wheel) as whl:
        names = whl.namelist()
        dist_info = f"socketio_servicebus-{VERSION}.dist-info"
        assert {n.split("/")[0] for n in names} == PACKAGES | {dist_info}
        for folder in NOT_SHIPPED:
            assert not [n for n in names if n.startswith(f"{folder}/")], folder
        assert "function_app.py" not in names and "host.json" not in names
        for path in PACKAGE_DATA:
            assert path in names, f"{path} is missing from the wheel"
            assert whl.read(path) == (ROOT / path).read_bytes(), path
        # every module of the three packages (not just the ones someone remembered to list)
        for package in PACKAGES:
            for src in (ROOT / package).rglob("*.py"):
                assert src.relative_to(ROOT).as_posix() in names, f"{src} is missing from the wheel"
        assert b"MIT" in whl.read("relay_node/static/vendor/socket.io-client.LICENSE")

        meta = Parser().parsestr(whl.read(f"{dist_info}/METADATA").decode())
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    assert meta["Name"] == "socketio-servicebus" and meta["Version"] == VERSION
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if "qpid" in r.lower()], core
    assert {re.split(r"[<>=!~\[; ]", r)[0].lower() for r in core} >= {"azure-servicebus", "python-socketio"}
    assert set(meta.get_all("Provides-Extra")) >= {"relay", "emulator", "functions"}
    assert any(r.startswith("python-qpid-proton") and 'extra == "emulator"' in r for r in requires), requires
    assert any(r.startswith("uvicorn") and 'extra == "relay"' in r for r in requires), requires
    assert "relay-node = relay_node.__main__:main" in entry_points
    assert "servicebus-emulator = servicebus_emulator.__main__:main" in entry_points


@pytest.mark.timeout(900)
def test_sdist_contents(dists: Dists) -> None:
    top = f"socketio_servicebus-{VERSION}"
    with tarfile.open(dists.sdist) as sdist:
        names = set(sdist.getnames())
    for path in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO", *PACKAGE_DATA):
        assert f"{top}/{path}" in names, f"{path} is missing from the sdist"
    tops = {n.split("/")[1] for n in names if n.count("/") >= 2}
    assert not tops & {"shared", "local_stack", "function_runner", "tests", "bench", "infra", ".run"}, sorted(tops)


# ------------------------------------------------------------------------------------- the venv


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, dists: Dists) -> Venv:
    """A fresh venv with the bare wheel (no extras); :func:`full_venv` adds ``[relay,emulator]``."""
    v = Venv.create(tmp_path_factory.mktemp("venv") / "env")
    v.pip_install(dists.wheel, cwd=tmp_path_factory.mktemp("pip"))
    return v


@pytest.fixture(scope="module")
def full_venv(tmp_path_factory: pytest.TempPathFactory, venv: Venv, dists: Dists) -> Venv:
    venv.pip_install(f"{dists.wheel}[relay,emulator]", cwd=tmp_path_factory.mktemp("pip"))
    venv.extras += ["relay", "emulator"]
    return venv


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _bare(venv: Venv) -> None:
    if venv.extras:
        pytest.fail("the extras were installed before this test ran (run the module in file order)")


PROBE = """
import importlib.metadata, importlib.util, json, sys
import socketio_servicebus
from socketio_servicebus import ServiceBusManager
try:
    importlib.metadata.distribution("python-qpid-proton")
    qpid = True
except importlib.metadata.PackageNotFoundError:
    qpid = False
print(json.dumps({"file": socketio_servicebus.__file__, "version": socketio_servicebus.__version__,
                  "manager": ServiceBusManager.__module__ + "." + ServiceBusManager.__qualname__,
                  "path": sys.path, "qpid": qpid, "shared": importlib.util.find_spec("shared") is not None}))
"""


@pytest.mark.timeout(900)
def test_bare_wheel_is_the_library_alone(venv: Venv, empty: Path) -> None:
    _bare(venv)
    r = venv.run([venv.python, "-c", PROBE], cwd=empty)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert inside(got["file"], venv.site_packages()), got["file"]
    assert got["version"] == VERSION
    assert got["manager"] == "socketio_servicebus.manager.client_manager.ServiceBusManager"
    assert not [p for p in got["path"] if p and inside(p, ROOT)], got["path"]
    assert got["qpid"] is False and got["shared"] is False
    r = venv.run([venv.python, "-c", "import proton"], cwd=empty)
    assert r.returncode != 0 and "No module named 'proton'" in r.stderr, r.stderr


@pytest.mark.timeout(900)
@pytest.mark.parametrize("script, extra", [("relay-node", "relay"), ("servicebus-emulator", "emulator")])
def test_console_script_without_its_extra_names_it(venv: Venv, empty: Path, script: str, extra: str) -> None:
    _bare(venv)
    r = venv.run([venv.bin / script, "--help"], cwd=empty)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith(f"{script}: error: ") and f"install the '{extra}' extra" in lines[0], lines
    assert f"pip install 'socketio-servicebus[{extra}]'" in lines[0], lines


# ------------------------------------------------------------ emulator + two relay nodes, installed


class InstalledRelay(RelayProcess):
    """``relay-node`` from the venv's bin, started in an empty directory."""

    def __init__(self, script: Path, cwd: Path, *args: str, env: dict[str, str]) -> None:
        super().__init__(*args, env=env)
        self.script = script
        self.cwd = cwd

    def spawn(self) -> None:
        self.proc = subprocess.Popen([str(self.script), "--port", "0", *self.args], cwd=self.cwd, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = _Lines(self.proc.stdout), _Lines(self.proc.stderr)


def wait_ready(node: RelayProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    status: object = None
    while time.monotonic() < deadline:
        assert node.proc is not None and node.proc.poll() is None, f"relay node exited:\n{node.stderr()}"
        try:
            with urllib.request.urlopen(f"{node.url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status = exc
        time.sleep(0.2)
    raise AssertionError(f"{node.url}/readyz never answered 200 (last: {status}):\n{node.stderr()}")


class Stack:
    def __init__(self, venv: Venv, emulator: EmulatorProcess, nodes: list[InstalledRelay]) -> None:
        self.venv = venv
        self.emulator = emulator
        self.nodes = nodes

    @property
    def conn(self) -> str:
        return self.emulator.connection_string()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, full_venv: Venv) -> Iterator[Stack]:
    """``servicebus-emulator`` (default config) and two ``relay-node`` processes, all from the venv's
    bin, each with an empty working directory and an environment that cannot see the repo."""
    emulator = EmulatorProcess(command=[str(full_venv.bin / "servicebus-emulator")],
                               cwd=tmp_path_factory.mktemp("emulator-cwd"), env=full_venv.env())
    nodes: list[InstalledRelay] = []
    try:
        emulator.start(timeout=60)
        env = full_venv.env(SERVICEBUS_CONNECTION_STRING=emulator.connection_string())
        for i in (1, 2):
            node = InstalledRelay(full_venv.bin / "relay-node", tmp_path_factory.mktemp(f"relay{i}-cwd"),
                                  "--node-id", f"pkg{i}", "--region", "local", env=env)
            nodes.append(node)
            node.spawn()
        for node in nodes:
            node.wait_started(60)
            wait_ready(node)
        yield Stack(full_venv, emulator, nodes)
    finally:
        for node in nodes:
            node.stop()
        emulator.stop()


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.read()


@pytest.mark.timeout(900)
async def test_installed_relay_nodes_serve_the_page_and_chat(stack: Stack) -> None:
    static = stack.venv.site_packages() / "relay_node" / "static"
    for node in stack.nodes:
        for path, file in (("/", "index.html"), ("/app.js", "app.js"),
                           ("/socket.io.min.js", "vendor/socket.io.min.js")):
            status, body = await fetch(node.url + path)
            assert status == 200, (node.url, path, status)
            assert body == (static / file).read_bytes(), (node.url, path)  # the installed package data
        assert b"Socket.IO v4" in (await fetch(node.url + "/socket.io.min.js"))[1]
        assert b'src="/socket.io.min.js"' in (await fetch(node.url + "/"))[1]
        # a node on its own (no --dashboard-url) links to no dashboard: the page keeps the link hidden
        assert json.loads((await fetch(node.url + "/config.json"))[1])["dashboardUrl"] is None

    n1, n2 = stack.nodes
    c1, c2 = await sio_client(n1.url), await sio_client(n2.url)
    try:
        got2 = collector(c2)
        assert (await c1.call("join", "pkglobby"))["node"] == "pkg1"
        assert (await c2.call("join", "pkglobby"))["node"] == "pkg2"
        ack = await c1.call("chat", {"room": "pkglobby", "text": "hello from the installed pkg1"})
        assert ack["ok"] is True
        msg = await asyncio.wait_for(got2.get(), WAIT)
        assert (msg["text"], msg["room"], msg["node"], msg["id"]) == (
            "hello from the installed pkg1", "pkglobby", "pkg1", ack["id"])
    finally:
        await c1.disconnect()
        await c2.disconnect()


# ------------------------------------------------------------------ README's snippet as a user's app


def readme_snippet() -> str:
    """The first ```python block under README.md's heading that contains "Use the manager"."""
    section = False
    fence: list[str] | None = None  # lines of the fenced block being read
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines(keepends=True):
        if fence is not None:  # inside a fenced block ("# ..." lines there are comments, not headings)
            if line.startswith("```"):
                if fence and fence[0].startswith("```python") and section:
                    return "".join(fence[1:])
                fence = None
            else:
                fence.append(line)
        elif line.startswith("```"):
            fence = [line]
        elif re.match(r"#+ ", line):
            if section:
                break
            section = "Use the manager" in line
    raise AssertionError('README.md has no ```python block under a heading containing "Use the manager"')


#: the second file: handlers the test drives (the README snippet itself stays as written)
HOOKS = '''
def install(sio):
    mgr = sio.manager

    @sio.on("join")
    async def join(sid, room):
        assert await mgr.wait_ready(30), mgr.health()
        await sio.enter_room(sid, "chat:" + room)
        return {"ok": True, "node": mgr.node_id}

    @sio.on("shout")
    async def shout(sid, data):
        await sio.emit("chat", {"room": data["room"], "text": data["text"], "node": mgr.node_id},
                       room="chat:" + data["room"])
        return {"ok": True}
'''


def write_app(folder: Path, conn: str) -> None:
    snippet = readme_snippet()
    literals = re.findall(r'"Endpoint=sb://[^"]*"', snippet)
    assert len(literals) == 1, f"expected one connection-string literal in the README snippet, got {literals}"
    (folder / "shared").mkdir(parents=True)
    (folder / "shared" / "__init__.py").write_text(f"VALUE = {APP_SHARED!r}\n")
    (folder / "hooks.py").write_text(HOOKS)
    (folder / "app.py").write_text(
        snippet.replace(literals[0], json.dumps(conn))
        + "\n# ---- appended by tests/packaging/test_wheel.py ----\n"
        + "import shared\n"
        + f"assert shared.VALUE == {APP_SHARED!r}, shared.__file__\n"
        + "import socketio_servicebus\n"
        + 'print("LIBRARY", socketio_servicebus.__file__, flush=True)\n'
        + 'print("SHARED", shared.__file__, flush=True)\n'
        + "import hooks\n"
        + "hooks.install(sio)\n"
    )


class Uvicorn:
    """``uvicorn app:app`` from the venv's bin, in the app folder."""

    def __init__(self, venv: Venv, app_dir: Path) -> None:
        self.args = [str(venv.bin / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(free_port())]
        self.port = int(self.args[-1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.app_dir = app_dir
        self.env = venv.env()
        self.proc: subprocess.Popen[str] | None = None
        self.lines: _Lines | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=self.app_dir, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = _Lines(self.proc.stdout)
        wait_port(self.port, 60, self.proc)

    def output(self) -> str:
        return self.lines.text() if self.lines else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.mark.timeout(900)
async def test_readme_snippet_as_an_app_with_its_own_shared(stack: Stack, tmp_path: Path) -> None:
    app_dir = tmp_path / "myapp"
    write_app(app_dir, stack.conn)
    venv = stack.venv

    r = await asyncio.to_thread(venv.run, [venv.python, "app.py"], cwd=app_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.startswith(("LIBRARY ", "SHARED ")))
    assert inside(printed["LIBRARY"], venv.site_packages()), printed
    assert inside(printed["SHARED"], app_dir), printed

    server = Uvicorn(venv, app_dir)
    clients = []
    try:
        await asyncio.to_thread(server.start)
        app_client = await sio_client(server.url)
        clients.append(app_client)
        relay_clients = [await sio_client(n.url) for n in stack.nodes]
        clients += relay_clients
        app_got = collector(app_client)
        relay_got = [collector(c) for c in relay_clients]
        assert (await app_client.call("join", "readme", timeout=40)) == {"ok": True, "node": "web-1"}
        for c in relay_clients:
            assert (await c.call("join", "readme"))["ok"] is True

        # an emit of the app server reaches the clients of both relay nodes ...
        assert (await app_client.call("shout", {"room": "readme", "text": "from the README app"}))["ok"]
        for got in relay_got:
            msg = await asyncio.wait_for(got.get(), WAIT)
            assert (msg["text"], msg["node"]) == ("from the README app", "web-1")
        assert (await asyncio.wait_for(app_got.get(), WAIT))["text"] == "from the README app"  # local too

        # ... and a chat on a relay node reaches the app server's client
        ack = await relay_clients[1].call("chat", {"room": "readme", "text": "hello README app"})
        msg = await asyncio.wait_for(app_got.get(), WAIT)
        assert (msg["text"], msg["node"], msg["id"]) == ("hello README app", "pkg2", ack["id"])
    except BaseException:
        print("uvicorn output:\n" + server.output())
        raise
    finally:
        for c in clients:
            await c.disconnect()
        await asyncio.to_thread(server.stop)
