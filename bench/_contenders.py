"""The contenders: the unprotected dual write (the baseline), the floor and the saga.

Each opens fresh stores in its own folder, writes, and closes. ``supports`` says which
operations it has; LangChain and DBOS (``bench.alternatives``) only create.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bench._data import TABLE, Record
from bench._stores import app_connection, chroma_client, make_app_db, notes_collection

ALL_OPS = frozenset({"create", "update", "delete", "batch"})


class Contender(Protocol):
    name: str
    supports: frozenset[str]

    def open(self, folder: Path) -> None: ...

    def create(self, record: Record) -> None: ...

    def update(self, record: Record) -> None: ...

    def delete(self, key: int) -> None: ...

    def create_batch(self, batch: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class Unprotected:
    """The same Chroma upsert and the same SQLite INSERT/commit, with no saga: the code
    a user has today, storing the caller's metadata only.

    The collection object is looked up once and reused (the best the library can do);
    SQLite is WAL with ``synchronous=FULL``, one commit per write.
    """

    name = "unprotected"
    supports = ALL_OPS

    def metadata(self, record: Record) -> dict[str, Any]:
        return record.metadata

    def open(self, folder: Path) -> None:
        self.conn: sqlite3.Connection = app_connection(make_app_db(folder / "app.db"))
        self.client: Any = chroma_client(folder / "chroma")
        self.collection: Any = notes_collection(self.client)
        self.max_batch = int(self.client.get_max_batch_size())

    def create(self, record: Record) -> None:
        self.collection.upsert(
            ids=[record.vector_id],
            embeddings=[record.embedding],
            documents=[record.document],
            metadatas=[self.metadata(record)],
        )
        self.conn.execute(
            f"INSERT INTO {TABLE} (id, body, vector_id) VALUES (?, ?, ?)",
            (record.key, record.body, record.vector_id),
        )
        self._commit()

    def update(self, record: Record) -> None:
        self.collection.upsert(
            ids=[record.vector_id],
            embeddings=[record.embedding],
            documents=[record.document],
            metadatas=[self.metadata(record)],
        )
        self.conn.execute(f"UPDATE {TABLE} SET body = ? WHERE id = ?", (record.body, record.key))
        self._commit()

    def delete(self, key: int) -> None:
        self.collection.delete(ids=[f"{TABLE}:{key}"])
        self.conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (key,))
        self._commit()

    def create_batch(self, batch: Sequence[Record]) -> None:
        for start in range(0, len(batch), self.max_batch):
            part = batch[start : start + self.max_batch]
            self.collection.upsert(
                ids=[r.vector_id for r in part],
                embeddings=[r.embedding for r in part],
                documents=[r.document for r in part],
                metadatas=[self.metadata(r) for r in part],
            )
        self.conn.executemany(
            f"INSERT INTO {TABLE} (id, body, vector_id) VALUES (?, ?, ?)",
            [(r.key, r.body, r.vector_id) for r in batch],
        )
        self._commit()

    def _commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


class UnprotectedLinked(Unprotected):
    """The unprotected write storing two link keys beside the caller's metadata (the
    bench's baseline before issue 17): the second view, for comparison."""

    name = "unprotected+links"

    def metadata(self, record: Record) -> dict[str, Any]:
        return record.linked_metadata()


class Floor(Unprotected):
    """The unprotected write plus one durable intent commit before Chroma is touched.

    The least any crash-safe dual write pays: the intent (here only the vector ids, so
    a recovery could only undo) is committed before the upsert, and dropped in the same
    commit as the row. It measures what one more ``synchronous=FULL`` commit costs on
    this machine, i.e. how close to the unprotected write a saga can get at all.
    """

    name = "floor"

    def open(self, folder: Path) -> None:
        super().open(folder)
        self.conn.execute("CREATE TABLE intent (id INTEGER PRIMARY KEY, vector_ids TEXT)")
        self.conn.commit()
        self._open_intent: int | None = None

    def _intent(self, vector_ids: list[str]) -> None:
        cursor = self.conn.execute(
            "INSERT INTO intent (vector_ids) VALUES (?)", (",".join(vector_ids),)
        )
        self.conn.commit()
        self._open_intent = cursor.lastrowid

    def _commit(self) -> None:
        self.conn.execute("DELETE FROM intent WHERE id = ?", (self._open_intent,))
        self.conn.commit()

    def create(self, record: Record) -> None:
        self._intent([record.vector_id])
        super().create(record)

    def update(self, record: Record) -> None:
        self._intent([record.vector_id])
        super().update(record)

    def delete(self, key: int) -> None:
        self._intent([f"{TABLE}:{key}"])
        super().delete(key)

    def create_batch(self, batch: Sequence[Record]) -> None:
        self._intent([r.vector_id for r in batch])
        super().create_batch(batch)


class Saga:
    """The library: ``SagaRunner.open`` on an embedded Chroma, default options."""

    name = "saga"
    supports = ALL_OPS

    def open(self, folder: Path) -> None:
        from saga import SagaRunner  # noqa: PLC0415

        db = make_app_db(folder / "app.db")
        self.runner = SagaRunner.open(db, chroma_path=folder / "chroma")
        self.runner.track(TABLE)

    def create(self, record: Record) -> None:
        self.runner.create(
            TABLE,
            {"id": record.key, "body": record.body},
            embedding=record.embedding,
            document=record.document,
            metadata=record.metadata,
        )

    def update(self, record: Record) -> None:
        self.runner.update(
            TABLE,
            record.key,
            {"body": record.body},
            embedding=record.embedding,
            document=record.document,
            metadata=record.metadata,
        )

    def delete(self, key: int) -> None:
        self.runner.delete(TABLE, key)

    def create_batch(self, batch: Sequence[Record]) -> None:
        self.runner.create_many(
            TABLE,
            [
                {
                    "row": {"id": r.key, "body": r.body},
                    "embedding": r.embedding,
                    "document": r.document,
                    "metadata": r.metadata,
                }
                for r in batch
            ],
        )

    def close(self) -> None:
        self.runner.close()
