"""What a user would pick instead: LangChain's ``index()`` and a two-step DBOS workflow.

Both are optional (the ``bench`` extra). ``unavailable()`` says why one cannot run, so
the bench skips it with the reason instead of failing. Both create only: neither has a
per-record update/delete that matches the saga's.

- LangChain: ``langchain_core.indexing.index()`` with an ``SQLRecordManager`` on a
  SQLite file (SQLAlchemy defaults) and ``langchain_chroma.Chroma`` on an embedded
  Chroma. Embeddings come from a lookup table (no model): text -> the record's vector.
  ``cleanup=None``: LangChain at its cheapest (dedup by content hash, no deletions;
  SHA-256 keys, as LangChain recommends over its SHA-1 default).
  The application's own row is not written: ``index()`` alone is a lower bound.
- DBOS: a workflow of two steps, Chroma upsert then SQLite INSERT/commit (WAL,
  ``synchronous=FULL``, as the unprotected writer), with DBOS's SQLite system database
  at its defaults. Workflow inputs are the records, checkpointed by DBOS as usual.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from bench._data import TABLE, Record
from bench._stores import app_connection, chroma_client, make_app_db, notes_collection

CREATE_ONLY = frozenset({"create", "batch"})


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if not _importable(m)]


def _record_manager_class() -> Any:
    """``SQLRecordManager``: langchain-classic, else langchain-community (being sunset)."""
    if _importable("langchain_classic"):
        return importlib.import_module("langchain_classic.indexes").SQLRecordManager
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("langchain_community.indexes._sql_record_manager")
    return module.SQLRecordManager


def unavailable(name: str) -> str | None:
    """Why the alternative ``name`` cannot run here, or None if it can."""
    if name == "langchain":
        missing = _missing("langchain_core", "langchain_chroma", "sqlalchemy")
        if _missing("langchain_classic") and _missing("langchain_community"):
            missing.append("langchain_classic (or langchain_community)")
        if missing:
            return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
        return None
    if name == "dbos":
        missing = _missing("dbos")
        if missing:
            return "not installed: dbos (pip install -e '.[bench]')"
        return _dbos_sqlite_support()
    return f"unknown alternative {name!r}"


def _dbos_sqlite_support() -> str | None:
    try:
        from dbos._sys_db_sqlite import SQLiteSystemDatabase  # noqa: F401, PLC0415
    except ImportError:
        return "this dbos has no SQLite system database (DBOS >= 2.0 needed)"
    return None


class LookupEmbeddings:
    """A deterministic ``Embeddings``: text -> the vector the record carries, no model."""

    def __init__(self) -> None:
        self.table: dict[str, list[float]] = {}

    def remember(self, records: Sequence[Record]) -> None:
        for record in records:
            self.table[record.document] = record.embedding

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[text] for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


class LangChainIndex:
    """``index()`` with an SQL record manager on SQLite and langchain-chroma."""

    name = "langchain"
    supports = CREATE_ONLY

    def open(self, folder: Path) -> None:
        from langchain_chroma import Chroma  # noqa: PLC0415
        from langchain_core.documents import Document  # noqa: PLC0415
        from langchain_core.indexing import index  # noqa: PLC0415

        self._document = Document
        self._index = index
        self.embeddings = LookupEmbeddings()
        self.client = chroma_client(folder / "chroma")
        self.store = Chroma(
            collection_name="notes",
            embedding_function=cast(Any, self.embeddings),
            client=self.client,
        )
        manager_class = _record_manager_class()
        self.manager = manager_class(f"chroma/{TABLE}", db_url=f"sqlite:///{folder / 'app.db'}")
        self.manager.create_schema()

    def _run(self, batch: Sequence[Record]) -> None:
        self.embeddings.remember(batch)
        docs = [self._document(page_content=r.document, metadata=r.metadata) for r in batch]
        result = self._index(
            docs,
            self.manager,
            self.store,
            batch_size=len(docs),
            cleanup=None,
            key_encoder="sha256",  # LangChain warns against its SHA-1 default
        )
        if result["num_added"] != len(batch):
            raise RuntimeError(f"LangChain index() added {result['num_added']} of {len(batch)}")

    def create(self, record: Record) -> None:
        self._run([record])

    def create_batch(self, batch: Sequence[Record]) -> None:
        self._run(batch)

    def update(self, record: Record) -> None:
        raise NotImplementedError

    def delete(self, key: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        engine = getattr(self.manager, "engine", None)
        if engine is not None:
            engine.dispose()


# The DBOS steps reach the stores of the current run through this (DBOS registers
# functions once per process; a fresh set of stores is opened for every run).
_TARGET: dict[str, Any] = {}


@functools.cache
def _dbos_workflows() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from dbos import DBOS  # noqa: PLC0415

    @DBOS.step()
    def upsert_vectors(rows: list[tuple[Any, ...]]) -> None:
        _TARGET["collection"].upsert(
            ids=[r[0] for r in rows],
            embeddings=[r[3] for r in rows],
            documents=[r[4] for r in rows],
            metadatas=[r[5] for r in rows],
        )

    @DBOS.step()
    def insert_rows(rows: list[tuple[Any, ...]]) -> None:
        conn: sqlite3.Connection = _TARGET["conn"]
        conn.executemany(
            f"INSERT INTO {TABLE} (id, body, vector_id) VALUES (?, ?, ?)",
            [(r[1], r[2], r[0]) for r in rows],
        )
        conn.commit()

    @DBOS.workflow()
    def dual_write(rows: list[tuple[Any, ...]]) -> None:
        upsert_vectors(rows)
        insert_rows(rows)

    @DBOS.workflow()
    def dual_write_one(
        vector_id: str, key: int, body: str, embedding: list[float], doc: str, meta: Any
    ) -> None:
        rows = [(vector_id, key, body, embedding, doc, meta)]
        upsert_vectors(rows)
        insert_rows(rows)

    return dual_write_one, dual_write


class DbosWorkflow:
    """A DBOS workflow (SQLite system database) with two steps: upsert, then INSERT."""

    name = "dbos"
    supports = CREATE_ONLY

    def open(self, folder: Path) -> None:
        from dbos import DBOS  # noqa: PLC0415

        logging.getLogger("dbos").setLevel(logging.WARNING)
        self.conn = app_connection(make_app_db(folder / "app.db"))
        self.client = chroma_client(folder / "chroma")
        _TARGET.update(conn=self.conn, collection=notes_collection(self.client))
        self.one, self.many = _dbos_workflows()
        DBOS(
            config={
                "name": "saga-bench",
                "system_database_url": f"sqlite:///{folder / 'dbos_system.sqlite'}",
                "log_level": "WARNING",
            }
        )
        DBOS.launch()

    def create(self, record: Record) -> None:
        self.one(
            record.vector_id,
            record.key,
            record.body,
            record.embedding,
            record.document,
            record.metadata,
        )

    def create_batch(self, batch: Sequence[Record]) -> None:
        self.many(
            [(r.vector_id, r.key, r.body, r.embedding, r.document, r.metadata) for r in batch]
        )

    def update(self, record: Record) -> None:
        raise NotImplementedError

    def delete(self, key: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        from dbos import DBOS  # noqa: PLC0415

        DBOS.destroy(destroy_registry=False)
        _TARGET.clear()
        self.conn.close()


ALTERNATIVES: dict[str, Callable[[], Any]] = {
    "langchain": LangChainIndex,
    "dbos": DbosWorkflow,
}
