"""A writer process for the atomic-unit crash tests (``tests/test_atomic_crash.py``).

``python -m tests._unit_worker seed FOLDER``: summary 1 with constraint 1.
``python -m tests._unit_worker unit FOLDER``: one unit over two tables: a new summary
(key assigned), a constraint of it (key assigned), summary 1 updated, constraint 1
deleted. Failpoints come from SAGA_FAILPOINTS (``failpoints.load_from_env()``).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from saga import RetryPolicy, SagaRunner, failpoints

SCHEMA = """
CREATE TABLE summaries (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, vector_id TEXT);
CREATE TABLE constraints (
    id INTEGER PRIMARY KEY,
    summary_id INTEGER NOT NULL REFERENCES summaries (id),
    text TEXT NOT NULL,
    vector_id TEXT
);
"""


def open_runner(folder: Path) -> SagaRunner:
    db = folder / "app.db"
    if not db.exists():
        conn = sqlite3.connect(db)
        conn.executescript(SCHEMA)
        conn.close()
    runner = SagaRunner.open(db, chroma_path=folder / "chroma", retry=RetryPolicy.disabled())
    runner.track("summaries", dimension=3)
    runner.track("constraints", dimension=3)
    return runner


def seed(runner: SagaRunner) -> None:
    runner.create(
        "summaries", {"body": "old"}, embedding=[1.0, 0.5, 1 / 3], document="old", metadata={"v": 1}
    )
    runner.create(
        "constraints",
        {"summary_id": 1, "text": "c1"},
        embedding=[0.25, 1 / 7, 1.0],
        document="c1",
        metadata={"of": 1},
    )


def unit(runner: SagaRunner) -> None:
    with runner.atomic() as work:
        sid = work.create("summaries", {"body": "new"}, embedding=[2.0, 0.1, 0.2], document="new")
        work.create(
            "constraints",
            {"summary_id": sid, "text": "c2"},
            embedding=[0.3, 2.0, 0.4],
            document="c2",
        )
        work.update(
            "summaries", 1, {"body": "changed"}, embedding=[3.0, 0.3, 0.1], metadata={"w": 2}
        )
        work.delete("constraints", 1)


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    mode, folder = argv[0], Path(argv[1])
    with open_runner(folder) as runner:
        seed(runner) if mode == "seed" else unit(runner)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
