"""``saga demo`` end to end, as a user runs it: a real subprocess (whose own workers are
SIGKILLed), a real SQLite file and embedded Chroma, then checked from the outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saga import SagaRunner
from saga.demo.embedder import DIMENSION, embed
from saga.demo.workdir import MARKER
from saga.diagram import EXTENSIONS

DEFINITIONS = ("create", "update", "delete", "create_many", "update_many", "delete_many")


def saga_command(*args: str) -> list[str]:
    """The installed console script if there is one, else the same entry point."""
    script = Path(sys.executable).with_name("saga")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from saga.cli import main; main()", *args]


def run_saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        saga_command(*args), capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workdir = tmp_path_factory.mktemp("demo") / "work"
    done = run_saga("demo", "--workdir", str(workdir), "--records", "50")
    return workdir, done


def test_demo_exits_0(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, done = demo_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stores agree" in done.stdout
    assert "exit 0" in done.stdout


def test_summary_counts_add_up(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    workdir, _ = demo_run
    summary = json.loads((workdir / "summary.json").read_text())
    buckets = ("written", "refused", "compensated", "recovered", "unresolved")
    assert sum(summary[b] for b in buckets) == summary["attempted"]
    assert summary["attempted"] >= 50  # every record is created once, some also updated/deleted
    assert summary["unresolved"] == summary["leftovers"] == summary["recovery_failed"] == 0
    # Every kind of fault happened: refused input, compensations, sagas killed mid-flight.
    assert summary["refused"] >= 1
    assert summary["compensated"] >= 1
    assert summary["recovered"] >= 1
    assert summary["in_flight_before_recovery"] >= 1
    assert summary["rows"] == summary["vectors"] == summary["expected_rows"]
    assert summary["ok"] is True


def test_final_reconcile_is_clean(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    workdir, _ = demo_run
    with SagaRunner.open(
        workdir / "knowledge.db", chroma_path=workdir / "chroma", create=False
    ) as runner:
        assert runner.in_flight() == []
        report = runner.reconcile(fix=False)
        assert report.clean, report
        assert report.orphan_vectors == report.missing_vectors == report.drift == ()
        assert report.rows_checked == report.vectors_checked > 0


def test_diagrams_and_saga_picture_written(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    workdir, _ = demo_run
    diagrams = workdir / "diagrams"
    for name in DEFINITIONS:
        assert (diagrams / f"{name}.{EXTENSIONS['mermaid']}").read_text().count("stateDiagram-v2")
    assert (diagrams / "README.md").exists()
    (picture,) = diagrams.glob("saga-recovered-*.mmd")
    text = picture.read_text()
    assert "stateDiagram-v2" in text
    # A recovered saga took the forward path to the end.
    assert "[*] --> pending: begin (step 1)" in text
    assert "class synced s_active" in text


def test_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    done = run_saga("demo", "--workdir", str(precious), "--records", "50")
    assert done.returncode == 2
    assert "refusing to wipe" in done.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert not (precious / MARKER).exists()


def test_embedder_is_deterministic_across_processes() -> None:
    """The worker subprocess must embed exactly as its parent (``hash()`` is salted)."""
    text = "Serialize obj to a JSON formatted str."
    vector = embed(text)
    assert len(vector) == DIMENSION
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-9
    code = f"from saga.demo.embedder import embed; print(embed({text!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == str(vector)
