"""The import layers of docs/architecture.md ("Layers"), checked on the code as it stands.

Every ``.py`` file of the project's own packages is parsed with :mod:`ast` (nothing is imported
or run). Each ``import``/``from ... import`` anywhere in a file (at the top, inside a function,
under ``if TYPE_CHECKING``) is an edge from that module to the project module it names. The
test fails on any cycle between modules and on any edge that :data:`RULES` forbids, and prints
the offending edges with the file and line that make them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: the project's own code: packages (folders) and single modules at the top of the checkout
PACKAGES = ("socketio_servicebus", "relay_node", "servicebus_emulator", "shared", "function_runner", "local_stack")
SINGLE_MODULES = ("function_app",)

LIB = "socketio_servicebus"
EMULATOR_ENGINE = tuple(
    f"servicebus_emulator.{name}"
    for name in ("errors", "config", "entity_fields", "store", "sessions", "entities", "filters", "sqlfilter",
                 "sql_*", "codec", "sas", "meter")
)
EMULATOR_IO = tuple(
    f"servicebus_emulator.{name}"
    for name in ("amqp", "amqp_frames", "amqp_management", "websocket", "admin_http", "admin_xml", "persistence",
                 "server", "cli")
)

PRIVATE = f"{LIB}*._*"  # a module of the library whose name starts with "_"

#: (importers, forbidden imports, why). Each name stands for that module and everything under
#: it, and may be a glob (``*`` spans dots). The rows mirror the "Layers" table in
#: docs/architecture.md; each ``why`` is written there word for word.
RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    # the ground floor: the library stands on nothing of the project
    ((LIB,), ("relay_node", "servicebus_emulator", "shared", "function_runner", "local_stack", "function_app"),
     "the library imports no part that stands on it"),
    # inside the library: bottom (errors, metrics, topology, extras), wire/, servicebus/, manager/
    ((f"{LIB}.errors", f"{LIB}.metrics", f"{LIB}.topology", f"{LIB}.extras", f"{LIB}._version", f"{LIB}.sizing"),
     (f"{LIB}.wire", f"{LIB}.servicebus", f"{LIB}.manager", f"{LIB}.history_token"),
     "errors, metrics, topology and extras are the library's bottom layer"),
    ((f"{LIB}.wire",), (f"{LIB}.servicebus", f"{LIB}.manager", f"{LIB}.history_token"),
     "wire/ is pure and stands on the bottom layer alone"),
    ((f"{LIB}.servicebus",), (f"{LIB}.manager", f"{LIB}.history_token"), "servicebus/ is below manager/"),
    ((f"{LIB}.manager",), (f"{LIB}.history_token",),
     "manager/ stands on servicebus/, wire/ and the bottom layer"),
    ((f"{LIB}.zones",), (f"{LIB}.servicebus", f"{LIB}.manager", f"{LIB}.history_token"),
     "zones/ (trust zones) is pure: it stands on wire/ and the bottom layer"),
    ((f"{LIB}.wire", f"{LIB}.servicebus"), (f"{LIB}.zones",),
     "the transport signs through a hook the manager sets: wire/ and servicebus/ know no zones"),
    # the runnable parts stand on the library's public modules, and not on one another
    (("relay_node",), ("servicebus_emulator", "shared", "function_runner", "local_stack", "function_app"),
     "the relay node stands on the library alone"),
    (("servicebus_emulator",), ("relay_node", "shared", "function_runner", "local_stack", "function_app"),
     "the emulator stands on the library alone"),
    (("relay_node", "servicebus_emulator", "shared", "function_app", "function_runner", "local_stack"),
     (PRIVATE,), "no module outside the library imports a private module of it"),
    (("shared", "function_app"), ("relay_node", "servicebus_emulator", "function_runner", "local_stack"),
     "the Function App holds the library and shared/ only"),
    (("function_runner",), ("relay_node", "servicebus_emulator", "local_stack"),
     "the local Functions host runs the Function App and nothing else of the tree"),
    # inside the emulator: the engine does no I/O; the adapters do not know the wiring
    (EMULATOR_ENGINE + ("servicebus_emulator.runtime",), EMULATOR_IO,
     "the emulator's engine and its runtime interface import no I/O module"),
    (("servicebus_emulator.amqp", "servicebus_emulator.amqp_frames", "servicebus_emulator.amqp_management",
      "servicebus_emulator.websocket", "servicebus_emulator.admin_http", "servicebus_emulator.admin_xml", "servicebus_emulator.persistence"),
     ("servicebus_emulator.server", "servicebus_emulator.cli", "servicebus_emulator.__main__"),
     "the emulator's adapters depend on runtime.Runtime, not on the server that wires them"),
    (("servicebus_emulator.admin_http", "servicebus_emulator.admin_xml", "servicebus_emulator.persistence"),
     ("servicebus_emulator.amqp", "servicebus_emulator.amqp_frames", "servicebus_emulator.amqp_management",
      "servicebus_emulator.websocket"),
     "admin HTTP and persistence sit beside the AMQP adapter, not on it"),
)

#: Edges that break a rule today, each with the work that removes it (issue 23, library part).
#: The test fails when one of them is gone from the code, so that its line goes too.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}



@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.where})"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the project's own code."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    for name in SINGLE_MODULES:
        path = root / f"{name}.py"
        if path.exists():
            out[name] = path
    return out


def _nearest(name: str, known: Iterable[str]) -> str | None:
    """The project module that an import of ``name`` loads last (``a.b.C`` -> ``a.b``)."""
    names = set(known)
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in names:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, source: str, known: set[str], filename: str = "?") -> list[Edge]:
    """The project modules that ``module`` (its ``source``) imports, anywhere in the file."""
    is_package = filename.endswith("__init__.py")
    out: list[Edge] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base_parts = package[: len(package) - drop] if drop else package
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import mod`` names a module; ``from mod import name`` names the module
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            found = _nearest(target, known)
            if found is not None and found != module:
                out.append(Edge(module, found, f"{filename}:{getattr(node, 'lineno', 0)}"))
    return out


def import_graph(root: Path = ROOT) -> list[Edge]:
    files = module_files(root)
    known = set(files)
    edges: list[Edge] = []
    for module, path in files.items():
        rel = str(path.relative_to(root))
        edges.extend(imports_of(module, path.read_text(encoding="utf-8"), known, rel))
    return edges


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _under(module: str, names: Iterable[str]) -> bool:
    return any(fnmatchcase(module, name) or fnmatchcase(module, name + ".*") for name in names)


def forbidden(edges: Iterable[Edge],
              rules: Iterable[tuple[tuple[str, ...], tuple[str, ...], str]] = RULES) -> list[tuple[Edge, str]]:
    """Every edge that a rule forbids, with the rule's reason."""
    out = []
    for edge in edges:
        for importers, imported, why in rules:
            if _under(edge.importer, importers) and _under(edge.imported, imported):
                out.append((edge, why))
    return out


def _describe_cycle(component: list[str], edges: Iterable[Edge]) -> str:
    members = set(component)
    inside = sorted({str(e) for e in edges if e.importer in members and e.imported in members})
    return "cycle of " + ", ".join(component) + ":\n    " + "\n    ".join(inside)


# -- the project as it stands ------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph()


def test_the_graph_is_read(edges: list[Edge]) -> None:
    """The parser sees the imports that are there (a graph with no edges passes every rule)."""
    pairs = {(e.importer, e.imported) for e in edges}
    assert ("servicebus_emulator.server", "servicebus_emulator.amqp") in pairs
    assert ("servicebus_emulator.admin_http", "servicebus_emulator.admin_xml") in pairs  # from . import x
    assert any(e.importer.startswith("relay_node") and e.imported.startswith(LIB) for e in edges)
    assert len(module_files()) > 50


def test_no_import_cycle(edges: list[Edge]) -> None:
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(_describe_cycle(c, edges) for c in found)


def test_no_import_in_a_forbidden_direction(edges: list[Edge]) -> None:
    bad = [(edge, why) for edge, why in forbidden(edges)
           if (edge.importer, edge.imported) not in KNOWN_EXCEPTIONS]
    assert not bad, "imports against docs/architecture.md, Layers:\n" + "\n".join(
        f"  {edge}: {why}" for edge, why in bad
    )


def test_every_known_exception_is_still_there(edges: list[Edge]) -> None:
    pairs = {(e.importer, e.imported) for e in edges}
    gone = [f"{a} -> {b}" for a, b in KNOWN_EXCEPTIONS if (a, b) not in pairs]
    assert not gone, "no longer in the code; delete from KNOWN_EXCEPTIONS: " + ", ".join(gone)
    broken = {(edge.importer, edge.imported) for edge, _ in forbidden(edges)}
    needless = [f"{a} -> {b}" for a, b in KNOWN_EXCEPTIONS if (a, b) not in broken]
    assert not needless, "no rule forbids these; delete from KNOWN_EXCEPTIONS: " + ", ".join(needless)


def test_every_rule_names_modules_that_exist() -> None:
    """A rule about a module that was renamed away would pass forever: each names real code."""
    known = set(module_files())
    for importers, imported, why in RULES:
        for name in (*importers, *imported):
            assert any(_under(m, [name]) for m in known), f"{name!r} in rule {why!r}"


def test_the_rules_are_written_in_the_architecture_doc() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "## Layers" in doc
    for _, _, why in RULES:
        assert why in doc, f"rule {why!r} is not in docs/architecture.md, Layers"


# -- the checker itself has teeth ----------------------------------------------------------------
def _synthetic(sources: Mapping[str, str]) -> list[Edge]:
    known = set(sources)
    out: list[Edge] = []
    for module, source in sources.items():
        out.extend(imports_of(module, source, known, f"{module.replace('.', '/')}.py"))
    return out


def test_a_cycle_is_found_with_its_edges() -> None:
    edges = _synthetic({
        "pkg.a": "from .b import x\n",
        "pkg.b": "def f():\n    from pkg.c import y\n",  # inside a function counts too
        "pkg.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "pkg.d": "import pkg.a\n",
    })
    found = cycles(edges)
    assert found == [["pkg.a", "pkg.b", "pkg.c"]]
    text = _describe_cycle(found[0], edges)
    assert "pkg.b -> pkg.c (pkg/b.py:2)" in text
    assert "pkg.d" not in text


def test_a_forbidden_direction_is_found() -> None:
    edges = _synthetic({
        f"{LIB}.wire.codec": f"from {LIB}.manager import outbox\n",
        f"{LIB}.manager.outbox": "from ..wire import codec\n",
        f"{LIB}.manager": "",
        f"{LIB}.wire": "",
        "servicebus_emulator.store": "from servicebus_emulator import amqp\n",
        "servicebus_emulator.amqp": "from .store import Message\n",
        "servicebus_emulator.websocket": "from .server import NamespaceRuntime\n",
        "servicebus_emulator.server": "",
        "relay_node.server": "import servicebus_emulator.amqp\n",
        "relay_node.cli": f"from {LIB}.manager._hidden import x\n",
        f"{LIB}.manager._hidden": "",
    })
    bad = {(edge.importer, edge.imported) for edge, _ in forbidden(edges)}
    assert bad == {
        (f"{LIB}.wire.codec", f"{LIB}.manager.outbox"),
        ("servicebus_emulator.store", "servicebus_emulator.amqp"),
        ("servicebus_emulator.websocket", "servicebus_emulator.server"),
        ("relay_node.server", "servicebus_emulator.amqp"),
        ("relay_node.cli", f"{LIB}.manager._hidden"),
    }
