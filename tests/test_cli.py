"""The operator's CLI: every command's text and --json output, exit codes, bad usage."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import chromadb
import pytest
from click.testing import CliRunner

from saga import SagaRunner
from saga.cli import cli
from tests.test_reconcile import write
from tests.test_recovery import ROOT, crash_once, open_runner


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """Stores where a writer died right after recording `pending` (3 rows before)."""
    return crash_once(tmp_path / "stores", "create", "after:pending=kill")


def stores(folder: Path) -> list[str]:
    return ["--db", str(folder / "app.db"), "--chroma-path", str(folder / "chroma")]


def saga_ids(folder: Path) -> list[str]:
    conn = sqlite3.connect(folder / "app.db")
    try:
        return [r[0] for r in conn.execute("SELECT saga_id FROM saga_instances ORDER BY rowid")]
    finally:
        conn.close()


def plant_orphan(folder: Path, vector_id: str) -> None:
    """A vector no row backs, written as another program would: straight into Chroma."""
    client = chromadb.PersistentClient(path=str(folder / "chroma"))
    client.get_collection("notes").upsert(ids=[vector_id], embeddings=[[1.0] * 4])
    # chromadb keeps one client per folder in the process; the CLI's runner opens its
    # own, with the adapter's settings, which must not meet this one.
    client.clear_system_cache()


def test_status_text_and_json(crashed: Path) -> None:
    code, text = run("status", "--db", str(crashed / "app.db"))
    assert code == 1  # a saga is in flight
    assert "notes" in text
    assert "1 in flight" in text
    code, out = run("status", "--db", str(crashed / "app.db"), "--json")
    data = json.loads(out)
    assert code == 1
    assert data["by_state"] == {"pending": 1, "synced": 3}
    assert data["oldest_in_flight"]["state"] == "pending"


def test_show_text_json_and_diagram(crashed: Path, tmp_path: Path) -> None:
    pending = saga_ids(crashed)[-1]
    code, text = run("show", pending, "--db", str(crashed / "app.db"))
    assert code == 0
    assert "state: pending" in text
    assert "begin" in text
    code, out = run("show", pending, "--db", str(crashed / "app.db"), "--json")
    data = json.loads(out)
    assert data["payload"]["operation"] == "create"
    assert data["payload"]["keys"] == [11]
    assert [h["to_state"] for h in data["history"]] == ["pending"]
    picture = tmp_path / "saga.mmd"
    code, _ = run("show", pending, "--db", str(crashed / "app.db"), "--diagram", str(picture))
    assert code == 0
    assert "stateDiagram-v2" in picture.read_text()


def test_show_unknown_saga_is_a_usage_error(crashed: Path) -> None:
    code, _ = run("show", "no-such-saga", "--db", str(crashed / "app.db"))
    assert code == 2


def test_recover_json_then_status_clean(crashed: Path) -> None:
    code, out = run("recover", *stores(crashed), "--older-than", "0s", "--json")
    assert code == 0  # exit 0: nothing left unsettled
    data = json.loads(out)
    assert (data["resumed"], data["errors"]) == (1, {})
    assert run("status", "--db", str(crashed / "app.db"))[0] == 0


def test_recover_dry_run_and_compensate_policy(crashed: Path) -> None:
    code, text = run("recover", *stores(crashed), "--dry-run", "--policy", "compensate")
    assert code == 0
    assert "dry run" in text
    assert "compensated" in text
    assert run("status", "--db", str(crashed / "app.db"))[0] == 1  # nothing changed
    code, out = run("recover", *stores(crashed), "--policy", "compensate", "--json")
    assert json.loads(out)["compensated"] == 1


def test_recover_skips_young_sagas(crashed: Path) -> None:
    code, out = run("recover", *stores(crashed), "--older-than", "1h", "--json")
    assert code == 0
    assert json.loads(out)["resumed"] == 0


def test_reconcile_exit_codes_and_fix(tmp_path: Path) -> None:
    folder = crash_once(tmp_path / "s", "create", "after:synced=kill")
    with open_runner(folder) as runner:
        write(runner, 40)
    plant_orphan(folder, "orphan-1")
    code, out = run("reconcile", *stores(folder), "--json")
    assert code == 1
    assert json.loads(out)["orphan_vectors"] == ["orphan-1"]
    code, text = run("reconcile", *stores(folder), "--fix")
    assert code == 0
    assert "stores agree" in text
    assert run("reconcile", *stores(folder))[0] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["recover", "--db", "{db}", "--chroma-path", "{chroma}", "--older-than", "5x"],
        ["recover", "--db", "{db}", "--chroma-path", "{chroma}", "--policy", "sideways"],
        ["recover", "--db", "{db}"],  # no Chroma named
        ["recover", "--db", "{db}", "--chroma-path", "{chroma}", "--chroma-host", "h"],
        ["reconcile", "--db", "{db}", "--chroma-host", "127.0.0.1"],  # no port
        ["status"],
        ["status", "--db", "{db}", "--bogus"],
        ["nonsense"],
    ],
    ids=[
        "bad-duration",
        "bad-policy",
        "no-chroma",
        "two-chromas",
        "no-port",
        "no-db",
        "bad-flag",
        "bad-command",
    ],
)
def test_bad_usage_exits_2(crashed: Path, args: list[str]) -> None:
    filled = [a.format(db=crashed / "app.db", chroma=crashed / "chroma") for a in args]
    assert run(*filled)[0] == 2


def test_missing_database_is_refused_and_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for args in (
        ["status", "--db", str(typo)],
        ["recover", "--db", str(typo), "--chroma-path", str(tmp_path)],
        ["reconcile", "--db", str(typo), "--chroma-path", str(tmp_path)],
    ):
        code, _ = run(*args)
        assert code == 2
        assert not typo.exists()


def test_non_saga_databases_are_refused_untouched(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database")
    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for path in (text_file, plain):
        assert run("status", "--db", str(path))[0] == 2
    conn = sqlite3.connect(plain)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"t"}  # no saga tables were created


def test_the_console_script_runs(crashed: Path) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "saga"),
            "status",
            "--db",
            str(crashed / "app.db"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["in_flight"] == 1


def test_library_use_after_cli_recovery(crashed: Path) -> None:
    assert run("recover", *stores(crashed))[0] == 0
    with SagaRunner.open(crashed / "app.db", chroma_path=crashed / "chroma") as runner:
        runner.track("notes")
        assert runner.reconcile().clean
