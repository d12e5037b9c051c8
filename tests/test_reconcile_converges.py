from pathlib import Path

from saga import SagaRunner
from saga._ports import VectorRecord
from tests.conftest import make_db, sql, vec


def test_reconcile_fix_converges_in_one_pass_over_rows_linked_to_foreign_ids(
    tmp_path: Path,
) -> None:
    """Rows that name vectors under the application's own ids (as before adoption):
    the first --fix rewrites their vectors under library ids and deletes the old ones,
    so a second pass finds nothing (issue 15)."""
    db = make_db(tmp_path / "app.db")
    with SagaRunner.open(db, chroma_path=tmp_path / "chroma") as runner:
        runner.track("notes", dimension=4)
        for key in (1, 2, 3):
            sql(
                db,
                "INSERT INTO notes (id, body, vector_id) VALUES (?, 'b', ?)",
                (key, f"sum_{key}"),
            )
        runner.stores.vectors.upsert(
            "notes", [VectorRecord(f"sum_{k}", tuple(vec(k)), "d", {"k": k}) for k in (1, 2, 3)]
        )

        def rebuild(table, row):
            return {"embedding": vec(row["id"]), "document": "d", "metadata": {"k": row["id"]}}

        first = runner.reconcile(fix=True, rebuild=rebuild)
        assert set(first.orphan_vectors) == {"sum_1", "sum_2", "sum_3"}
        assert set(first.fixed) >= {"sum_1", "sum_2", "sum_3", "notes:1", "notes:2", "notes:3"}
        assert first.clean, first
        assert runner.reconcile().clean


def test_fixing_two_tables_touches_each_collection_with_its_own_findings(
    tmp_path: Path,
) -> None:
    """Drift in one table and an orphan in the other: each is repaired in its own
    collection, and neither collection receives the other's vectors."""
    db = make_db(tmp_path / "app.db")
    sql(db, "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL, vector_id TEXT)")
    with SagaRunner.open(db, chroma_path=tmp_path / "chroma") as runner:
        runner.track("notes", dimension=4)
        runner.track("tags", dimension=4)
        runner.create("notes", {"id": 1, "body": "b"}, embedding=vec(1), document="d")
        runner.create("tags", {"id": 1, "name": "t"}, embedding=vec(2), document="t")
        runner.stores.vectors.upsert(
            "notes", [VectorRecord("notes:1", tuple(vec(1)), "drifted", {})]
        )
        runner.stores.vectors.upsert("tags", [VectorRecord("stray", tuple(vec(3)), None, {})])

        report = runner.reconcile(fix=True)

        assert (report.drift, report.orphan_vectors) == (("notes:1",), ("stray",))
        assert sorted(report.fixed) == ["notes:1", "stray"]
        assert {r.id for p in runner.stores.vectors.iter_records("tags", 10) for r in p} == {
            "tags:1"
        }
        assert runner.vectors_of("notes", [1])[1].document == "d"
        assert runner.reconcile().clean
