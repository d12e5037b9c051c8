"""Draw saga definitions as Mermaid ``stateDiagram-v2`` text, Graphviz DOT text, or SVG.

Every drawing is read back from the ``transitions`` machine the runner enforces
(``machine_for(definition).table()``), so a diagram cannot show a move the runner
refuses, nor miss one it allows. Mermaid text comes from ``transitions``' own mermaid
engine, normalised to the documented syntax; DOT is written here from the same table,
so neither format needs a system package; SVG pipes that DOT through Graphviz's ``dot``.

``render_saga`` draws one saga: its current state and the moves its history records.
``write_all`` writes one file per dual-write definition (what ``saga diagram`` does).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
from transitions.extensions import GraphMachine

from saga._errors import IllegalTransitionError, SagaError
from saga._machine import (
    COMPENSATING,
    FAILED,
    PENDING,
    SQLITE_COMMITTED,
    SYNCED,
    VECTOR_WRITTEN,
    SagaDefinition,
    machine_for,
)

FORMATS = ("mermaid", "dot", "svg")
EXTENSIONS = {"mermaid": "mmd", "dot": "dot", "svg": "svg"}
START = "[*]"
"""The initial pseudo-state, the source of the ``begin`` move (``None`` in history)."""

SVG_NEEDS_DOT = (
    "SVG needs Graphviz's `dot` program on PATH: apt-get install graphviz (Debian/Ubuntu) "
    "or brew install graphviz (macOS). The mermaid and dot formats need nothing."
)
DOT_TIMEOUT = 60.0
"""How long ``dot`` may take to lay out one diagram (seconds)."""

_MEANING = {
    PENDING: "intent recorded, nothing written yet",
    VECTOR_WRITTEN: "Chroma side applied",
    SQLITE_COMMITTED: "row committed together with this state (the pivot)",
    SYNCED: "done in both stores",
    COMPENSATING: "undoing the applied steps",
    FAILED: "undone, neither store changed",
}
_EDGE = re.compile(r"^(?P<indent>\s*)(?P<src>\S+) --> (?P<dst>\S+)(?:: (?P<label>.*))?$")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)

Move = tuple[str | None, str, str]
"""One history row: (from_state, event, to_state); from_state is None for ``begin``."""


class GraphvizMissingError(SagaError):
    """SVG was asked for, but Graphviz's ``dot`` program is not on PATH."""


@attrs.frozen
class _Marks:
    """What to highlight: a saga's current state and the moves it took, in order."""

    current: str | None = None
    taken: tuple[tuple[str, str], ...] = ()

    def visited(self) -> set[str]:
        """States the saga passed through, other than the one it is in."""
        return {state for move in self.taken for state in move} - {START, self.current or ""}

    def steps_on(self, source: str, dest: str) -> list[int]:
        """The 1-based positions in the path at which the saga moved ``source -> dest``."""
        return [n for n, move in enumerate(self.taken, start=1) if move == (source, dest)]


def render(definition: SagaDefinition, fmt: str = "mermaid") -> str | bytes:
    """Draw ``definition``'s machine: text for "mermaid" and "dot", bytes for "svg"."""
    return _draw(definition, _Marks(), fmt)


def render_saga(
    definition: SagaDefinition, current_state: str, path: list[Move], fmt: str = "mermaid"
) -> str | bytes:
    """Draw one saga: ``current_state`` highlighted, the moves in ``path`` marked.

    Raises ``IllegalTransitionError`` if the state or a move is not in the machine.
    """
    return _draw(definition, _marks_for(definition, current_state, path), fmt)


def write_all(
    out_dir: Path, fmt: str = "mermaid", *, definitions: Mapping[str, SagaDefinition]
) -> list[Path]:
    """Write one ``<name>.<ext>`` per definition into ``out_dir`` and return the paths.

    For mermaid a ``README.md`` embedding every diagram is written too. (``saga diagram``
    passes the built-in dual-write definitions; this module knows none of its own.)
    """
    # Draw everything before writing anything: a missing `dot` leaves no half-written folder.
    drawings = {name: render(definition, fmt) for name, definition in definitions.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_write(out_dir / f"{name}.{EXTENSIONS[fmt]}", d) for name, d in drawings.items()]
    if fmt == "mermaid":
        readme = _readme(definitions.values(), {k: str(v) for k, v in drawings.items()})
        paths.append(_write(out_dir / "README.md", readme))
    return paths


def _draw(definition: SagaDefinition, marks: _Marks, fmt: str) -> str | bytes:
    if fmt == "mermaid":
        return _mermaid(definition, marks)
    if fmt == "dot":
        return _dot(definition, marks)
    if fmt == "svg":
        return _svg(_dot(definition, marks))
    raise SagaError(f"unknown diagram format {fmt!r}; use one of {', '.join(FORMATS)}")


def _marks_for(definition: SagaDefinition, current: str, path: Iterable[Move]) -> _Marks:
    states = _states(definition)
    if current not in states:
        raise IllegalTransitionError(f"saga {definition.name!r} has no state {current!r}")
    allowed = {(src, dst) for src, _event, dst in _edges(definition)} | {(START, PENDING)}
    taken = tuple((src or START, dst) for src, _event, dst in path)
    for src, dst in taken:
        if (src, dst) not in allowed:
            raise IllegalTransitionError(
                f"saga {definition.name!r}: the machine has no move {src} -> {dst}"
            )
    return _Marks(current=current, taken=taken)


def _states(definition: SagaDefinition) -> list[str]:
    """The machine's states, in declaration order."""
    return machine_for(definition).state_names()


def _edges(definition: SagaDefinition) -> list[tuple[str, str, str]]:
    """The machine's (source, event, dest) moves, ordered by the states' declaration.

    ``table()`` sorts by name; declaration order keeps the happy path first, which is
    what both layout engines lay out best.
    """
    rank = {state: n for n, state in enumerate(_states(definition))}
    return sorted(machine_for(definition).table(), key=lambda m: (rank[m[0]], rank[m[2]], m[1]))


def _write(path: Path, drawing: str | bytes) -> Path:
    # Bytes, not text mode: the committed files must be identical on every OS.
    path.write_bytes(drawing.encode() if isinstance(drawing, str) else drawing)
    return path


# --- Mermaid -------------------------------------------------------------------------


class _Model:
    """A bare model for ``GraphMachine``: the drawing needs one, the saga's lives in SQLite."""


def _mermaid(definition: SagaDefinition, marks: _Marks) -> str:
    model = _Model()
    drawer = GraphMachine(
        model=model,
        states=_states(definition),
        transitions=[{"trigger": e, "source": s, "dest": d} for s, e, d in _edges(definition)],
        initial=PENDING,
        auto_transitions=False,
        graph_engine="mermaid",
        title=definition.name,
    )
    graph = drawer.model_graphs[id(model)]
    # A definition has no current state: drop the "active" mark transitions puts on the
    # model's initial state, and style only what a saga's history says.
    graph.reset_styling()
    for state in sorted(marks.visited()):
        graph.set_node_style(state, "previous")
    if marks.current is not None:
        graph.set_node_style(marks.current, "active")
    # draw(None) returns the text; None is only for drawing into a file.
    text = cast(str, graph.get_graph(title=definition.name).draw(None))
    return _normalise_mermaid(text, definition, marks)


def _normalise_mermaid(text: str, definition: SagaDefinition, marks: _Marks) -> str:
    """Make transitions' text valid, documented ``stateDiagram-v2`` and mark taken moves.

    - transitions writes the title as a bare YAML scalar (``---/create/---``); Mermaid
      wants a mapping and silently drops anything else, so write ``title: create``.
    - transitions writes ``Class <state> <class>``; the documented statement is
      lowercase ``class`` (Mermaid 11's lexer happens to be case-insensitive, others
      need not be).
    - blank lines come out indented; strip trailing blanks so the files diff cleanly.
    - a state diagram cannot style an edge, so taken moves get ``(step n)`` in their label.
    """
    body = _FRONT_MATTER.sub("", text, count=1)
    lines = [f"---\ntitle: {definition.name}\n---"]
    for raw in body.splitlines():
        line = re.sub(r"^(\s*)Class ", r"\1class ", raw.rstrip())
        lines.append(_mark_edge(line, marks))
    return "\n".join(lines) + "\n"


def _mark_edge(line: str, marks: _Marks) -> str:
    edge = _EDGE.match(line)
    if edge is None or not (steps := marks.steps_on(edge["src"], edge["dst"])):
        return line
    label = edge["label"] or "begin"
    return f"{edge['indent']}{edge['src']} --> {edge['dst']}: {label} {_step_note(steps)}"


def _step_note(steps: list[int]) -> str:
    numbers = ", ".join(str(n) for n in steps)
    return f"(step {numbers})" if len(steps) == 1 else f"(steps {numbers})"


# --- DOT and SVG ---------------------------------------------------------------------


def _dot(definition: SagaDefinition, marks: _Marks) -> str:
    """DOT text in transitions' palette, built from the same table as the Mermaid text."""
    lines = [
        f"digraph {_quote(definition.name)} {{",
        f"  graph [label={_quote(definition.name)}, labelloc=t, rankdir=LR];",
        f"  node {_attrs(_palette('node', 'default'))};",
        f"  edge {_attrs(_palette('edge', 'default'))};",
        f'  {_quote(START)} [shape=point, label=""];',
    ]
    for state in _states(definition):
        lines.append(f"  {_quote(state)} {_attrs({'label': state, **_node_style(state, marks)})};")
    for src, event, dst in [(START, "", PENDING), *_edges(definition)]:
        lines.append(
            f"  {_quote(src)} -> {_quote(dst)} {_attrs(_edge_style(src, event, dst, marks))};"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_style(state: str, marks: _Marks) -> dict[str, str]:
    if state == marks.current:
        return _palette("node", "active")
    return _palette("node", "previous") if state in marks.visited() else {}


def _edge_style(src: str, event: str, dst: str, marks: _Marks) -> dict[str, str]:
    steps = marks.steps_on(src, dst)
    if not steps:
        return {"label": event}
    label = f"{event or 'begin'} {_step_note(steps)}"
    return {"label": label, "penwidth": "2", **_palette("edge", "previous")}


def _palette(kind: str, style: str) -> dict[str, str]:
    """One of transitions' Graphviz styles, so DOT and Mermaid share their colours."""
    styles: Any = GraphMachine.style_attributes[kind]
    entry: Mapping[str, str] = styles[style]
    return dict(entry)


def _attrs(attributes: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{key}={_quote(value)}" for key, value in attributes.items()) + "]"


def _quote(text: str) -> str:
    # Always quoted: a state may be named like a DOT keyword (`node`, `graph`, `edge`).
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _svg(dot_text: str) -> bytes:
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissingError(SVG_NEEDS_DOT)
    try:
        done = subprocess.run(
            [dot, "-Tsvg"],
            input=dot_text.encode(),
            capture_output=True,
            check=True,
            timeout=DOT_TIMEOUT,
        )
    except subprocess.CalledProcessError as exc:
        raise SagaError(f"Graphviz's dot failed: {exc.stderr.decode(errors='replace')}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SagaError(f"Graphviz's dot at {dot} could not run: {exc}") from exc
    return done.stdout


# --- README --------------------------------------------------------------------------


def _readme(definitions: Iterable[SagaDefinition], drawings: Mapping[str, str]) -> str:
    """A Markdown page embedding every diagram in a ```mermaid fence (GitHub renders it)."""
    definitions = list(definitions)
    parts = [
        "# Saga state diagrams\n",
        "Generated by `saga diagram` from the state machines the runner enforces "
        "(`saga/_machine.py`). Do not edit: run `saga diagram` after changing a definition; "
        "`tests/test_diagram.py` fails when these files drift.\n",
        "States: " + "; ".join(_state_meanings(definitions)) + ".\n",
    ]
    for definition in definitions:
        parts.append(f"## {definition.name}\n")
        parts.append(_summary(definition) + "\n")
        parts.append(f"```mermaid\n{drawings[definition.name]}```\n")
    return "\n".join(parts)


def _state_meanings(definitions: list[SagaDefinition]) -> list[str]:
    reached_by = {s.reaches: s.name for d in definitions for s in d.steps}
    states = dict.fromkeys(state for d in definitions for state in _states(d))
    return [
        f"`{state}` {_MEANING.get(state) or f'step `{reached_by[state]}` applied'}"
        for state in states
    ]


def _summary(definition: SagaDefinition) -> str:
    steps = " then ".join(f"`{step.name}`" for step in definition.steps)
    pivot = definition.steps[definition.pivot_index].reaches
    return (
        f"Steps {steps} (pivot `{definition.pivot}`): a failure before `{pivot}` "
        f"compensates; from `{pivot}` on the saga only rolls forward."
    )
