"""``saga.aio.AsyncSagaRunner`` on real stores (a SQLite file, embedded Chroma), from plain
asyncio: hundreds of concurrent tasks, every acknowledged write in both stores exactly and
nothing else; conflicts, cancellation and closing; asyncio Chroma clients refused."""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
import threading
import warnings
from array import array
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.api.async_client import AsyncClient
from chromadb.config import Settings

from saga import (
    ConfigurationError,
    RetryPolicy,
    SagaConflictError,
    SagaError,
    SagaResult,
    SagaRunner,
    ValidationError,
    failpoints,
)
from saga._unit import AtomicUnit
from saga.aio import DEFAULT_MAX_WORKERS, AsyncAtomicUnit, AsyncSagaRunner
from tests._probe import sync_states
from tests.conftest import rows, saga_state, sql, stored_vectors


def _embedding(key: int, version: int) -> list[float]:
    """Small integers and halves: exact in float32, so compared bit for bit."""
    return [float(key), float(version), key / 2, 1.0]


def _write(key: int, version: int) -> dict[str, Any]:
    return {
        "body": f"body {key} v{version}",
        "embedding": _embedding(key, version),
        "document": f"doc {key} v{version}",
        "metadata": {"key": key, "version": version},
    }


async def _open(db_path: Path, chroma_path: Path, **options: Any) -> AsyncSagaRunner:
    runner = await AsyncSagaRunner.open(
        db_path, chroma_path=chroma_path, retry=RetryPolicy.disabled(), **options
    )
    await runner.track("notes")
    return runner


async def _create(runner: AsyncSagaRunner, key: int, version: int = 1) -> SagaResult:
    w = _write(key, version)
    return await runner.create(
        "notes",
        {"id": key, "body": w["body"]},
        embedding=w["embedding"],
        document=w["document"],
        metadata=w["metadata"],
    )


async def _update(runner: AsyncSagaRunner, key: int, version: int) -> SagaResult:
    w = _write(key, version)
    return await runner.update(
        "notes",
        key,
        {"body": w["body"]},
        embedding=w["embedding"],
        document=w["document"],
        metadata=w["metadata"],
    )


def _saga_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("saga-aio")]


# -- 200 concurrent tasks ---------------------------------------------------------------


def test_hundreds_of_concurrent_tasks_lose_and_invent_nothing(
    db_path: Path, chroma_path: Path
) -> None:
    before = set(range(1, 101))  # written first; then updated, deleted or left alone
    updated, deleted = set(range(1, 51)), set(range(51, 81))
    created = set(range(1001, 1201))  # 200 creates, all at once with the rest

    async def main() -> tuple[list[Any], dict[str, Any]]:
        async with await _open(db_path, chroma_path) as runner:
            first = await asyncio.gather(*(_create(runner, k) for k in sorted(before)))
            tasks = [
                *(_create(runner, k) for k in sorted(created)),
                *(_update(runner, k, 2) for k in sorted(updated)),
                *(runner.delete("notes", k) for k in sorted(deleted)),
            ]
            assert len(tasks) == 280
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            threads = _saga_threads()  # the pool's, idle now: never one per task
            assert 0 < len(threads) <= DEFAULT_MAX_WORKERS
            assert await runner.in_flight() == []
            report = await runner.reconcile()
            assert report.clean, report
            assert _saga_threads() == threads
            vectors = stored_vectors(runner.sync)
        assert not any(t.is_alive() for t in threads)  # closing stopped the pool
        return [*first, *outcomes], vectors

    acknowledged, vectors = asyncio.run(main())

    assert [o for o in acknowledged if not isinstance(o, SagaResult)] == []
    assert {o.state for o in acknowledged} == {"synced"}
    assert all(saga_state(db_path, o.saga_id) == "synced" for o in acknowledged)
    expected = {k: _write(k, 2 if k in updated else 1) for k in (before - deleted) | created}
    by_key = {o.keys[0]: o for o in acknowledged}  # the last saga of each key (list order)

    # SQLite: exactly the expected rows, as written.
    stored = rows(db_path)
    assert set(stored) == set(expected)
    for key, w in expected.items():
        assert (stored[key]["body"], stored[key]["vector_id"]) == (w["body"], f"notes:{key}")

    # Chroma: exactly their vectors, with the embedding, document and metadata written.
    assert set(vectors) == {f"notes:{k}" for k in expected}
    for key, w in expected.items():
        embedding, document, metadata = vectors[f"notes:{key}"]
        assert embedding == array("f", w["embedding"]).tobytes(), key
        assert document == w["document"], key
        assert dict(metadata or {}) == w["metadata"], key  # exactly the caller's
    # The log names, for each vector, the last saga of its key as its writer.
    writers = {vid: s["saga_id"] for vid, s in sync_states(db_path).items()}
    assert writers == {f"notes:{k}": by_key[k].saga_id for k in expected}


# -- conflicts, cancellation, closing ---------------------------------------------------


def test_a_second_saga_on_a_key_in_flight_raises_saga_conflict_error_from_the_coroutine(
    db_path: Path, chroma_path: Path
) -> None:
    async def main() -> None:
        async with await _open(db_path, chroma_path) as runner:
            await _create(runner, 7)
            failpoints.configure("after:pending=sleep:1*1")  # the update holds key 7
            update = asyncio.create_task(_update(runner, 7, 2))
            while not await runner.in_flight():
                await asyncio.sleep(0.01)
            with pytest.raises(SagaConflictError) as refused:
                await runner.delete("notes", 7)
            assert refused.value.key == 7
            assert (await update).state == "synced"
            assert (await runner.row("notes", 7) or {})["body"] == "body 7 v2"

    asyncio.run(main())


def test_a_call_cancelled_while_queued_writes_nothing(db_path: Path, chroma_path: Path) -> None:
    async def main() -> None:
        async with await _open(db_path, chroma_path, max_workers=1) as runner:
            failpoints.configure("after:pending=sleep:0.5*1")  # holds the only thread
            first = asyncio.create_task(_create(runner, 1))
            queued = asyncio.create_task(_create(runner, 2))
            await asyncio.sleep(0.1)
            queued.cancel()
            assert (await first).state == "synced"
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert await runner.row("notes", 2) is None
            assert (await runner.count("notes")).vectors == 1

    asyncio.run(main())
    assert set(rows(db_path)) == {1}


def test_async_with_closes_the_runner_its_pool_and_the_folder(
    db_path: Path, chroma_path: Path
) -> None:
    async def main() -> AsyncSagaRunner:
        async with await _open(db_path, chroma_path) as runner:
            await _create(runner, 1)
        assert runner.closed
        with pytest.raises(SagaError, match="closed"):
            await _create(runner, 2)
        await runner.close()  # again: nothing to do
        return runner

    closed = asyncio.run(main())
    assert _saga_threads() == []
    with pytest.raises(SagaError, match="closed"):
        closed.sync.in_flight()
    # The embedded folder is free again: a synchronous runner opens it.
    with SagaRunner.open(db_path, chroma_path=chroma_path) as again:
        assert again.row("notes", 1) is not None


PARENT_CHILD = """
CREATE TABLE parents (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, vector_id TEXT);
CREATE TABLE children (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parents (id),
    body TEXT NOT NULL,
    vector_id TEXT
);
"""


def test_atomic_units_from_concurrent_tasks_are_each_one_saga(
    db_path: Path, chroma_path: Path
) -> None:
    for statement in PARENT_CHILD.split(";")[:-1]:
        sql(db_path, statement)

    async def unit(runner: AsyncSagaRunner, n: int) -> tuple[int, SagaResult | None]:
        async with runner.atomic() as atomic:
            parent = await atomic.create("parents", {"body": f"p{n}"}, embedding=[n, 1.0, 0.0])
            await atomic.create(
                "children", {"id": n, "parent_id": parent, "body": f"c{n}"}, embedding=[n, 0, 1]
            )
        return int(parent), atomic.result

    async def abandon(runner: AsyncSagaRunner) -> None:
        async with runner.atomic() as abandoned:
            await abandoned.create("parents", {"body": "never"}, embedding=[0, 0, 0])
            raise RuntimeError("changed my mind")

    async def main() -> list[tuple[int, SagaResult | None]]:
        async with await _open(db_path, chroma_path) as runner:
            await runner.track("parents", dimension=3)
            await runner.track("children", dimension=3)
            done = await asyncio.gather(*(unit(runner, n) for n in range(1, 21)))
            with pytest.raises(RuntimeError, match="changed my mind"):
                await abandon(runner)
            assert await runner.in_flight() == []
            assert (await runner.reconcile()).clean
            return done

    done = asyncio.run(main())

    assert [r.state if r else None for _, r in done] == ["synced"] * 20
    parents, children = rows(db_path, "parents"), rows(db_path, "children")
    assert {p: row["body"] for p, row in parents.items()} == {
        p: f"p{n}" for n, (p, _) in enumerate(done, 1)
    }
    assert {c: (row["parent_id"], row["body"]) for c, row in children.items()} == {
        n: (p, f"c{n}") for n, (p, _) in enumerate(done, 1)
    }


def test_max_workers_must_be_a_positive_int(db_path: Path, chroma_path: Path) -> None:
    for bad in (0, -1, True, 2.0, "8"):
        with pytest.raises(ValidationError) as refused:
            asyncio.run(AsyncSagaRunner.open(db_path, chroma_path=chroma_path, max_workers=bad))
        assert refused.value.field == "max_workers"
    assert not chroma_path.exists()  # refused before anything was opened


def test_open_passes_recover_every_on(db_path: Path, chroma_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        asyncio.run(AsyncSagaRunner.open(db_path, chroma_path=chroma_path, recover_every=-1))
    assert refused.value.field == "recover_every"

    async def main() -> None:
        async with await _open(db_path, chroma_path, recover_every=60) as runner:
            assert (await _create(runner, 1)).state == "synced"

    asyncio.run(main())  # and closing stops the background recovery


def test_every_public_operation_of_the_runner_is_there_and_a_coroutine_if_it_does_io() -> None:
    plain = {"stores", "clock", "lease", "limits", "register", "definition", "atomic"}
    lifecycle = {"open", "from_stores", "close"}  # open and close are coroutines too
    public = {name for name in dir(SagaRunner) if not name.startswith("_")}
    # from_stores: AsyncSagaRunner(SagaRunner.from_stores(...)) wraps any runner.
    missing = sorted(public - {"from_stores"} - set(dir(AsyncSagaRunner)))
    assert missing == []
    for name in sorted(public - plain - lifecycle):
        assert inspect.iscoroutinefunction(getattr(AsyncSagaRunner, name)), name
        assert inspect.signature(getattr(AsyncSagaRunner, name)) == inspect.signature(
            getattr(SagaRunner, name)
        ), name
    for name in ("open", "close", "__aenter__", "__aexit__"):
        assert inspect.iscoroutinefunction(getattr(AsyncSagaRunner, name)), name
    unit = {name for name in dir(AtomicUnit) if not name.startswith("_")}
    assert unit <= set(dir(AsyncAtomicUnit))
    for name in sorted(unit - {"saga_id", "result"}):
        assert inspect.iscoroutinefunction(getattr(AsyncAtomicUnit, name)), name
    sync_open = inspect.signature(SagaRunner.open).parameters
    async_open = inspect.signature(AsyncSagaRunner.open).parameters
    assert set(sync_open) <= set(async_open)
    assert all(async_open[n].default == p.default for n, p in sync_open.items())


# -- asyncio clients --------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _async_client_object(port: int) -> AsyncClient:
    """An ``AsyncClientAPI`` built without a server (``AsyncHttpClient`` awaits one)."""
    return AsyncClient(
        settings=Settings(
            chroma_api_impl="chromadb.api.async_fastapi.AsyncFastAPI",
            chroma_server_host="127.0.0.1",
            chroma_server_http_port=port,
            anonymized_telemetry=False,
        )
    )


def test_the_synchronous_runner_refuses_an_asyncio_client_naming_async_saga_runner(
    tmp_path: Path,
) -> None:
    port = _unused_port()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        clients = [chromadb.AsyncHttpClient(host="127.0.0.1", port=port)]
        clients.append(_async_client_object(port))
        for client in clients:
            with pytest.raises(ConfigurationError) as refused:
                SagaRunner.open(tmp_path / "app.db", chroma_client=client)
            assert refused.value.field == "chroma_client"
            assert "saga.aio.AsyncSagaRunner" in str(refused.value)
            assert "chromadb.HttpClient" in str(refused.value)  # what the async one takes
        del clients, client
        gc.collect()
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []
    assert not (tmp_path / "app.db").exists()  # refused before anything was opened


def test_the_async_runner_refuses_an_asyncio_client_too(tmp_path: Path) -> None:
    async def main() -> None:
        port = _unused_port()
        for client in (
            chromadb.AsyncHttpClient(host="127.0.0.1", port=port),
            _async_client_object(port),
        ):
            with pytest.raises(ConfigurationError) as refused:
                await AsyncSagaRunner.open(tmp_path / "app.db", chroma_client=client)
            assert refused.value.field == "chroma_client"
            assert "thread pool" in str(refused.value)
            assert "chromadb.HttpClient" in str(refused.value)

    asyncio.run(main())
    assert not (tmp_path / "app.db").exists()
