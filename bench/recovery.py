"""Recovery: N sagas left in ``pending`` / ``vector_written`` by killed writers.

Planted as killed writers leave them, through the library itself: ``engine.begin``
records the intent (T1) and returns without driving. A third stays so (killed before
its vector step); for the other two thirds the vector is upserted as ``write_vectors``
would (``ctx.new_vector``, in request-sized batches, only to plant fast): one third
stays ``pending`` (killed after its vector step: this build records that step with the
row), and one third is moved to ``vector_written`` by ``log.advance`` (as an earlier
build committed it). Then every lease is given to a process of this host that is dead,
so recovery takes them over at once. Planting runs with ``synchronous=NORMAL`` (speed);
the timed ``recover()`` runs on a fresh runner with the defaults (``FULL``).
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bench._data import DIM, TABLE, chunked, records
from bench._figures import timed
from bench._stores import make_app_db, release_chroma


def dead_owner() -> str:
    """A lease owner naming a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])  # noqa: S607  # a fixed argv, found on PATH
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:killed"


def plant(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` interrupted create sagas: ``pending``, ``pending`` with the vector
    applied, and ``vector_written``, in turn."""
    from saga import Item, SagaRunner, SqliteOptions  # noqa: PLC0415
    from saga._machine import PENDING, machine_for  # noqa: PLC0415

    db, chroma = make_app_db(folder / "app.db"), folder / "chroma"
    with SagaRunner.open(db, chroma_path=chroma, sqlite=SqliteOptions(synchronous="NORMAL")) as r:
        spec = r.track(TABLE, dimension=DIM)
        definition = r.definition("create")
        applied: list[tuple[Any, Any]] = []
        for index, record in enumerate(records(count)):
            item = Item(
                key=record.key,
                row={"body": record.body},
                embedding=tuple(record.embedding),
                document=record.document,
                metadata=dict(record.metadata),
            )
            saga, ctx = r._services.engine.begin(definition, spec, "create", [item])
            if index % 3:
                applied.append((saga, ctx))
        vectors = [ctx.new_vector(ctx.items[0]) for _saga, ctx in applied]
        for part in chunked(vectors, r.stores.vectors.max_batch_size()):
            r.stores.vectors.upsert(spec.collection, part)
        step = "write_vectors"
        moves = [(step, machine_for(definition).next_state(PENDING, step))]
        for saga, _ctx in applied[1::2]:
            r.stores.log.advance(saga, moves)
    release_chroma()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE saga_instances SET lease_owner = ? WHERE state IN (?, ?)",
            (dead_owner(), "pending", "vector_written"),
        )
    conn.close()
    return db, chroma


def measure(folder: Path, count: int) -> dict[str, Any]:
    """Plant ``count`` interrupted sagas, then time one ``recover()`` of them all."""
    from saga import SagaRunner  # noqa: PLC0415

    db, chroma = plant(folder, count)
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        reports: list[Any] = []
        seconds = timed(lambda: reports.append(runner.recover()))
        report = reports[0]
        with runner.stores.log.db.read() as conn:
            rows = conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
            left = conn.execute(
                "SELECT COUNT(*) FROM saga_instances WHERE state NOT IN ('synced', 'failed')"
            ).fetchone()[0]
    release_chroma()
    if report.resumed != count or rows != count or left:
        raise RuntimeError(
            f"recovery did not settle all {count}: resumed={report.resumed} "
            f"failed={report.failed} skipped={report.skipped} rows={rows} in_flight={left}"
        )
    return {"seconds": seconds, "resumed": report.resumed, "rows": rows}
