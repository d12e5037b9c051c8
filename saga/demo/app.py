"""The demo's application: a code knowledge base in one SQLite file and embedded Chroma.

The tables are created with plain SQL, as an application would; the library only
tracks them. Their CHECK constraints are real rules of the application, and one of them
is what the demo's SQLite fault trips over.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs

from saga import RetryPolicy, SagaRunner
from saga.demo.embedder import DIMENSION

SCHEMA = """
CREATE TABLE summaries (
    id        TEXT PRIMARY KEY,          -- qualified name, e.g. json.dumps
    module    TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('module', 'class', 'function', 'method')),
    summary   TEXT NOT NULL CHECK (length(summary) > 0),
    revision  INTEGER NOT NULL DEFAULT 1,
    vector_id TEXT
);
CREATE TABLE glossary (
    term       TEXT PRIMARY KEY,
    definition TEXT NOT NULL CHECK (length(definition) > 0),
    source     TEXT NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1,
    vector_id  TEXT
);
CREATE TABLE constraints (
    id        INTEGER PRIMARY KEY,
    subject   TEXT NOT NULL,
    rule      TEXT NOT NULL CHECK (length(rule) > 0),
    severity  TEXT NOT NULL CHECK (severity IN ('must', 'should', 'note')),
    revision  INTEGER NOT NULL DEFAULT 1,
    vector_id TEXT
);
"""


@attrs.frozen
class Table:
    """How one application table is tracked: its key column."""

    name: str
    key: str


TABLES = (Table("summaries", "id"), Table("glossary", "term"), Table("constraints", "id"))


@attrs.frozen
class Paths:
    """Where the demo's stores live inside the work folder."""

    workdir: Path

    @property
    def db(self) -> Path:
        return self.workdir / "knowledge.db"

    @property
    def chroma(self) -> Path:
        return self.workdir / "chroma"

    @property
    def diagrams(self) -> Path:
        return self.workdir / "diagrams"


def create_tables(db: Path) -> None:
    """Create the application's tables with plain SQL (no library involved)."""
    conn = sqlite3.connect(db)
    try:
        conn.executescript(SCHEMA)
        conn.commit()
    finally:
        conn.close()


def open_runner(paths: Paths, retry: RetryPolicy | None = None) -> SagaRunner:
    """A runner on the demo's SQLite file and embedded Chroma, every table tracked.

    Every process calls this at start-up: tracking again with the same configuration
    is a no-op.
    """
    runner = SagaRunner.open(paths.db, chroma_path=paths.chroma, retry=retry)
    try:
        for table in TABLES:
            runner.track(table.name, key=table.key, dimension=DIMENSION)
    except BaseException:
        runner.close()
        raise
    return runner
