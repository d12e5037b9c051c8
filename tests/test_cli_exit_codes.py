"""The CLI's exit code 3 (a store unavailable or held, with what to do) and `saga show`
by a unique prefix of the saga id."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from saga import SagaRunner
from tests.conftest import run_saga, vec


def test_an_embedded_folder_held_by_the_application_exits_3_saying_what_to_do(
    runner: SagaRunner, db_path: Path, chroma_path: Path
) -> None:
    runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1))
    for command in ("recover", "reconcile"):
        done = run_saga(command, "--db", str(db_path), "--chroma-path", str(chroma_path))
        assert done.returncode == 3, done.stderr
        assert "runner.recover()" in done.stderr
        assert "chroma run --path" in done.stderr


def test_a_server_that_is_not_there_exits_3(runner: SagaRunner, db_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_saga(
        "recover", "--db", str(db_path), "--chroma-host", "127.0.0.1", "--chroma-port", str(port)
    )
    assert done.returncode == 3, done.stderr
    assert "unavailable" in done.stderr


def test_show_takes_a_unique_prefix_of_the_saga_id(runner: SagaRunner, db_path: Path) -> None:
    first = runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1)).saga_id
    runner.create("notes", {"id": 2, "body": "b"}, embedding=vec(2))
    runner.create("notes", {"id": 3, "body": "b"}, embedding=vec(3))

    done = run_saga("show", first[:8], "--db", str(db_path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["saga_id"] == first

    ambiguous = run_saga("show", "", "--db", str(db_path), "--json")
    assert ambiguous.returncode == 2
    assert "begins several saga ids" in ambiguous.stderr

    unknown = run_saga("show", "zzzz", "--db", str(db_path))
    assert unknown.returncode == 2
    assert "no saga 'zzzz'" in unknown.stderr
