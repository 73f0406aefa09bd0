"""The package's layout rules, checked on the source: no import cycle between modules (not even
one that only a type checker would follow), the recorder readable without the server, and a
cluster router that never loads aiortc (it must start fast and stay small)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "improv_capture"
#: what the recorder may import of the package besides itself (improv_capture/recorder/__init__.py)
RECORDER_MAY_IMPORT = {f"{PACKAGE}.clock", f"{PACKAGE}.errors", f"{PACKAGE}.db"}


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path, tree: ast.AST | None = None) -> set[str]:
    """Every dotted name module ``name`` (or ``tree``, a part of it) imports, wherever the
    statement is: at the top, inside a function, under ``if TYPE_CHECKING:``.
    ``from a import b`` yields ``a.b`` and ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree or ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name that is not a module is dropped:
    ``from improv_capture.clock import new_id`` is an edge to improv_capture.clock)."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        graph[name] = {
            target for target in imported_names(name, path)
            if target in files and target != name and target != PACKAGE
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    """``start`` and every module of the package it reaches by imports."""
    seen = {start}
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (every import counts, TYPE_CHECKING ones too): " + "; ".join(
        " <-> ".join(component) for component in found
    )


def test_no_type_checking_imports_of_our_own_modules() -> None:
    """An import only a type checker follows hides a cycle; the model types live in
    improv_capture/rooms/model.py so that nobody needs one."""
    offenders = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                inside = {n for child in node.body for n in imported_names(name, path, child)}
                if any(n.startswith(PACKAGE) for n in inside):
                    offenders.append(name)
    assert not offenders, f"TYPE_CHECKING imports of improv_capture in {offenders}"


def test_the_recorder_imports_only_clock_errors_and_db() -> None:
    recorder = f"{PACKAGE}.recorder"
    wrong = {
        name: sorted(t for t in targets if t not in RECORDER_MAY_IMPORT
                     and t != recorder and not t.startswith(recorder + "."))
        for name, targets in import_graph().items()
        if name == recorder or name.startswith(recorder + ".")
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_the_cluster_router_never_loads_aiortc() -> None:
    router = f"{PACKAGE}.cluster.router"
    reached = closure(import_graph(), router)
    third_party = {
        n.split(".")[0]
        for name in reached
        for n in imported_names(name, module_files()[name])
        if not n.startswith(PACKAGE)
    }
    assert "aiortc" not in third_party, sorted(
        name for name in reached if any(
            n.split(".")[0] == "aiortc" for n in imported_names(name, module_files()[name])))
    # and what the libraries it uses import in turn: load it for real, in a fresh interpreter
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {router}; print('aiortc' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    assert loaded.stdout.strip() == "False"
