"""``track(table, link_keys=...)``: a vector's metadata is exactly the caller's, plus
``sqlite_table`` and ``sqlite_record_id`` only for a table tracked with
``link_keys=True``; never ``saga_id`` (which saga wrote a vector is in the log).

The setting is persisted like the rest of ``track``: changing it needs ``migrate=True``,
``None`` keeps what is recorded, and a table tracked before schema 7 keeps the keys."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from saga import ConfigurationError, RetryPolicy, SagaRunner, ValidationError
from tests._probe import log_snapshot, sync_states
from tests.conftest import rows, vec

LINKS = {"sqlite_table": "notes", "sqlite_record_id": 1}
V1_FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1.db"


def _open(db_path: Path, chroma_path: Path) -> SagaRunner:
    return SagaRunner.open(db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled())


def _metadata(runner: SagaRunner, key: int) -> dict[str, Any]:
    return dict(runner.vectors_of("notes", [key])[key].metadata or {})


def _write_all_kinds(runner: SagaRunner) -> dict[int, dict[str, Any]]:
    """Create (with and without caller metadata), update and batch writes; the metadata
    each vector holds then, by key."""
    runner.create("notes", {"id": 1, "body": "a"}, embedding=vec(1), metadata={"lang": "en"})
    runner.create("notes", {"id": 2, "body": "b"}, embedding=vec(2))  # no metadata
    runner.update("notes", 1, {"body": "a2"}, embedding=vec(3), metadata={"lang": "fr"})
    runner.create_many(
        "notes",
        [
            {"row": {"id": k, "body": "c"}, "embedding": vec(k), "metadata": {"n": k}}
            for k in (3, 4)
        ],
    )
    runner.update_many("notes", [{"key": 4, "changes": {"body": "d"}, "metadata": {"n": 40}}])
    return {k: _metadata(runner, k) for k in (1, 2, 3, 4)}


def _links(key: int) -> dict[str, Any]:
    return {"sqlite_table": "notes", "sqlite_record_id": key}


def test_by_default_a_vector_holds_exactly_the_callers_metadata(
    runner: SagaRunner, db_path: Path
) -> None:
    assert runner.spec("notes").link_keys is False

    stored = _write_all_kinds(runner)

    assert stored == {1: {"lang": "fr"}, 2: {}, 3: {"n": 3}, 4: {"n": 40}}
    # Which saga wrote each vector is in the log, not in Chroma.
    assert all(s["saga_id"] for s in sync_states(db_path).values())
    assert runner.reconcile().clean


def test_link_keys_true_adds_the_two_link_keys_and_never_the_saga_id(
    db_path: Path, chroma_path: Path
) -> None:
    with _open(db_path, chroma_path) as runner:
        assert runner.track("notes", link_keys=True).link_keys is True

        stored = _write_all_kinds(runner)

        assert stored == {
            1: {"lang": "fr", **_links(1)},
            2: _links(2),
            3: {"n": 3, **_links(3)},
            4: {"n": 40, **_links(4)},
        }
        assert all("saga_id" not in m for m in stored.values())
        assert runner.reconcile().clean


def test_changing_link_keys_needs_migrate_and_the_setting_survives_a_reopen(
    db_path: Path, chroma_path: Path
) -> None:
    with _open(db_path, chroma_path) as runner:
        runner.track("notes")
        runner.create("notes", {"id": 1, "body": "a"}, embedding=vec(1), metadata={"v": 1})
        assert runner.track("notes", link_keys=False).link_keys is False  # as recorded: no-op
        with pytest.raises(ConfigurationError) as caught:
            runner.track("notes", link_keys=True)
        assert caught.value.field == "table"
        assert "migrate=True" in str(caught.value)
        assert runner.spec("notes").link_keys is False  # the refused track changed nothing
        assert [t["link_keys"] for t in log_snapshot(db_path)["saga_tracked_tables"]] == [0]

        assert runner.track("notes", link_keys=True, migrate=True).link_keys is True
        runner.update("notes", 1, {"body": "b"}, metadata={"v": 2})
        assert _metadata(runner, 1) == {"v": 2, **LINKS}

    with _open(db_path, chroma_path) as runner:
        # Persisted: ``None`` (the default) keeps the recorded setting after a reopen.
        assert runner.track("notes").link_keys is True
        runner.update("notes", 1, {"body": "c"}, metadata={"v": 3})
        assert _metadata(runner, 1) == {"v": 3, **LINKS}
        with pytest.raises(ConfigurationError):
            runner.track("notes", link_keys=False)
        assert runner.track("notes", link_keys=False, migrate=True).link_keys is False
        runner.update("notes", 1, {"body": "d"}, metadata={"v": 4})
        assert _metadata(runner, 1) == {"v": 4}

    with _open(db_path, chroma_path) as runner:
        assert runner.track("notes").link_keys is False
        assert runner.reconcile().clean


def test_link_keys_must_be_a_bool_or_none(runner: SagaRunner) -> None:
    with pytest.raises(ValidationError) as caught:
        runner.track("notes", link_keys=1)  # type: ignore[arg-type]
    assert caught.value.field == "link_keys"


def test_a_table_tracked_before_schema_7_keeps_its_link_keys(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    shutil.copy(V1_FIXTURE, db)  # "notes" tracked, two creates left pending
    with _open(db, tmp_path / "chroma") as runner:
        assert runner.spec("notes").link_keys is True
        assert runner.track("notes", dimension=4).link_keys is True  # None: as recorded
        assert runner.recover().resumed == 2
        assert _metadata(runner, 21) == {"from": "v1", **_links(21)}
        runner.create("notes", {"id": 1, "body": "new"}, embedding=[1.0, 0, 0, 0])
        assert _metadata(runner, 1) == LINKS
        assert runner.reconcile().clean


@pytest.mark.parametrize("link_keys", [False, True])
@pytest.mark.parametrize("reserved", ["sqlite_table", "sqlite_record_id", "saga_id"])
def test_a_callers_reserved_metadata_key_is_still_refused(
    db_path: Path, chroma_path: Path, link_keys: bool, reserved: str
) -> None:
    with _open(db_path, chroma_path) as runner:
        runner.track("notes", link_keys=link_keys)
        runner.create("notes", {"id": 1, "body": "a"}, embedding=vec(1), metadata={"v": 1})
        before = (rows(db_path), _metadata(runner, 1), runner.count("notes"))
        bad = {"v": 2, reserved: "x"}
        writes = [
            lambda: runner.create("notes", {"id": 2, "body": "b"}, embedding=vec(2), metadata=bad),
            lambda: runner.update("notes", 1, {"body": "b"}, metadata=bad),
            lambda: runner.create_many(
                "notes",
                [
                    {"row": {"id": 3, "body": "c"}, "embedding": vec(3)},
                    {"row": {"id": 4, "body": "d"}, "embedding": vec(4), "metadata": bad},
                ],
            ),
        ]
        for write in writes:
            with pytest.raises(ValidationError) as caught:
                write()
            assert caught.value.field == f"metadata.{reserved}"
        assert (rows(db_path), _metadata(runner, 1), runner.count("notes")) == before
