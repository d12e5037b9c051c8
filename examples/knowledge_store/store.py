"""``KnowledgeStore``: the application code, as a user of the library writes it."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from saga import SagaRunner

DIMENSION = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    vector_id TEXT
);
CREATE TABLE IF NOT EXISTS constraints (
    id INTEGER PRIMARY KEY,
    summary_id INTEGER NOT NULL REFERENCES summaries (id),
    text TEXT NOT NULL,
    vector_id TEXT
);
CREATE TABLE IF NOT EXISTS glossary (
    term TEXT NOT NULL PRIMARY KEY,
    meaning TEXT NOT NULL,
    vector_id TEXT
);
"""


def embed(text: str) -> list[float]:
    """A stand-in for a real embedding model (offline, deterministic): hashed words."""
    vector = [0.0] * DIMENSION
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % DIMENSION] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class KnowledgeStore:
    """Summaries, their constraints and a glossary, in SQLite with their vectors."""

    def __init__(self, runner: SagaRunner, db_path: str | os.PathLike[str]) -> None:
        self.runner = runner
        self.db_path = db_path

    @classmethod
    def open(
        cls, db_path: str | os.PathLike[str], chroma_path: str | os.PathLike[str]
    ) -> KnowledgeStore:
        conn = sqlite3.connect(db_path)  # the application owns its tables
        conn.executescript(SCHEMA)
        conn.close()
        runner = SagaRunner.open(db_path, chroma_path=chroma_path)
        runner.track("summaries", dimension=DIMENSION)
        runner.track("constraints", dimension=DIMENSION)
        runner.track("glossary", key="term", dimension=DIMENSION)
        return cls(runner, db_path)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_summary(
        self,
        title: str,
        body: str,
        constraints: Sequence[str],
        terms: Mapping[str, str] | None = None,
    ) -> int:
        """One summary with its constraints and new glossary terms: all or nothing."""
        with self.runner.atomic() as unit:
            summary_id = unit.create(
                "summaries",
                {"title": title, "body": body},
                embedding=embed(f"{title} {body}"),
                document=body,
                metadata={"title": title},
            )
            for text in constraints:
                unit.create(
                    "constraints",
                    {"summary_id": summary_id, "text": text},
                    embedding=embed(text),
                    document=text,
                    metadata={"summary_id": summary_id},
                )
            terms = terms or {}
            known = self._terms_stored(list(terms))
            for term, meaning in terms.items():
                vector = {"embedding": embed(f"{term} {meaning}"), "document": meaning}
                if term in known:  # a term seen before gets its new meaning
                    unit.update("glossary", term, {"meaning": meaning}, **vector)
                else:
                    unit.create("glossary", {"term": term, "meaning": meaning}, **vector)
        assert isinstance(summary_id, int)
        return summary_id

    def revise_summary(self, summary_id: int, body: str, constraints: Sequence[str]) -> None:
        """A new body and a new set of constraints, replacing the old ones at once."""
        old = [row["id"] for row in self.constraints_of(summary_id)]
        with self.runner.atomic() as unit:
            unit.update(
                "summaries", summary_id, {"body": body}, embedding=embed(body), document=body
            )
            for constraint_id in old:
                unit.delete("constraints", constraint_id)
            for text in constraints:
                unit.create(
                    "constraints",
                    {"summary_id": summary_id, "text": text},
                    embedding=embed(text),
                    document=text,
                    metadata={"summary_id": summary_id},
                )

    def remove_summary(self, summary_id: int) -> None:
        """A summary and its constraints (children first: the foreign key holds)."""
        old = [row["id"] for row in self.constraints_of(summary_id)]
        with self.runner.atomic() as unit:
            for constraint_id in old:
                unit.delete("constraints", constraint_id)
            unit.delete("summaries", summary_id)

    def _terms_stored(self, terms: list[str]) -> set[str]:
        conn = sqlite3.connect(self.db_path)
        try:
            marks = ",".join("?" * len(terms))
            rows = conn.execute(f"SELECT term FROM glossary WHERE term IN ({marks})", terms)
            return {row[0] for row in rows}
        finally:
            conn.close()

    def constraints_of(self, summary_id: int) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db_path)  # the application's own reads
        try:
            rows = conn.execute(
                "SELECT id, text FROM constraints WHERE summary_id = ? ORDER BY id",
                (summary_id,),
            ).fetchall()
        finally:
            conn.close()
        return [{"id": row[0], "text": row[1]} for row in rows]

    def search(self, table: str, text: str, n_results: int = 3) -> list[dict[str, Any]]:
        """The nearest committed rows of ``table`` (never a half-written one)."""
        hits = self.runner.query(table, embedding=embed(text), n_results=n_results)
        return [hit.row for hit in hits]
