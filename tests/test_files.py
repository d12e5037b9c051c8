"""Files and permissions: what the library creates is its owner's only, and the CLI
never creates (or changes) a database by accident.

- A database file the library creates is 0600, and so are SQLite's ``-wal`` and ``-shm``
  beside it (SQLite gives them the database's mode); the folders it creates (the
  database's parent, the Chroma folder) are 0700. Checked with ``os.stat`` on the real
  files after a write, under a permissive umask too: the library must not rely on it.
- ``saga status|show|recover|reconcile`` on a path that is not there, not a SQLite
  database, or not a saga database exits 2 with a message that says which, and leaves
  the folder as it was: no empty database, no ``-wal``/``-shm``/``-journal``, no Chroma
  folder.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from saga import RetryPolicy, SagaRunner
from saga.cli import cli
from tests.conftest import make_db, vec

ROOT = Path(__file__).resolve().parent.parent
SAGA_SCRIPT = ROOT / ".venv" / "bin" / "saga"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run with this umask (0o000: everything the library creates would be 0666/0777
    unless it asks for less)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def write_one_note(runner: SagaRunner) -> None:
    with runner.stores.log.db.write() as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, vector_id TEXT)")
    runner.track("notes")
    runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1), document="x")


# -- what the library creates ---------------------------------------------------------------


def test_a_database_the_library_creates_is_owner_only(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "new" / "deeper" / "app.db"  # the folders do not exist yet either
    with SagaRunner.open(db, retry=RetryPolicy.disabled()) as runner:
        write_one_note(runner)
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists()
        assert shm.exists()  # while a connection is open, in WAL mode

        assert mode(db) == 0o600
        assert mode(wal) == 0o600
        assert mode(shm) == 0o600
        assert mode(db.parent) == 0o700
        assert mode(db.parent.parent) == 0o700  # every folder it made, not only the last


def test_a_chroma_folder_the_library_creates_is_owner_only(tmp_path: Path, umask: int) -> None:
    make_db(tmp_path / "app.db")
    default = tmp_path / "app.db.chroma"
    with SagaRunner.open(tmp_path / "app.db", retry=RetryPolicy.disabled()) as runner:
        runner.track("notes")
        runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
        assert mode(default) == 0o700  # the default folder, beside the database
        lock = default / ".saga-embedded.lock"
        assert mode(lock) == 0o600

    chosen = tmp_path / "deep" / "deeper" / "chroma"
    with SagaRunner.open(
        tmp_path / "app.db", chroma_path=chosen, retry=RetryPolicy.disabled()
    ) as runner:
        runner.create("notes", {"id": 2, "body": "y"}, embedding=vec(2))
        assert mode(chosen) == 0o700
        assert mode(chosen.parent) == 0o700
        assert mode(chosen.parent.parent) == 0o700


def test_an_existing_database_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    db = make_db(tmp_path / "app.db")
    db.chmod(0o640)  # the application's choice, not the library's to change
    with SagaRunner.open(db, retry=RetryPolicy.disabled()) as runner:
        runner.track("notes")
        runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
    assert mode(db) == 0o640


# -- the CLI on paths that are not saga databases ------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def listing(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (recursively), with a digest of each file."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def stores(tmp_path: Path) -> Path:
    """A real saga database and Chroma folder, with one note (a correct target)."""
    folder = tmp_path / "stores"
    folder.mkdir()
    make_db(folder / "app.db")
    with SagaRunner.open(
        folder / "app.db", chroma_path=folder / "chroma", retry=RetryPolicy.disabled()
    ) as runner:
        runner.track("notes")
        runner.create("notes", {"id": 1, "body": "x"}, embedding=vec(1))
    return folder


def commands(db: Path, chroma: Path) -> dict[str, list[str]]:
    """Every command that takes --db, aimed at ``db``."""
    return {
        "status": ["status", "--db", str(db)],
        "status --json": ["status", "--db", str(db), "--json"],
        "show": ["show", "00000000-0000-0000-0000-000000000000", "--db", str(db)],
        "recover": ["recover", "--db", str(db), "--chroma-path", str(chroma)],
        "recover --dry-run": [
            "recover",
            "--db",
            str(db),
            "--chroma-path",
            str(chroma),
            "--dry-run",
        ],
        "reconcile": ["reconcile", "--db", str(db), "--chroma-path", str(chroma)],
        "reconcile --fix": ["reconcile", "--db", str(db), "--chroma-path", str(chroma), "--fix"],
    }


COMMANDS = list(commands(Path("x"), Path("y")))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["beside", "in a missing folder"])
def test_a_typo_in_the_database_path_is_refused_and_creates_nothing(
    stores: Path, command: str, where: str
) -> None:
    typo = stores / ("ap.db" if where == "beside" else "missing/dir/ap.db")
    before = listing(stores)

    result = invoke(*commands(typo, stores / "chroma")[command])

    assert result.exit_code == 2, result.output
    assert "no database" in result.stderr
    assert str(typo) in result.stderr
    assert listing(stores) == before  # no ap.db, -wal, -shm, -journal, missing/, chroma


@pytest.mark.parametrize("command", ["recover", "reconcile"])
def test_a_typo_in_the_chroma_path_is_refused_and_creates_nothing(
    stores: Path, command: str
) -> None:
    before = listing(stores)

    result = invoke(command, "--db", str(stores / "app.db"), "--chroma-path", str(stores / "chrom"))

    assert result.exit_code == 2, result.output
    assert "no Chroma folder" in result.stderr
    assert listing(stores) == before


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "content", [b"hello, not a database\n", b"SQLite format 2\x00" + b"\x00" * 100, b"\x00" * 4096]
)
def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(
    stores: Path, command: str, content: bytes
) -> None:
    other = stores / "notes.txt"
    other.write_bytes(content)
    before = listing(stores)

    result = invoke(*commands(other, stores / "chroma")[command])

    assert result.exit_code == 2, result.output
    assert "is not a SQLite database" in result.stderr
    assert listing(stores) == before


def plain_sqlite(path: Path) -> Path:
    """An application's database that holds no saga log (rollback journal, as made)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO things (name) VALUES ('a')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sqlite_database_without_a_saga_log_is_refused(stores: Path, command: str) -> None:
    other = plain_sqlite(stores / "other.db")

    result = invoke(*commands(other, stores / "chroma")[command])

    assert result.exit_code == 2, result.output
    assert f"{other} is not a saga database" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_database_is_not_modified(stores: Path, command: str) -> None:
    other = plain_sqlite(stores / "other.db")
    before = listing(stores)

    result = invoke(*commands(other, stores / "chroma")[command])

    assert result.exit_code == 2, result.output
    assert listing(stores) == before  # byte for byte
    conn = sqlite3.connect(other)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["status", "recover", "reconcile"])
def test_an_empty_file_is_refused_and_left_empty(stores: Path, command: str) -> None:
    empty = stores / "empty.db"
    empty.touch()
    before = listing(stores)

    result = invoke(*commands(empty, stores / "chroma")[command])

    assert result.exit_code == 2, result.output
    assert listing(stores) == before
    assert empty.stat().st_size == 0


def test_a_directory_given_as_the_database_is_refused(stores: Path) -> None:
    before = listing(stores)

    result = invoke("status", "--db", str(stores / "chroma"))

    assert result.exit_code == 2
    assert "directory" in result.output
    assert listing(stores) == before


@pytest.mark.skipif(not SAGA_SCRIPT.exists(), reason="the console script is not installed")
def test_the_installed_saga_command_refuses_a_typo_and_creates_nothing(stores: Path) -> None:
    typo = stores / "ap.db"
    before = listing(stores)

    done = subprocess.run(
        [str(SAGA_SCRIPT), "status", "--db", str(typo)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert f"saga: db: no database at {typo}" in done.stderr
    assert listing(stores) == before
