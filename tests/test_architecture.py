"""The structure as a contract: layers (import-linter, run by `make lint`), no import
cycles, no SQL and no connections in ``saga`` outside the composition root, modules a
reader can take in one sitting."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("saga", "steps", "stores")
MAX_LINES = 420  # "about 400": a module one reads in one sitting
SQL = re.compile(  # statements as this codebase writes them: keywords in capitals
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX)|PRAGMA\s+\w|BEGIN\s+IMMEDIATE)"
)
CONNECTION = re.compile(r"^\s*(import|from)\s+sqlite3\b|\bsqlite3\.\w", re.MULTILINE)
# The demo is an application shipped with the library: it creates its own tables.
SQL_ALLOWED = {"saga/demo/app.py"}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_layer_contract_holds() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_of_saga_steps_stores_is_in_an_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the direct imports, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above must be able to fail."""
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert {"a.x", "a.y"} in _strongly_connected(graph)


def _code_strings(text: str) -> list[str]:
    """Every string literal of a module but its docstrings (prose may name SQL)."""
    tree = ast.parse(text)
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", _modules("saga"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_saga_holds_no_sql_and_no_connection(path: Path) -> None:
    name = path.relative_to(ROOT).as_posix()
    text = path.read_text()
    if name in SQL_ALLOWED:
        return
    sql = [literal for literal in _code_strings(text) if SQL.search(literal)]
    assert sql == [], f"SQL in {name}"
    assert not CONNECTION.search(text), f"{name} uses sqlite3: {CONNECTION.search(text)}"


def test_the_sql_finder_finds_sql() -> None:
    assert SQL.search('"SELECT name FROM sqlite_master"')
    assert SQL.search("conn.execute('DELETE FROM notes WHERE id = ?')")
    assert not SQL.search("select the saga to update, then delete from the list")
    assert CONNECTION.search("def f(conn: sqlite3.Connection) -> None: ...")
    planted = 'def f():\n    """Runs BEGIN IMMEDIATE."""\n    return "SELECT * FROM t"\n'
    assert _code_strings(planted) == ["SELECT * FROM t"]


@pytest.mark.parametrize(
    "path",
    [p for package in PACKAGES for p in _modules(package)],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_every_module_reads_in_one_sitting(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines"


def test_every_module_of_saga_is_in_a_layer() -> None:
    """A module missing from the layers list would be checked by nothing."""
    import tomllib  # noqa: PLC0415

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [layers] = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    modules = {p.stem for p in (ROOT / "saga").glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (ROOT / "saga").iterdir() if (p / "__init__.py").exists()}
    assert modules - named == set()
