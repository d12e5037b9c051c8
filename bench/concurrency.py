"""Concurrency: several threads writing single creates through one runner, against the
same number of threads writing the unprotected dual write (issue 17).

Method: in each round both contenders get fresh stores (SQLite file, embedded Chroma
folder) and run in turn, the order alternating between rounds; ``threads`` threads
start together from a barrier and each creates ``per_thread`` records of its own key
range. The saga's threads share one ``SagaRunner`` (as an application's request
handlers would); the unprotected threads share one Chroma collection object and each
has its own SQLite connection (WAL, ``synchronous=FULL``, one commit per write). Figure
= records per second over the round's wall time; ratio = median over rounds of (saga
time / unprotected time).
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._data import TABLE, Record, records
from bench._stores import (
    app_connection,
    chroma_client,
    make_app_db,
    notes_collection,
    release_chroma,
)


def _unprotected(folder: Path) -> tuple[Callable[[Record], None], Callable[[], None]]:
    db = make_app_db(folder / "app.db")
    client = chroma_client(folder / "chroma")
    collection = notes_collection(client)
    local = threading.local()
    opened: list[sqlite3.Connection] = []
    guard = threading.Lock()

    def write(record: Record) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = app_connection(db, check_same_thread=False)  # closed by close()
            conn.execute("PRAGMA busy_timeout=30000")
            with guard:
                opened.append(conn)
        collection.upsert(
            ids=[record.vector_id],
            embeddings=[record.embedding],
            documents=[record.document],
            metadatas=[record.metadata],
        )
        conn.execute(
            f"INSERT INTO {TABLE} (id, body, vector_id) VALUES (?, ?, ?)",
            (record.key, record.body, record.vector_id),
        )
        conn.commit()

    def close() -> None:
        for conn in opened:
            conn.close()

    return write, close


def _saga(folder: Path) -> tuple[Callable[[Record], None], Callable[[], None]]:
    from saga import SagaRunner  # noqa: PLC0415

    runner = SagaRunner.open(make_app_db(folder / "app.db"), chroma_path=folder / "chroma")
    runner.track(TABLE)

    def write(record: Record) -> None:
        runner.create(
            TABLE,
            {"id": record.key, "body": record.body},
            embedding=record.embedding,
            document=record.document,
            metadata=record.metadata,
        )

    return write, runner.close


OPENERS = {"unprotected": _unprotected, "saga": _saga}


def _run(kind: str, folder: Path, threads: int, per_thread: int) -> float:
    """Seconds for ``threads`` x ``per_thread`` creates, after an untimed warm-up."""
    write, close = OPENERS[kind](folder)
    try:
        for record in records(threads, start=10_000_000):
            write(record)  # warm: collection, connections, caches
        work = [records(per_thread, start=t * per_thread) for t in range(threads)]
        barrier = threading.Barrier(threads + 1)
        failures: list[BaseException] = []

        def worker(mine: list[Record]) -> None:
            barrier.wait()
            try:
                for record in mine:
                    write(record)
            except BaseException as exc:  # reported: a failed run has no figure
                failures.append(exc)

        pool = [threading.Thread(target=worker, args=(w,)) for w in work]
        for thread in pool:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in pool:
            thread.join()
        took = time.perf_counter() - start
        if failures:
            raise RuntimeError(f"{kind}: {failures[0]!r}")
        return took
    finally:
        close()
        release_chroma()


def measure(
    workdir: Path, *, threads: int = 4, per_thread: int = 50, rounds: int = 3
) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {"unprotected": [], "saga": []}
    for round_no in range(rounds):
        order = ["unprotected", "saga"] if round_no % 2 == 0 else ["saga", "unprotected"]
        for kind in order:
            folder = workdir / f"concurrency-{round_no}-{kind}"
            seconds[kind].append(_run(kind, folder, threads, per_thread))
    total = threads * per_thread
    return {
        "threads": threads,
        "records": total,
        "seconds": seconds,
        "per_second": {k: total / statistics.median(v) for k, v in seconds.items()},
        "paired": [s / u for s, u in zip(seconds["saga"], seconds["unprotected"], strict=True)],
    }
