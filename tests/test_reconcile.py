"""Reconcile finds each kind of inconsistency planted behind the library's back, and
``fix`` repairs it (through sagas where a vector must be rewritten)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from saga import SagaRunner, VectorRecord
from tests._recovery_worker import body, embedding_for
from tests.conftest import rows, vector_ids
from tests.test_recovery import crash_once, open_runner


def write(runner: SagaRunner, key: int, tag: str = "t") -> None:
    text = body(tag, key)
    runner.create(
        "notes",
        {"id": key, "body": text},
        embedding=embedding_for(text),
        document=text,
        metadata={"tag": tag},
    )


def rebuild(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """What the application would do: embed the row's text again."""
    assert table == "notes"
    return {
        "embedding": embedding_for(row["body"]),
        "document": row["body"],
        "metadata": {"tag": "t"},
    }


@pytest.fixture
def populated(runner: SagaRunner) -> SagaRunner:
    for key in range(1, 8):
        write(runner, key)
    assert runner.reconcile().clean
    return runner


def test_a_consistent_pair_of_stores_is_clean(populated: SagaRunner) -> None:
    report = populated.reconcile(page_size=3)
    assert report.clean
    assert (report.rows_checked, report.vectors_checked) == (7, 7)


def test_orphan_vectors_are_found_across_pages_and_deleted(populated: SagaRunner) -> None:
    planted = [
        VectorRecord(id="notes:99", embedding=(0.1, 0.2, 0.3, 0.4), document="x", metadata=None),
        VectorRecord(id="stray", embedding=(0.4, 0.3, 0.2, 0.1), document=None, metadata=None),
    ]
    populated.stores.vectors.upsert("notes", planted)
    report = populated.reconcile(page_size=2)
    assert set(report.orphan_vectors) == {"notes:99", "stray"}
    assert not report.clean
    fixed = populated.reconcile(fix=True, page_size=2)
    assert set(fixed.fixed) == {"notes:99", "stray"}
    assert fixed.clean
    assert "stray" not in vector_ids(populated)
    assert populated.reconcile().clean


def test_drift_is_found_and_rewritten_from_the_synced_state(populated: SagaRunner) -> None:
    before = populated.stores.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    tampered = VectorRecord(
        id="notes:3", embedding=before.embedding, document="tampered", metadata={"x": 1}
    )
    populated.stores.vectors.upsert("notes", [tampered])
    assert populated.reconcile().drift == ("notes:3",)
    report = populated.reconcile(fix=True)
    assert report.fixed == ("notes:3",)
    after = populated.stores.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    assert after.document == body("t", 3)
    assert after.embedding == pytest.approx(before.embedding)
    assert after.metadata == {"tag": "t"}  # exactly the caller's: the tampered key is gone
    assert populated.reconcile().clean


def test_missing_vectors_are_written_back_from_the_log(populated: SagaRunner) -> None:
    """The log keeps every synced vector: --fix needs no embedder (issue 13)."""
    before = populated.stores.vectors.get("notes", ["notes:2", "notes:5"], embeddings=True)
    populated.stores.vectors.delete("notes", ["notes:2", "notes:5"])
    report = populated.reconcile(fix=True)
    assert set(report.missing_vectors) == {"notes:2", "notes:5"}
    assert set(report.fixed) == {"notes:2", "notes:5"}
    assert report.clean
    after = populated.stores.vectors.get("notes", ["notes:2", "notes:5"], embeddings=True)
    assert after == before  # embedding, document and metadata, exactly
    assert populated.reconcile().clean


def test_missing_vectors_the_log_does_not_keep_need_the_applications_embedder(
    populated: SagaRunner, db_path: Path
) -> None:
    """As after an upgrade from schema 4, before the vectors are written again."""
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE vector_sync_state SET embedding = NULL, record = NULL")
    conn.close()
    populated.stores.vectors.delete("notes", ["notes:2", "notes:5"])
    report = populated.reconcile(fix=True)
    assert set(report.missing_vectors) == {"notes:2", "notes:5"}
    assert set(report.unfixable) == {"notes:2", "notes:5"}
    assert not report.clean
    repaired = populated.reconcile(fix=True, rebuild=rebuild)
    assert set(repaired.fixed) == {"notes:2", "notes:5"}
    assert populated.reconcile().clean
    stored = populated.stores.vectors.get("notes", ["notes:2"])["notes:2"]
    assert stored.document == body("t", 2)


def test_a_row_written_behind_the_library_is_missing_its_vector(
    populated: SagaRunner, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO notes (id, body) VALUES (50, 'sneaky')")
    conn.commit()
    conn.close()
    assert populated.reconcile().missing_vectors == ("notes:50",)
    assert populated.reconcile(fix=True, rebuild=rebuild).clean
    assert rows(db_path)[50]["vector_id"] == "notes:50"


def test_in_flight_sagas_are_not_orphans_and_stuck_at_once_if_their_owner_died(
    tmp_path: Path,
) -> None:
    crashed = crash_once(tmp_path, "create", "after:write_vectors=kill")
    with open_runner(crashed) as runner:
        [saga] = runner.in_flight()
        young = runner.reconcile(stuck_after=dt.timedelta(hours=1))
        assert young.orphan_vectors == ()  # notes:11 is written by a saga in flight
        assert young.in_flight == (saga.saga_id,)
        assert young.stuck_sagas == (saga.saga_id,)  # its writer is dead: stuck at once
        assert not young.clean
        fixed = runner.reconcile(fix=True, stuck_after=dt.timedelta(hours=1))
        assert (fixed.in_flight, fixed.stuck_sagas) == ((), ())
        assert fixed.clean
        assert runner.in_flight() == []


def test_aliases(populated: SagaRunner) -> None:
    populated.stores.vectors.upsert(
        "notes", [VectorRecord(id="zz-orphan", embedding=(1.0,) * 4, document=None, metadata=None)]
    )
    assert populated.detect_orphaned_records().orphan_vectors == ("zz-orphan",)
    assert populated.recover_orphaned_vectors().clean


def counting_gets(runner: SagaRunner, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every vector id reconcile asks Chroma for by id."""
    asked: list[str] = []
    get = runner.stores.vectors.get

    def counted(collection: str, ids: Any, **kwargs: Any) -> dict[str, VectorRecord]:
        asked.extend(ids)
        return get(collection, ids, **kwargs)

    monkeypatch.setattr(runner.stores.vectors, "get", counted)
    return asked


def test_when_the_stores_agree_chroma_is_read_once(
    populated: SagaRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = counting_gets(populated, monkeypatch)
    populated.stores.vectors.upsert(
        "notes", [VectorRecord(id="stray", embedding=(1.0,) * 4, document=None, metadata=None)]
    )
    report = populated.reconcile(page_size=2)
    assert report.orphan_vectors == ("stray",)
    assert (report.rows_checked, report.vectors_checked) == (7, 8)
    assert asked == []  # every row was seen linked to its vector in the vector pass


def test_only_rows_not_seen_linked_are_looked_up(
    populated: SagaRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    populated.stores.vectors.delete("notes", ["notes:5", "notes:2"])
    asked = counting_gets(populated, monkeypatch)
    report = populated.reconcile(page_size=2)
    assert report.missing_vectors == ("notes:2", "notes:5")  # in key order
    assert {"notes:2", "notes:5"} <= set(asked)
    assert len(asked) < 7


def test_a_row_naming_another_rows_vector_is_missing_its_own(
    populated: SagaRunner, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE notes SET vector_id = 'notes:1' WHERE id = 4")
    conn.commit()
    conn.close()
    report = populated.reconcile(page_size=3)
    assert report.missing_vectors == ("notes:4",)
    assert report.orphan_vectors == ("notes:4",)  # no row names it any more
    assert report.drift == ()


@pytest.fixture
def linked(runner: SagaRunner) -> SagaRunner:
    """``populated``, on a table tracked with ``link_keys=True``."""
    runner.track("notes", link_keys=True, migrate=True)  # tracked without by `runner`
    for key in range(1, 8):
        write(runner, key)
    stored = runner.stores.vectors.get("notes", ["notes:3"])["notes:3"]
    assert stored.metadata == {"tag": "t", "sqlite_table": "notes", "sqlite_record_id": 3}
    assert runner.reconcile().clean
    return runner


def test_a_vector_claiming_another_row_is_an_orphan_and_its_row_not_missing(
    linked: SagaRunner,
) -> None:
    """A vector's row is the one its id names (``table:key``) and only if that row
    names it back; metadata claims nothing. ``notes:03`` carries row 3's very content,
    link keys included, and reads as key 3 in SQLite (``'03' = 3`` under the column's
    integer affinity), yet no row names it: an orphan, and row 3 is not missing."""
    before = linked.stores.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    copy = VectorRecord(
        id="notes:03",
        embedding=before.embedding,
        document=before.document,
        metadata=before.metadata,
    )
    linked.stores.vectors.upsert("notes", [copy])
    report = linked.reconcile(page_size=2)
    assert report.orphan_vectors == ("notes:03",)
    assert (report.missing_vectors, report.drift) == ((), ())
    assert linked.reconcile(fix=True).fixed == ("notes:03",)
    assert vector_ids(linked) == {f"notes:{k}" for k in range(1, 8)}
    assert linked.reconcile().clean


def test_link_keys_naming_another_row_are_drift_of_the_vectors_own_row(
    linked: SagaRunner,
) -> None:
    """``notes:3`` whose ``sqlite_record_id`` says 5: still row 3's vector (its id
    says so, and row 3 names it), drifted from what was synced; row 5 is not missing,
    and the fix writes row 3's link keys back."""
    before = linked.stores.vectors.get("notes", ["notes:3"], embeddings=True)["notes:3"]
    claims = {**(before.metadata or {}), "sqlite_record_id": 5}
    linked.stores.vectors.upsert(
        "notes",
        [
            VectorRecord(
                id="notes:3", embedding=before.embedding, document=before.document, metadata=claims
            )
        ],
    )
    report = linked.reconcile(page_size=2)
    assert report.drift == ("notes:3",)
    assert (report.orphan_vectors, report.missing_vectors) == ((), ())
    assert linked.reconcile(fix=True).fixed == ("notes:3",)
    after = linked.stores.vectors.get("notes", ["notes:3"])["notes:3"]
    assert after.metadata == {"tag": "t", "sqlite_table": "notes", "sqlite_record_id": 3}
    assert linked.reconcile().clean


def test_a_vector_seen_twice_or_not_at_all_only_costs_a_look_up() -> None:
    from saga._reconcile import _Tally  # noqa: PLC0415

    ids = [f"notes:{n}" for n in range(2000)]
    tally = _Tally()
    for vector_id in ids:
        tally.add(vector_id)
    for vector_id in reversed(ids):
        tally.take(vector_id)
    assert tally.balanced()
    tally.add("notes:7")  # seen twice
    tally.take("notes:8")  # a row never seen linked
    assert not tally.balanced()
    assert tally.unbalanced("notes:7")
    assert tally.unbalanced("notes:8")
    assert sum(tally.unbalanced(v) for v in ids) < 10


def test_a_delete_in_flight_is_not_a_missing_vector(tmp_path: Path) -> None:
    crashed = crash_once(tmp_path, "delete", "after:write_vectors=kill")
    with open_runner(crashed) as runner:
        report = runner.reconcile(stuck_after=dt.timedelta(hours=1), page_size=2)
        assert report.missing_vectors == ()  # the row's vector is gone: a saga is on it
        assert len(report.in_flight) == 1
        assert not report.clean
        assert runner.reconcile(fix=True, stuck_after=dt.timedelta(hours=1)).clean
