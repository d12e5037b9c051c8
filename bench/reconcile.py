"""Reconcile: time and peak RSS of ``reconcile()`` over N tracked, synced records.

Planted fast, as the library leaves synced records: rows by SQL, vectors by Chroma
upserts of request-sized chunks (metadata with the row link and saga id), and for each
a ``vector_sync_state`` row in ``synced`` with the content hash the engine records,
plus one ``synced`` saga per chunk with its history. Sizes grow in place (the same
stores, extended). Each measurement runs in a fresh process. "With orphans" adds 1 %
extra vectors that no row points at (removed again before the next size).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import DIM, TABLE, document, embedding_block
from bench._spawn import child
from bench._stores import chroma_client, make_app_db, notes_collection, release_chroma

ORPHAN_KEYS = 1_000_000_000  # orphans live far from the planted keys


def _now() -> str:
    from saga._clock import stamp  # noqa: PLC0415

    return stamp(dt.datetime.now(dt.UTC))


def _vectors(start: int, count: int, saga_id: str) -> tuple[list[str], list[str], list[Any]]:
    rng = np.random.default_rng([7, start])
    ids = [f"{TABLE}:{k}" for k in range(start, start + count)]
    docs = [document(k, 0, rng) for k in range(start, start + count)]
    metas = [
        {
            "lang": "en",
            "n": k,
            "version": 0,
            "sqlite_table": TABLE,
            "sqlite_record_id": k,
            "saga_id": saga_id,
        }
        for k in range(start, start + count)
    ]
    return ids, docs, metas


class Planter:
    """Grows one database + Chroma folder of synced records, and plants orphans."""

    def __init__(self, folder: Path) -> None:
        from saga import SagaRunner  # noqa: PLC0415

        self.db, self.chroma = make_app_db(folder / "app.db"), folder / "chroma"
        with SagaRunner.open(self.db, chroma_path=self.chroma) as runner:
            runner.track(TABLE, dimension=DIM)
        release_chroma()
        self.size = 0
        self.orphans: list[str] = []

    def grow(self, size: int) -> None:
        from saga._content import content_of  # noqa: PLC0415
        from saga._ports import VectorRecord  # noqa: PLC0415

        client = chroma_client(self.chroma)
        collection = notes_collection(client)
        step = int(client.get_max_batch_size())
        conn = sqlite3.connect(self.db)
        conn.execute("PRAGMA synchronous=OFF")  # planting only: the measurement reads it
        for start in range(self.size, size, step):
            count = min(step, size - start)
            saga_id, now = str(uuid.uuid4()), _now()
            ids, docs, metas = _vectors(start, count, saga_id)
            collection.upsert(
                ids=ids, embeddings=embedding_block(start, count), documents=docs, metadatas=metas
            )
            hashes = [
                content_of(VectorRecord(id=i, embedding=None, document=d, metadata=m))
                for i, d, m in zip(ids, docs, metas, strict=True)
            ]
            with conn:
                conn.executemany(
                    f"INSERT INTO {TABLE} (id, body, vector_id) VALUES (?, ?, ?)",
                    [(start + n, docs[n], ids[n]) for n in range(count)],
                )
                conn.executemany(
                    "INSERT INTO vector_sync_state (vector_id, sqlite_table, sqlite_record_id, "
                    "sync_status, saga_id, operation, content_hash, content, last_synced_at, "
                    "created_at, updated_at) "
                    "VALUES (?, ?, ?, 'synced', ?, 'create', ?, ?, ?, ?, ?)",
                    [
                        (ids[n], TABLE, start + n, saga_id, *hashes[n], now, now, now)
                        for n in range(count)
                    ],
                )
                conn.execute(
                    "INSERT INTO saga_instances (saga_id, definition, sqlite_table, state, "
                    "item_count, created_at, updated_at) VALUES (?, 'create_many', ?, 'synced', "
                    "?, ?, ?)",
                    (saga_id, TABLE, count, now, now),
                )
                conn.executemany(
                    "INSERT INTO saga_history (saga_id, from_state, to_state, event, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (saga_id, None, "pending", "begin", now),
                        (saga_id, "pending", "vector_written", "write_vectors", now),
                        (saga_id, "vector_written", "sqlite_committed", "commit_rows", now),
                        (saga_id, "sqlite_committed", "synced", "finish", now),
                    ],
                )
        conn.close()
        if self.orphans:
            collection.delete(ids=self.orphans)
            self.orphans = []
        release_chroma()
        self.size = size

    def plant_orphans(self, count: int) -> None:
        client = chroma_client(self.chroma)
        ids, docs, metas = _vectors(ORPHAN_KEYS, count, str(uuid.uuid4()))
        notes_collection(client).upsert(
            ids=ids,
            embeddings=embedding_block(ORPHAN_KEYS, count),
            documents=docs,
            metadatas=metas,
        )
        release_chroma()
        self.orphans = ids


def measure(
    folder: Path, sizes: list[int], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """For each size: reconcile clean, then with 1 % planted orphans, each in a child."""
    planter = Planter(folder)
    results = []
    for size in sorted(sizes):
        progress(f"reconcile: planting {size:,} records")
        planter.grow(size)
        progress(f"reconcile: {size:,} records, clean")
        clean = child("reconcile", str(planter.db), str(planter.chroma))
        orphans = max(1, size // 100)
        planter.plant_orphans(orphans)
        progress(f"reconcile: {size:,} records, {orphans:,} orphans")
        dirty = child("reconcile", str(planter.db), str(planter.chroma))
        if clean["orphan_vectors"] or dirty["orphan_vectors"] != orphans:
            raise RuntimeError(
                f"reconcile miscounted orphans: {clean} / {dirty} (planted {orphans})"
            )
        for result in (clean, dirty):
            if result["missing_vectors"] or result["drift"] or result["rows_checked"] != size:
                raise RuntimeError(f"reconcile misread {size:,} synced records: {result}")
        results.append({"size": size, "orphans": orphans, "clean": clean, "with_orphans": dirty})
    return results
