"""`saga adopt` / `runner.adopt()`: vectors stored under the application's own ids taken
over without re-embedding (issue 15). Real SQLite files, real embedded Chroma, the real
CLI in subprocesses, SIGKILLed by failpoints and by signal."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from saga import DataIntegrityError, SagaError, SagaRunner, failpoints
from saga._ports import Scalar
from saga.extend import Item, VectorRecord
from tests.conftest import ROOT, rows, run_saga, sql, stored_vectors

TABLE = "summaries"
SCHEMA = "CREATE TABLE summaries (id INTEGER PRIMARY KEY, body TEXT NOT NULL, vector_id TEXT)"
RESERVED = ("sqlite_table", "sqlite_record_id", "saga_id")
# The CLI, with the failpoints of SAGA_FAILPOINTS armed (the library never reads it).
CLI = (
    "import sys; from saga import failpoints; failpoints.load_from_env(); "
    "from saga.cli import main; sys.argv[0] = 'saga'; main()"
)

Legacy = dict[int, tuple[bytes, str | None, dict[str, Any]]]


def legacy_vector(n: int, dim: int, rng: random.Random) -> VectorRecord:
    """A vector as the application wrote it: its own id, float32-exact numbers."""
    embedding = tuple(array("f", [rng.uniform(-1, 1) for _ in range(dim)]))
    metadata: dict[str, Scalar] = {
        "n": n,
        "topic": f"t{n % 7}",
        "weight": n / 8,
        "even": n % 2 == 0,
    }
    return VectorRecord(f"sum_{n}", embedding, f"summary {n}", metadata)


def legacy_app(
    db: Path,
    chroma: Path,
    keys: range,
    dim: int,
    *,
    extra: Sequence[VectorRecord] = (),
    link: bool = True,
    seed: int = 7,
) -> Legacy:
    """An application's data before adoption: rows inserted by plain SQL naming their
    vectors (``sum_{n}``), vectors upserted straight into the collection. The table is
    then tracked, as the application does once it installs the library."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(SCHEMA)
        conn.executemany(
            "INSERT INTO summaries (id, body, vector_id) VALUES (?, ?, ?)",
            [(n, f"body {n}", f"sum_{n}" if link else None) for n in keys],
        )
    conn.close()
    rng = random.Random(seed)
    records = [legacy_vector(n, dim, rng) for n in keys]
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        for start in range(0, len(records), 1000):
            runner.stores.vectors.upsert(TABLE, records[start : start + 1000])
        runner.stores.vectors.upsert(TABLE, list(extra))
        runner.track(TABLE)
    return {
        int(str(r.id).removeprefix("sum_")): (
            array("f", r.embedding or ()).tobytes(),
            r.document,
            dict(r.metadata or {}),
        )
        for r in records
    }


def adopt_cli(db: Path, chroma: Path, spec: str = "") -> subprocess.CompletedProcess[str]:
    """``saga adopt`` in a child process, with failpoints ``spec`` armed."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *_adopt_args(db, chroma)],
        cwd=ROOT,
        env={**os.environ, "SAGA_FAILPOINTS": spec},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _adopt_args(db: Path, chroma: Path) -> list[str]:
    return ["adopt", "--db", str(db), "--chroma-path", str(chroma), "--table", TABLE, "--json"]


def adopt_sagas(db: Path) -> int:
    """Adopt sagas begun so far, settled or not."""
    return int(sql(db, "SELECT COUNT(*) FROM saga_instances WHERE definition = 'adopt'")[0][0])


def adopt_sagas_in_flight(db: Path) -> int:
    return int(
        sql(
            db,
            "SELECT COUNT(*) FROM saga_instances WHERE definition = 'adopt' "
            "AND state NOT IN ('synced', 'failed')",
        )[0][0]
    )


def caller_metadata(metadata: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(metadata or {}).items() if k not in RESERVED}


def assert_adopted(db: Path, chroma: Path, legacy: Legacy) -> dict[str, Any]:
    """Every row names its library id; Chroma holds exactly the legacy content under
    those ids (embeddings bit for bit) and nothing else; reconcile is clean."""
    assert {k: r["vector_id"] for k, r in rows(db, TABLE).items()} == {
        n: f"{TABLE}:{n}" for n in legacy
    }
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        stored = stored_vectors(runner, TABLE)
        assert set(stored) == {f"{TABLE}:{n}" for n in legacy}  # no legacy id left
        for n, (embedding, document, metadata) in legacy.items():
            got = stored[f"{TABLE}:{n}"]
            assert got[0] == embedding, n
            assert (got[1], caller_metadata(got[2])) == (document, metadata), n
        report = runner.reconcile()
        assert report.clean, report.to_dict()
        assert runner.in_flight() == []
    return stored


# -- 5,000 rows, the CLI SIGKILLed at every stage and at random ---------------------------


def test_a_killed_adopt_is_finished_by_running_it_again(tmp_path: Path) -> None:
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    legacy = legacy_app(db, chroma, range(1, 5001), 384)

    # Pages of 500 rows. Each kill lands in a later page (or in the recovery of the
    # saga the previous one left): after the copy, inside the pivot's transaction,
    # after the pivot before the legacy ids are dropped, after they are, between pages.
    for spec, in_flight in [
        ("after:copy_vectors=kill@2", True),
        ("during:point_rows=kill@2", True),
        ("before:drop_legacy=kill@1", True),
        ("after:drop_legacy=kill@2", True),
        ("adopt:page=kill@7", False),
    ]:
        done = adopt_cli(db, chroma, spec)
        assert done.returncode == -signal.SIGKILL, (spec, done.stderr[-2000:])
        assert adopt_sagas_in_flight(db) == int(in_flight), spec
    rng = random.Random(15)
    for _ in range(3):  # and at moments no failpoint chooses, once a page has begun
        begun = adopt_sagas(db)
        child = subprocess.Popen(
            [sys.executable, "-c", CLI, *_adopt_args(db, chroma)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while adopt_sagas(db) == begun and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) in (-signal.SIGKILL, 0)

    done = adopt_cli(db, chroma)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["complete"]
    assert report["adopted"] + report["already"] == 5000
    before = assert_adopted(db, chroma, legacy)
    # The log keeps every vector: a fresh folder is rebuilt from it, bit for bit.
    with SagaRunner.open(db, chroma_path=tmp_path / "fresh") as runner:
        rebuilt = runner.rebuild(TABLE)
        assert (rebuilt.rebuilt, rebuilt.complete) == (5000, True)
        assert stored_vectors(runner, TABLE) == before
    again = adopt_cli(db, chroma)  # a no-op
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["adopted"] == 0
    assert json.loads(again.stdout)["already"] == 5000


# -- what cannot be adopted, and the caller's mapping -------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, Path, Legacy]:
    """Rows 1-20 with their vectors; 21 without a link; 22 naming a vector Chroma does
    not hold; 23's vector has metadata the library refuses (a list); 24 and 25 share one
    vector; two vectors no row names."""
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    rng = random.Random(3)
    # Chroma takes list values; the library's metadata checks refuse them.
    bad = attrs.evolve(legacy_vector(23, 4, rng), metadata={"tags": [1, 2]})  # type: ignore[dict-item]
    shared = VectorRecord("sum_shared", (0.5, 0.25, 0.125, 1.0), "both", {"k": 1})
    strays = [VectorRecord(f"stray_{i}", (1.0, 0.0, 0.0, float(i)), None, None) for i in (1, 2)]
    legacy = legacy_app(db, chroma, range(1, 21), 4, extra=[bad, shared, *strays])
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO summaries (id, body, vector_id) VALUES (?, ?, ?)",
            [
                (21, "no link", None),
                (22, "gone", "sum_missing"),
                (23, "bad", "sum_23"),
                (24, "one", "sum_shared"),
                (25, "two", "sum_shared"),
            ],
        )
    conn.close()
    return db, chroma, legacy


def test_what_cannot_be_adopted_is_reported_and_orphans_deleted_on_request(
    mixed: tuple[Path, Path, Legacy],
) -> None:
    db, chroma, legacy = mixed
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        report = runner.adopt(TABLE, page_size=7)
        assert report.adopted == 22  # 1-20, and 24 and 25 with a copy each
        assert report.rows_without_vector == (21, 22)
        assert [key for key, _ in report.invalid] == [23]
        assert "metadata.tags" in report.invalid[0][1]
        assert sorted(report.vectors_without_row) == ["stray_1", "stray_2"]
        assert (report.deleted_orphans, report.complete) == ((), False)

        again = runner.adopt(TABLE)  # a no-op
        assert (again.adopted, again.already) == (0, 22)
        assert again.rows_without_vector == (21, 22)
        assert sorted(again.vectors_without_row) == ["stray_1", "stray_2"]

        stored = stored_vectors(runner, TABLE)
        assert "sum_23" in stored  # refused, never written half: left as it was
        assert f"{TABLE}:23" not in stored
        assert "sum_shared" not in stored
        for n in (24, 25):
            assert stored[f"{TABLE}:{n}"][1:2] == ("both",)
            assert caller_metadata(stored[f"{TABLE}:{n}"][2]) == {"k": 1}
        for n, (embedding, document, metadata) in legacy.items():
            got = stored[f"{TABLE}:{n}"]
            assert (got[0], got[1], caller_metadata(got[2])) == (embedding, document, metadata)
    assert rows(db, TABLE)[23]["vector_id"] == "sum_23"

    code = run_saga(*_adopt_args(db, chroma))
    assert code.returncode == 1, code.stderr
    assert json.loads(code.stdout)["complete"] is False
    deleting = run_saga(*_adopt_args(db, chroma), "--delete-orphans")
    assert deleting.returncode == 1, deleting.stderr  # rows 21-23 are still unresolved
    assert sorted(json.loads(deleting.stdout)["deleted_orphans"]) == ["stray_1", "stray_2"]

    # The rows without a vector are the application's embedder's to make; the refused
    # vector the application's to fix. Then adopt has nothing left, and exits 0.
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        assert "stray_1" not in stored_vectors(runner, TABLE)
        fixed_23 = VectorRecord("sum_23", (0.1, 0.2, 0.3, 0.4), "fixed", {"tags": "1,2"})
        runner.stores.vectors.upsert(TABLE, [fixed_23])
        assert runner.adopt(TABLE).adopted == 1
        fixed = runner.reconcile(
            fix=True, rebuild=lambda _t, row: {"embedding": [1.0, 2.0, 3.0, float(row["id"])]}
        )
        assert set(fixed.fixed) >= {f"{TABLE}:21", f"{TABLE}:22"}
        assert runner.reconcile().clean
    done = run_saga(*_adopt_args(db, chroma))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["already"] == 25


def test_a_mapping_given_by_the_caller_names_the_legacy_vectors(tmp_path: Path) -> None:
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    legacy = legacy_app(db, chroma, range(1, 31), 4, link=False)  # no ids in the rows
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        unmapped = runner.adopt(TABLE)
        assert unmapped.rows_without_vector == tuple(range(1, 31))
        assert unmapped.adopted == 0
        report = runner.adopt(TABLE, mapping={n: f"sum_{n}" for n in range(1, 31)}, page_size=8)
        assert (report.adopted, report.complete) == (30, True), report.to_dict()
        assert runner.adopt(TABLE).already == 30
        with pytest.raises(SagaError, match="mapping"):
            runner.adopt(TABLE, mapping={1: 5})  # type: ignore[dict-item]
    assert_adopted(db, chroma, legacy)


def test_legacy_vectors_of_another_dimension_are_reported_not_adopted(tmp_path: Path) -> None:
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    legacy_app(db, chroma, range(1, 6), 4)
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        runner.track(TABLE, dimension=8, migrate=True)  # what the application now writes
        report = runner.adopt(TABLE)
        assert report.adopted == 0
        assert [key for key, _ in report.invalid] == [1, 2, 3, 4, 5]
        assert all("4 dimensions, the collection has 8" in error for _, error in report.invalid)
        assert set(stored_vectors(runner, TABLE)) == {f"sum_{n}" for n in range(1, 6)}
    assert {r["vector_id"] for r in rows(db, TABLE).values()} == {f"sum_{n}" for n in range(1, 6)}


def test_keys_held_by_a_live_saga_are_skipped_and_said(tmp_path: Path) -> None:
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    legacy_app(db, chroma, range(1, 6), 4)
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        item = Item(key=3, row={"body": "changing"}, embedding=(1.0, 2.0, 3.0, 4.0))
        runner._services.engine.begin(
            runner.definition("update"), runner.spec(TABLE), "update", [item]
        )  # held by this live runner
        report = runner.adopt(TABLE)
        assert (report.adopted, report.skipped, report.complete) == (4, (3,), False)
        assert rows(db, TABLE)[3]["vector_id"] == "sum_3"
        assert "sum_3" in stored_vectors(runner, TABLE)


def test_a_page_that_fails_before_its_pivot_is_undone_and_adopted_next_time(
    tmp_path: Path,
) -> None:
    """The copies go, the legacy vectors and the rows stay; a row that already named
    its library id (its vector unknown to the log) gets that vector back exactly."""
    db, chroma = tmp_path / "app.db", tmp_path / "chroma"
    legacy = legacy_app(db, chroma, range(1, 7), 4)
    own = VectorRecord(f"{TABLE}:5", (0.5, 0.5, 0.5, 0.5), "written by the app", {"pre": True})
    sql(db, "UPDATE summaries SET vector_id = ? WHERE id = 5", (own.id,))
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        runner.stores.vectors.delete(TABLE, ["sum_5"])
        runner.stores.vectors.upsert(TABLE, [own])
        before = stored_vectors(runner, TABLE)
        with failpoints.armed("during:point_rows=raise*1"), pytest.raises(DataIntegrityError):
            runner.adopt(TABLE)
        assert stored_vectors(runner, TABLE) == before
        assert rows(db, TABLE)[1]["vector_id"] == "sum_1"

        report = runner.adopt(TABLE)
        assert (report.adopted, report.complete) == (6, True), report.to_dict()
        (embedding, document, metadata) = stored_vectors(runner, TABLE)[own.id]
        assert (embedding, document, caller_metadata(metadata)) == before[own.id]
    legacy[5] = (array("f", own.embedding or ()).tobytes(), own.document, {"pre": True})
    adopted = assert_adopted(db, chroma, legacy)
    with SagaRunner.open(db, chroma_path=tmp_path / "fresh") as runner:
        assert runner.rebuild(TABLE).complete
        assert stored_vectors(runner, TABLE) == adopted
