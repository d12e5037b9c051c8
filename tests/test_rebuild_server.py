"""Rebuild into a `chroma run` server from an embedded history: the way from embedded
Chroma to a server (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga import SagaRunner
from tests.chroma_server import ChromaServer
from tests.conftest import vec

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.chroma_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path_factory.mktemp("rebuild-server") / "data") as running:
        yield running


def _everything(runner: SagaRunner) -> dict[str, Any]:
    """Every vector, its embedding as float32 bytes: a server sends float32 values as
    short decimals (54.1), the embedded client their exact doubles (54.0999984...)."""
    ids = [r.id for page in runner.stores.vectors.iter_records("notes", 1000) for r in page]
    found = runner.stores.vectors.get("notes", ids, embeddings=True)
    return {
        vid: (array("f", r.embedding or ()).tobytes(), r.document, r.metadata)
        for vid, r in found.items()
    }


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
    before = _everything(runner)
    runner.close()

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "saga",
            "rebuild",
            "--db",
            str(db_path),
            "--chroma-host",
            server.host,
            "--chroma-port",
            str(server.port),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    with SagaRunner.open(db_path, chroma_host=server.host, chroma_port=server.port) as served:
        assert _everything(served) == before
        assert served.reconcile().clean
        served.create("notes", {"id": 100, "body": "new"}, embedding=vec(100))  # and on
        assert served.reconcile().clean
