"""``saga diagram`` and ``saga.diagram``: drawn from the machine, valid, and not stale."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from saga import IllegalTransitionError, SagaContext, SagaDefinition, SagaError
from saga.cli import cli
from saga.cli._diagram import diagram
from saga.diagram import GraphvizMissingError, render, render_saga, write_all
from steps import CREATE, DEFINITIONS, CommitRows, WriteVectors

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "diagrams"
NEEDS_DOT = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not installed (apt-get install graphviz); SVG cannot be drawn",
)

STATES = {"pending", "vector_written", "sqlite_committed", "synced", "compensating", "failed"}
EDGES = {
    ("[*]", "pending", None),
    ("pending", "vector_written", "write_vectors"),
    ("vector_written", "sqlite_committed", "commit_rows"),
    ("sqlite_committed", "synced", "finish"),
    ("pending", "compensating", "compensate"),
    ("vector_written", "compensating", "compensate"),
    ("compensating", "failed", "compensated"),
}
FAILED_PATH = [
    (None, "begin", "pending"),
    ("pending", "write_vectors", "vector_written"),
    ("vector_written", "compensate", "compensating"),
    ("compensating", "compensated", "failed"),
]


@attrs.frozen
class Notify:
    """A third-party step after the pivot: it only rolls forward."""

    name: str = "notify"
    reaches: str = "notified"
    local: bool = False

    def prepare(self, ctx: SagaContext, txn: sqlite3.Connection) -> None:
        pass

    def forward(self, ctx: SagaContext, txn: sqlite3.Connection | None) -> None:
        pass

    def compensate(self, ctx: SagaContext) -> None:
        pass


def mermaid_states(text: str) -> set[str]:
    return set(re.findall(r'^\s*state "[^"]*" as (\S+)$', text, re.MULTILINE))


def mermaid_edges(text: str) -> set[tuple[str, str, str | None]]:
    found = re.findall(r"^\s*(\S+) --> (\S+)(?:: (.*))?$", text, re.MULTILINE)
    return {(src, dst, label or None) for src, dst, label in found}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["diagram", *args])


def without_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which no `dot` can be found, as on a machine without Graphviz."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_committed_diagrams_match_the_code(tmp_path: Path) -> None:
    result = invoke("--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir()}
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, (
        f"diagrams/ is out of date ({', '.join(stale)}): run `saga diagram` in the repo root"
    )


def test_cli_prints_every_path_it_wrote(tmp_path: Path) -> None:
    result = invoke("--out", str(tmp_path / "new"), "--format", "dot")
    assert result.exit_code == 0, result.output
    expected = [str(tmp_path / "new" / f"{name}.dot") for name in DEFINITIONS]
    assert result.stdout.splitlines() == expected
    assert "diagram" in cli.commands
    assert cli.commands["diagram"] is diagram


def test_the_console_script_has_the_command(tmp_path: Path) -> None:
    # What `saga diagram` runs: saga.cli.main, with only the imports saga.cli makes itself.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from saga.cli import main; main()",
            "diagram",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"saga.cli does not register `diagram`: {done.stderr}"
    assert (tmp_path / "README.md").exists()


def test_mermaid_lists_exactly_the_design_states_and_edges() -> None:
    text = render(CREATE)
    assert isinstance(text, str)
    assert "\nstateDiagram-v2\n" in text
    assert text.startswith("---\ntitle: create\n---\nstateDiagram-v2\n")
    assert mermaid_states(text) == STATES
    assert mermaid_edges(text) == EDGES


def test_mermaid_uses_the_documented_syntax() -> None:
    text = render(CREATE)
    assert isinstance(text, str)
    assert not re.search(r"^\s*Class ", text, re.MULTILINE), "Mermaid's statement is `class`"
    assert re.findall(r"^  class (\S+) s_default$", text, re.MULTILINE) == list(
        dict.fromkeys(re.findall(r"^  state \S+ as (\S+)$", text, re.MULTILINE))
    )
    assert all(line == line.rstrip() for line in text.splitlines())
    assert text.endswith("\n")


def test_every_definition_draws_the_same_machine() -> None:
    """Every dual write; ``adopt`` has one more step, after the pivot."""
    for definition in DEFINITIONS.values():
        if definition.name == "adopt":
            assert mermaid_edges(str(render(definition))) - EDGES == {
                ("vector_written", "sqlite_committed", "point_rows"),
                ("sqlite_committed", "legacy_dropped", "drop_legacy"),
                ("legacy_dropped", "synced", "finish"),
                ("pending", "vector_written", "copy_vectors"),
            }
            continue
        text = render(definition)
        assert isinstance(text, str)
        assert mermaid_edges(text) == EDGES, definition.name


def test_dot_is_text_with_every_edge_and_needs_no_graphviz(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_dot(monkeypatch, tmp_path)
    text = render(CREATE, "dot")
    assert isinstance(text, str)
    assert text.startswith('digraph "create" {')
    found = re.findall(r'^  "(\S+)" -> "(\S+)" \[label="([^"]*)"', text, re.MULTILINE)
    assert {(src, dst, label or None) for src, dst, label in found} == EDGES
    assert set(re.findall(r'^  "(\w+)" \[label=', text, re.MULTILINE)) == STATES


@NEEDS_DOT
def test_svg_is_drawn_by_graphviz(tmp_path: Path) -> None:
    svg = render(CREATE, "svg")
    assert isinstance(svg, bytes)
    assert svg.lstrip().startswith(b"<?xml")
    assert b"<svg" in svg
    assert all(state.encode() in svg for state in STATES)
    result = invoke("--out", str(tmp_path), "--format", "svg")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.svg" for n in DEFINITIONS)


def test_svg_without_dot_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_dot(monkeypatch, tmp_path)
    with pytest.raises(GraphvizMissingError, match="apt-get install graphviz") as caught:
        render(CREATE, "svg")
    assert isinstance(caught.value, SagaError)


def test_cli_svg_without_dot_exits_2_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_dot(monkeypatch, tmp_path)
    out = tmp_path / "svg"
    result = invoke("--out", str(out), "--format", "svg")
    assert result.exit_code == 2
    assert "Graphviz" in result.stderr
    assert "apt-get install graphviz" in result.stderr
    assert not out.exists()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(SagaError, match="unknown diagram format 'png'"):
        render(CREATE, "png")
    assert invoke("--format", "png").exit_code == 2


def test_a_custom_step_renders_its_own_state() -> None:
    custom = SagaDefinition(
        name="create_and_notify",
        steps=(WriteVectors("create"), CommitRows("create"), Notify()),
        pivot="commit_rows",
    )
    text = render(custom)
    assert isinstance(text, str)
    assert mermaid_states(text) == STATES | {"notified"}
    edges = mermaid_edges(text)
    assert ("sqlite_committed", "notified", "notify") in edges
    assert ("notified", "synced", "finish") in edges
    assert ("sqlite_committed", "synced", "finish") not in edges
    # After the pivot the saga only rolls forward: no way back from the new state.
    assert not any(src == "notified" and dst == "compensating" for src, dst, _ in edges)
    dot = render(custom, "dot")
    assert isinstance(dot, str)
    assert '"sqlite_committed" -> "notified" [label="notify"]' in dot


def test_render_saga_marks_the_path_and_the_current_state() -> None:
    text = render_saga(CREATE, "failed", FAILED_PATH)
    assert isinstance(text, str)
    lines = text.splitlines()
    for expected in [
        "  class pending s_previous",
        "  class vector_written s_previous",
        "  class compensating s_previous",
        "  class failed s_active",
        "  class sqlite_committed s_default",
        "  class synced s_default",
        "  [*] --> pending: begin (step 1)",
        "  pending --> vector_written: write_vectors (step 2)",
        "  vector_written --> compensating: compensate (step 3)",
        "  compensating --> failed: compensated (step 4)",
        "  pending --> compensating: compensate",
        "  vector_written --> sqlite_committed: commit_rows",
    ]:
        assert expected in lines, expected


def test_render_saga_in_dot_marks_the_path_too() -> None:
    text = render_saga(CREATE, "vector_written", FAILED_PATH[:2], "dot")
    assert isinstance(text, str)
    assert '"vector_written" [label="vector_written", color="red"' in text
    assert '"pending" [label="pending", color="blue"' in text
    assert '"pending" -> "vector_written" [label="write_vectors (step 2)", penwidth="2"' in text
    assert '"pending" -> "compensating" [label="compensate"];' in text


def test_render_saga_refuses_what_the_machine_does_not_allow() -> None:
    with pytest.raises(IllegalTransitionError, match="pending -> synced"):
        render_saga(CREATE, "synced", [(None, "begin", "pending"), ("pending", "x", "synced")])
    with pytest.raises(IllegalTransitionError, match="no state 'nowhere'"):
        render_saga(CREATE, "nowhere", [])


def test_readme_embeds_every_diagram(tmp_path: Path) -> None:
    paths = write_all(tmp_path, definitions=DEFINITIONS)
    assert paths[-1] == tmp_path / "README.md"
    readme = paths[-1].read_text()
    for name in DEFINITIONS:
        drawing = (tmp_path / f"{name}.mmd").read_text()
        assert f"## {name}\n" in readme
        assert f"```mermaid\n{drawing}```\n" in readme
    assert readme.count("```mermaid") == len(DEFINITIONS)


def test_drawing_never_imports_chromadb(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from saga.diagram import write_all; "
        "from steps import DEFINITIONS; "
        f"write_all(Path({str(tmp_path)!r}), definitions=DEFINITIONS); "
        "assert 'chromadb' not in sys.modules, 'chromadb'"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
