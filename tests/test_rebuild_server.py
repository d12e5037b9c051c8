"""Rebuild into a `chroma run` server from an embedded history: the way from embedded
Chroma to a server (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from saga import SagaRunner
from tests.chroma_server import ChromaServer
from tests.conftest import run_saga, stored_vectors, vec

pytestmark = pytest.mark.chroma_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("rebuild-server") / "data") as running:
        yield running


def test_an_embedded_history_is_rebuilt_into_a_server(
    runner: SagaRunner, db_path: Path, server: ChromaServer
) -> None:
    runner.create_many(
        "notes",
        [
            {
                "row": {"id": k, "body": f"n{k}"},
                "embedding": vec(k),
                "document": f"d{k}",
                "metadata": {"k": k, "f": k / 3},
            }
            for k in range(1, 61)
        ],
    )
    runner.update("notes", 2, {"body": "u"}, embedding=vec(99), metadata={"new": True})
    runner.delete("notes", 3)
    before = stored_vectors(runner)
    runner.close()

    done = run_saga(
        "rebuild",
        "--db",
        str(db_path),
        "--chroma-host",
        server.host,
        "--chroma-port",
        str(server.port),
        "--json",
    )
    assert done.returncode == 0, done.stderr

    with SagaRunner.open(db_path, chroma_host=server.host, chroma_port=server.port) as served:
        assert stored_vectors(served) == before
        assert served.reconcile().clean
        served.create("notes", {"id": 100, "body": "new"}, embedding=vec(100))  # and on
        assert served.reconcile().clean
