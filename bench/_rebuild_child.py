"""The rebuild scenario's measurements in a fresh process (see ``bench.rebuild``).

- ``ingest DB FOLDER``: Chroma's own ingest of the vectors the log keeps, into a fresh
  embedded folder, ``collection.upsert`` in batches of ``client.get_max_batch_size()``.
  Each batch is read from the log by plain SQL and decoded (embeddings as one float32
  numpy array, Chroma's native form) untimed; only the ``upsert`` calls are timed.
- ``rebuild DB FOLDER [--profile]``: ``runner.rebuild()`` into a fresh embedded folder,
  timed as a whole, with the time split by phase (see ``Phases``); ``--profile`` runs
  it under cProfile (that run's time is inflated: a breakdown, not a figure).
- ``loaded DB FOLDER``: the RSS of a process that opened a rebuilt folder and read its
  collection (a get and a one-neighbour query): the memory the collection itself takes.

Every process imports the same modules (``bench._child``) before its baseline.
"""

from __future__ import annotations

import cProfile
import functools
import io
import json
import pstats
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from bench._figures import timed
from bench._memory import peak_mb, reset_peak, rss_mb
from bench._stores import chroma_client


def _collection_name(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        (name,) = conn.execute("SELECT collection FROM saga_tracked_tables").fetchone()
    finally:
        conn.close()
    return str(name)


def ingest(db: str, folder: str) -> dict[str, Any]:
    client = chroma_client(Path(folder))
    collection = client.get_or_create_collection(_collection_name(db), embedding_function=None)
    step = int(client.get_max_batch_size())
    conn = sqlite3.connect(db)
    start = rss_mb()
    exact = reset_peak()
    seconds, count, after = 0.0, 0, ""
    pages: list[float] = []
    while True:
        rows = conn.execute(
            "SELECT vector_id, embedding, record FROM vector_sync_state "
            "WHERE vector_id > ? AND embedding IS NOT NULL AND record IS NOT NULL "
            "ORDER BY vector_id LIMIT ?",
            (after, step),
        ).fetchall()
        if not rows:
            break
        ids = [str(r[0]) for r in rows]
        embeddings = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        kept = [json.loads(r[2]) for r in rows]
        documents = [k[0] for k in kept]
        metadatas = [k[1] for k in kept]
        began = time.perf_counter()
        collection.upsert(ids=ids, embeddings=embeddings, documents=documents, metadatas=metadatas)
        seconds += time.perf_counter() - began
        count += len(rows)
        after = ids[-1]
        pages.append(rss_mb())
    conn.close()
    peak, end = peak_mb(), rss_mb()
    return {
        "seconds": seconds,
        "vectors": count,
        "stored": collection.count(),
        "batch": step,
        "start_rss_mb": start,
        "peak_rss_mb": peak,
        "end_rss_mb": end,
        "peak_over_start_mb": peak - start,
        "peak_reset": exact,
        "rss_by_batch_mb": pages,
    }


class Phases:
    """Seconds spent in each part of one ``rebuild()``, by wrapping (on this runner's
    stores, in this child only) the log's page read, its per-vector decode, the
    adapter's upsert and chromadb's ``Collection.upsert``. A few clock reads per page
    and two per vector: noise next to the figures."""

    def __init__(self) -> None:
        self.spent = {"kept_vectors": 0.0, "decode": 0.0, "adapter_upsert": 0.0, "chroma": 0.0}
        self.pages = 0

    def _timing(self, name: str, action: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(action)
        def run(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return action(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - began

        return run

    def install(self, runner: Any) -> Callable[[], None]:
        """Wrap; returns what undoes the module- and class-level wrappers."""
        import stores.saga_log  # noqa: PLC0415

        log, vectors = runner.stores.log, runner.stores.vectors
        log.kept_vectors = self._timing("kept_vectors", log.kept_vectors)
        vectors.upsert = self._timing("adapter_upsert", vectors.upsert)
        decode, upsert = stores.saga_log.kept_vector, Collection.upsert
        stores.saga_log.kept_vector = self._timing("decode", decode)  # type: ignore[assignment]
        Collection.upsert = self._timing("chroma", upsert)  # type: ignore[method-assign]

        def undo() -> None:
            stores.saga_log.kept_vector = decode  # type: ignore[assignment]
            Collection.upsert = upsert  # type: ignore[method-assign]

        return undo

    def split(self, total: float) -> dict[str, float]:
        s = self.spent
        return {
            "read_sql_s": s["kept_vectors"] - s["decode"],
            "decode_s": s["decode"],
            "adapter_s": s["adapter_upsert"] - s["chroma"],
            "chroma_upsert_s": s["chroma"],
            "other_s": total - s["kept_vectors"] - s["adapter_upsert"],
        }


def _profile_text(profile: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def rebuild(db: str, folder: str, *flags: str) -> dict[str, Any]:
    from saga import SagaRunner  # noqa: PLC0415

    base = rss_mb()
    profile = cProfile.Profile() if "--profile" in flags else None
    with SagaRunner.open(db, chroma_path=folder) as runner:
        phases = Phases()
        undo = phases.install(runner)
        opened = rss_mb()
        pages: list[float] = []
        reports: list[Any] = []

        def page(count: int) -> None:
            phases.pages += 1
            pages.append(rss_mb())

        def run() -> None:
            reports.append(runner.rebuild(progress=page))

        exact = reset_peak()
        seconds = timed(run if profile is None else lambda: profile.runcall(run))
        peak, end = peak_mb(), rss_mb()
        undo()
        spec = runner.tracked()[0]
        stored = runner.stores.vectors.client.get_collection(spec.collection).count()
    report = reports[0]
    return {
        "seconds": seconds,
        "profiled": profile is not None,
        "rebuilt": report.rebuilt,
        "not_rebuildable": len(report.not_rebuildable),
        "stored": stored,
        "pages": phases.pages,
        "phases": phases.split(seconds),
        "baseline_rss_mb": base,
        "start_rss_mb": opened,
        "peak_rss_mb": peak,
        "end_rss_mb": end,
        "peak_over_start_mb": peak - opened,
        "peak_reset": exact,
        "rss_by_page_mb": pages,
        "profile": _profile_text(profile) if profile is not None else None,
    }


def loaded(db: str, folder: str) -> dict[str, Any]:
    from saga import SagaRunner  # noqa: PLC0415

    base = rss_mb()
    with SagaRunner.open(db, chroma_path=folder) as runner:
        opened = rss_mb()
        spec = runner.tracked()[0]
        (first,) = runner.stores.log.kept_vectors(spec.table, None, 1)
        runner.stores.vectors.get(spec.collection, [first.id])
        after_get = rss_mb()
        hits = runner.stores.vectors.query(spec.collection, first.embedding, 1)
        after_query = rss_mb()
    return {
        "baseline_rss_mb": base,
        "opened_rss_mb": opened,
        "after_get_rss_mb": after_get,
        "loaded_rss_mb": after_query,
        "nearest_is_itself": bool(hits) and hits[0].id == first.id,
    }
