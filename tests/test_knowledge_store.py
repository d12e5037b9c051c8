"""The example application (``examples/knowledge_store``), run as a user runs it, and
SIGKILLed in the middle of its atomic units, then recovered with the real CLI.

After recovery, whatever the moment of the kill: no saga in flight, the stores agree,
and every summary holds exactly its first two constraints or exactly its revised one,
its glossary term is there, and no constraint or term exists without its summary
(removed summaries aside, whose terms stay by design).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from examples.knowledge_store import KnowledgeStore
from tests.conftest import run_saga

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = (
    "from saga import failpoints; failpoints.load_from_env(); "
    "from examples.knowledge_store.__main__ import main; raise SystemExit(main())"
)


def run_app(folder: Path, summaries: int, failpoints: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGA_FAILPOINTS": failpoints}
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, "--db", str(folder / "kg.db"),
         "--chroma", str(folder / "chroma"), "--summaries", str(summaries)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip


def check_all_or_nothing(folder: Path) -> int:
    """The application's invariants, read with plain SQL; returns the summaries seen."""
    conn = sqlite3.connect(folder / "kg.db")
    try:
        summaries = dict(conn.execute("SELECT id, title FROM summaries").fetchall())
        constraints: dict[int, list[str]] = {}
        for summary_id, text in conn.execute("SELECT summary_id, text FROM constraints"):
            constraints.setdefault(summary_id, []).append(text)
        terms = {row[0] for row in conn.execute("SELECT term FROM glossary")}
    finally:
        conn.close()
    assert set(constraints) <= set(summaries), "a constraint without its summary"
    for summary_id, title in summaries.items():
        n = int(title.split()[1])
        first = [f"module {n} never writes partial records", f"module {n} validates input"]
        assert sorted(constraints.get(summary_id, [])) in (first, ["streams only"]), title
        assert f"term-{n}" in terms, title
    titles = {int(t.split()[1]) for t in summaries.values()}
    for term in terms:
        n = int(term.removeprefix("term-"))
        assert n in titles or n % 7 == 6, f"{term} without its summary"
    return len(summaries)


def recover(folder: Path, policy: str) -> None:
    where = ["--db", str(folder / "kg.db"), "--chroma-path", str(folder / "chroma")]
    done = run_saga("recover", *where, "--policy", policy, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_saga("reconcile", *where, "--json")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_runs_and_leaves_the_stores_agreeing(tmp_path: Path) -> None:
    done = run_app(tmp_path, 8)
    assert done.returncode == 0, done.stderr
    assert "constraint" in done.stdout
    assert check_all_or_nothing(tmp_path) == 7  # summary 7 (n = 6) was removed
    with KnowledgeStore.open(tmp_path / "kg.db", tmp_path / "chroma") as store:
        assert store.runner.reconcile().clean
        found = store.search("constraints", "module 3 validates input", n_results=1)
        assert found[0]["text"] == "module 3 validates input"


@pytest.mark.parametrize(
    "failpoints",
    [
        "after:reserve=kill@5",  # inside a unit's block, keys reserved
        "chroma.upsert.after=kill@7",  # the constraints' vectors written, not the rows
        "chroma.delete.after=kill@2",  # a revision's old constraints' vectors deleted
        "during:commit_rows=kill@4",
    ],
)
def test_killed_mid_unit_then_recovered_under_both_policies(
    tmp_path: Path, failpoints: str
) -> None:
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    done = run_app(crashed, 12, failpoints)
    assert done.returncode == -signal.SIGKILL, done.stderr
    for policy in ("resume", "compensate"):
        copy = tmp_path / policy
        shutil.copytree(crashed, copy)
        recover(copy, policy)
        check_all_or_nothing(copy)


def test_killed_at_random_moments_round_after_round(tmp_path: Path) -> None:
    """One folder, the application killed at a random moment each round, recovered,
    and run again (it adds summaries with the same titles: new keys each time)."""
    rng = random.Random(14)
    kills = 0
    for _round in range(4):
        env = {**os.environ}
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.knowledge_store", "--db", str(tmp_path / "kg.db"),
             "--chroma", str(tmp_path / "chroma"), "--summaries", "40"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        wanted = rng.randint(2, 20)
        for line in proc.stdout:
            if re.match(r"summary \d+:", line):
                wanted -= 1
                if wanted == 0:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
        proc.wait(timeout=60)
        recover(tmp_path, "resume")
        check_all_or_nothing(tmp_path)
    assert kills == 4
