"""``saga.cli`` as a package: how it is run, what it imports, and ``show --diagram``."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from saga.cli import EXIT_USAGE, cli
from tests.test_cli import saga_ids
from tests.test_recovery import ROOT, crash_once

COMMANDS = {"status", "show", "recover", "reconcile", "rebuild", "adopt", "diagram", "demo"}


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stores where a writer died right after recording `pending` (read-only here)."""
    return crash_once(tmp_path_factory.mktemp("stores"), "create", "after:pending=kill")


# -- how it runs ----------------------------------------------------------------------


def test_the_group_has_every_command() -> None:
    assert set(cli.commands) == COMMANDS


def test_python_dash_m_saga_is_the_cli() -> None:
    done = python("-m", "saga", "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m saga" in done.stdout
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == COMMANDS


def test_python_dash_m_saga_cli_knows_its_commands() -> None:
    done = python("-m", "saga.cli", "status", "--help")
    assert done.returncode == 0, done.stderr
    assert "Counts of sagas per state and per table" in done.stdout
    assert "--db" in done.stdout


def test_python_dash_m_saga_runs_a_command(crashed: Path) -> None:
    done = python("-m", "saga", "status", "--db", str(crashed / "app.db"), "--json")
    assert done.returncode == 1  # one saga in flight
    assert json.loads(done.stdout)["in_flight"] == 1


def test_importing_the_cli_does_not_import_the_demo() -> None:
    done = python("-c", "import sys, saga.cli; print('saga.demo' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_demo_options_repeat_the_demos_own_numbers() -> None:
    from saga import demo  # noqa: PLC0415
    from saga.cli import _demo  # noqa: PLC0415

    assert (_demo.MIN_RECORDS, _demo.DEFAULT_RECORDS) == (demo.MIN_RECORDS, demo.DEFAULT_RECORDS)


# -- show --diagram: the suffix says the format ----------------------------------------


def show_diagram(crashed: Path, target: Path) -> tuple[int, str]:
    saga_id = saga_ids(crashed)[-1]
    args = ["show", saga_id, "--db", str(crashed / "app.db"), "--diagram", str(target)]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("name", "opening", "other"),
    [("saga.mmd", "stateDiagram-v2", "digraph"), ("saga.dot", "digraph", "stateDiagram")],
)
def test_show_diagram_writes_the_format_its_suffix_names(
    crashed: Path, tmp_path: Path, name: str, opening: str, other: str
) -> None:
    code, text = show_diagram(crashed, tmp_path / name)
    assert code == 0, text
    drawing = (tmp_path / name).read_text()
    # Mermaid may open with a `---` front-matter title; the diagram line follows it.
    assert any(line.startswith(opening) for line in drawing.splitlines()[:4]), drawing
    assert other not in drawing
    assert f"diagram written to {tmp_path / name}" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed")
def test_show_diagram_svg(crashed: Path, tmp_path: Path) -> None:
    code, text = show_diagram(crashed, tmp_path / "saga.svg")
    assert code == 0, text
    assert "<svg" in (tmp_path / "saga.svg").read_text()


@pytest.mark.parametrize("name", ["saga.png", "saga", "saga.mermaid"])
def test_show_diagram_refuses_an_unknown_suffix(crashed: Path, tmp_path: Path, name: str) -> None:
    code, text = show_diagram(crashed, tmp_path / name)
    assert code == EXIT_USAGE
    for suffix in (".mmd", ".dot", ".svg"):
        assert suffix in text
    assert list(tmp_path.iterdir()) == []


# -- imports: public API only, no cycle --------------------------------------------------


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute, plus ``module.name`` for each from-import."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            found += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return found


def private_saga_imports(path: Path, allowed: set[str]) -> list[str]:
    """``saga._x`` modules (or names) imported by ``path``, except those ``allowed``."""
    private = {
        ".".join(name.split(".")[:2])
        for name in imported_modules(path)
        if name.startswith("saga._") and name != "saga.__main__"
    }
    return sorted(private - allowed)


def sources(folder: str) -> list[Any]:
    """One test case per module of ``folder``."""
    files = sorted((ROOT / folder).glob("*.py"))
    assert files, f"no sources under {folder}"
    cases = []
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        cases.append(pytest.param(path, id=name))
    return cases


@pytest.mark.parametrize("path", sources("saga/demo"))
def test_the_demo_uses_the_public_api_only(path: Path) -> None:
    assert private_saga_imports(path, allowed=set()) == []


@pytest.mark.parametrize("path", sources("saga/cli"))
def test_the_cli_uses_the_public_api_and_the_composition_root_only(path: Path) -> None:
    assert private_saga_imports(path, allowed={"saga._compose"}) == []


@pytest.mark.parametrize("path", sorted((ROOT / "saga" / "cli").glob("_[!_]*.py")))
def test_command_modules_import_only_the_shared_module_of_the_cli(path: Path) -> None:
    """The group module imports the commands: a name flowing back would be a cycle."""
    reached = [n for n in imported_modules(path) if n == "saga.cli" or n.startswith("saga.cli.")]
    assert [n for n in reached if not n.startswith("saga.cli._common")] == []


def test_the_wheel_ships_the_cli_and_the_demo(tmp_path: Path) -> None:
    """The console script ``saga = "saga.cli:main"`` needs ``saga/cli/`` installed."""
    from tests.test_package import _built_files  # noqa: PLC0415

    files = set(_built_files(tmp_path))
    assert {"saga/cli/__init__.py", "saga/demo/__init__.py"} <= files
