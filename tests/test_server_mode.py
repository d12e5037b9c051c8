"""Server mode: a real ``chroma run`` behind a fault proxy; bounded calls; error mapping.

The fault matrix on whole sagas is in ``test_server_faults.py``; this file checks the
adapter's seam one Chroma call at a time, plus the read-back on the embedded client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import attrs
import chromadb
import httpx
import pytest
from chromadb.config import Settings

from saga import (
    ChromaTimeouts,
    DataIntegrityError,
    RetryPolicy,
    SagaRunner,
    VectorRecord,
    VectorStoreError,
    VectorStoreTimeout,
    VectorStoreUnavailable,
    failpoints,
)
from stores.chroma import ChromaVectorStore, maybe_applied
from tests.chroma_server import ChromaServer
from tests.conftest import rows, vec, vector_ids
from tests.faultproxy import FaultProxy

pytest.register_assert_rewrite("tests.server_fixtures")  # its checks assert; before import

from tests import server_fixtures as fx  # noqa: E402

pytest_plugins = ["tests.server_fixtures"]

# Thread start, SQLite and the scheduler's slack on a loaded CI machine.
MARGIN = 0.5


def _store(port: int, retry: RetryPolicy, timeouts: ChromaTimeouts) -> ChromaVectorStore:
    return ChromaVectorStore.http(fx.HOST, port, retry=retry, timeouts=timeouts)


def _record(key: int, document: str = "doc") -> VectorRecord:
    return VectorRecord(
        id=f"notes:{key}", embedding=tuple(vec(key)), document=document, metadata={"k": key}
    )


# -- server mode is reachable both ways ----------------------------------------------------


@pytest.mark.chroma_server
def test_the_chromadb_session_is_where_the_adapter_bounds_it(chroma_server: ChromaServer) -> None:
    # A canary for chromadb upgrades: 1.5 keeps an unbounded httpx session here.
    client = chromadb.HttpClient(
        host=fx.HOST, port=chroma_server.port, settings=Settings(anonymized_telemetry=False)
    )
    try:
        session = client._server._session
        assert isinstance(session, httpx.Client)
        assert session.timeout == httpx.Timeout(None)
        store = ChromaVectorStore(client, remote=True, retry=fx.RETRY, timeouts=fx.TIMEOUTS)
        assert store.session_bounded
        assert session.timeout == httpx.Timeout(connect=0.5, read=1.0, write=1.0, pool=0.5)
    finally:
        client.close()


@pytest.mark.chroma_server
def test_a_runner_on_an_http_client_writes_both_stores(world: fx.World) -> None:
    client = chromadb.HttpClient(
        host=fx.HOST, port=world.proxy.port, settings=Settings(anonymized_telemetry=False)
    )
    try:
        runner = world.open(client=client)
        assert runner.stores.vectors.remote
        assert runner.stores.vectors.session_bounded

        runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")
        runner.create_many(
            "notes",
            [
                {"row": {"id": k, "body": f"n{k}"}, "embedding": vec(k), "document": f"n{k}"}
                for k in (2, 3)
            ],
        )
        runner.update("notes", 2, {"body": "two"}, embedding=vec(2.5), document="two")
        runner.delete("notes", 3)

        assert world.assert_consistent() == {1: "one", 2: "two"}
        hits = runner.query("notes", embedding=vec(1), n_results=2)
        assert [hit.key for hit in hits] == [1, 2]
        runner.close()
        assert not client._server._session.is_closed  # the caller's client stays theirs
    finally:
        client.close()


@pytest.mark.chroma_server
def test_a_runner_on_host_and_port_owns_and_closes_its_client(world: fx.World) -> None:
    runner = world.open()
    store = runner.stores.vectors
    assert isinstance(store, ChromaVectorStore)
    assert store.remote
    assert store.session_bounded
    # The lease is renewed before a vector step with less left than a write and its
    # read-back may take.
    assert runner._services.engine.step_budget == 2 * fx.bound(fx.RETRY, fx.TIMEOUTS)

    runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")
    assert world.assert_consistent() == {1: "one"}
    session = store.client._server._session
    runner.close()
    assert session.is_closed


# -- every call is bounded -----------------------------------------------------------------


@pytest.mark.chroma_server
def test_the_whole_call_deadline_cuts_a_call_that_httpx_would_let_hang(
    world: fx.World, proxy: FaultProxy
) -> None:
    # httpx would wait 30 s for a byte; the deadline answers first.
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=30.0, call=0.5))
    store.count(world.collection)  # the collection is looked up while healthy
    fx.switch(proxy, "hang")

    with (
        fx.timed() as took,
        pytest.raises(VectorStoreTimeout, match="no answer to count") as caught,
    ):
        store.count(world.collection)

    assert 0.5 <= took[0] < 0.5 + MARGIN
    assert caught.value.__cause__ is None  # our deadline, not httpx
    store.close()


@pytest.mark.chroma_server
def test_httpx_read_timeout_is_set_on_the_session(world: fx.World, proxy: FaultProxy) -> None:
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=0.3, call=30.0))
    store.count(world.collection)
    fx.switch(proxy, "hang")

    with fx.timed() as took, pytest.raises(VectorStoreTimeout) as caught:
        store.count(world.collection)

    assert 0.3 <= took[0] < 0.3 + MARGIN
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    store.close()


@pytest.mark.chroma_server
def test_retries_stay_within_the_retry_budget(world: fx.World, proxy: FaultProxy) -> None:
    retry = RetryPolicy(attempts=50, wait_initial=0.01, wait_max=0.05, timeout=1.0)
    timeouts = ChromaTimeouts(connect=0.5, read=30.0, call=0.4)
    store = _store(proxy.port, retry, timeouts)
    store.count(world.collection)
    fx.switch(proxy, "hang")
    before = proxy.connections_seen

    with fx.timed() as took, pytest.raises(VectorStoreTimeout):
        store.count(world.collection)

    assert store.call_bound == fx.bound(retry, timeouts) == 1.0
    assert took[0] < store.call_bound + MARGIN
    assert proxy.connections_seen - before >= 2  # it did retry, on fresh connections
    store.close()


@pytest.mark.chroma_server
@pytest.mark.parametrize(
    ("mode", "error"),
    [("hang", VectorStoreTimeout), ("down", VectorStoreUnavailable)],
)
def test_opening_a_runner_on_a_sick_server_fails_within_the_bound(
    world: fx.World, proxy: FaultProxy, mode: str, error: type[Exception]
) -> None:
    timeouts = ChromaTimeouts(connect=0.25, read=0.5, call=0.75)
    proxy.set_mode(mode)
    with fx.timed() as took, pytest.raises(error):
        SagaRunner.open(
            world.db,
            chroma_host=fx.HOST,
            chroma_port=proxy.port,
            retry=fx.ONE_TRY,
            chroma_timeouts=timeouts,
        )
    assert took[0] < timeouts.call + MARGIN


# -- errors are classified at the seam -----------------------------------------------------


SENT_THEN_CUT = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)


@pytest.mark.chroma_server
@pytest.mark.parametrize(
    ("fault", "causes"),
    [
        ("hang", (httpx.ReadTimeout,)),
        ("drop_response", (httpx.ReadTimeout,)),
        ("down", (httpx.ConnectError,)),
        # A connection reset as it opens fails in httpx's connect phase (nothing sent);
        # one reset later fails on the read: both happen, depending on who is faster.
        ("reset", (httpx.ConnectError, *SENT_THEN_CUT)),
        ("reset-mid-request", SENT_THEN_CUT),
    ],
)
def test_network_faults_are_transient_and_ambiguous_once_sent(
    world: fx.World, proxy: FaultProxy, fault: str, causes: tuple[type[Exception], ...]
) -> None:
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=0.5, call=2.0))
    store.count(world.collection)
    if fault == "reset-mid-request":
        fx.switch(proxy, "latency", 0.3)  # the request sits in the proxy...
        _after(0.15, lambda: proxy.set_mode("reset"))  # ...when the connection is cut
    else:
        # Also: the proxy has cut idle keep-alive connections by then, so on "down" the
        # request meets the refusal, not a connection cut earlier (ReadError).
        fx.switch(proxy, fault)

    with pytest.raises(VectorStoreUnavailable) as caught:  # VectorStoreTimeout is one too
        store.count(world.collection)

    error = caught.value
    assert error.transient
    assert isinstance(error.__cause__, causes)
    assert "Chroma" in str(error)
    # Only a request that never left cannot have been applied.
    assert maybe_applied(error) is not isinstance(error.__cause__, httpx.ConnectError)
    store.close()


@pytest.mark.chroma_server
@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (502, "<html>Bad Gateway</html>", True),
        (503, "upstream connect error", True),
        (429, "Too Many Requests", True),
        (500, '{"error": "InternalError", "message": "boom"}', True),
        (400, '{"error": "InvalidArgumentError", "message": "bad"}', False),
        (404, "no such route", False),
        (413, "Request Entity Too Large", False),
    ],
)
def test_http_errors_are_classified_by_status(
    world: fx.World,
    status_proxy: fx.StatusProxy,
    status: int,
    body: str,
    transient: bool,
) -> None:
    retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, timeout=3.0)
    store = _store(status_proxy.port, retry, fx.TIMEOUTS)
    store.count(world.collection)
    status_proxy.answer(status, body)

    with pytest.raises(VectorStoreError) as caught:
        store.count(world.collection)

    assert caught.value.transient is transient
    assert isinstance(caught.value, VectorStoreUnavailable) is transient
    assert status_proxy.answered == (3 if transient else 1)  # only transient ones retried
    store.close()


@pytest.mark.chroma_server
def test_a_write_the_server_answered_with_503_is_not_read_back(
    world: fx.World, status_proxy: fx.StatusProxy
) -> None:
    store = _store(status_proxy.port, fx.ONE_TRY, fx.TIMEOUTS)
    store.count(world.collection)
    status_proxy.answer(503, "maintenance")

    with pytest.raises(VectorStoreUnavailable):
        store.upsert(world.collection, [_record(1)])

    assert status_proxy.answered == 1
    assert not store.read_backs
    store.close()


@pytest.mark.chroma_server
def test_bad_requests_from_the_real_server_are_permanent(world: fx.World) -> None:
    store = _store(world.proxy.port, fx.RETRY, fx.TIMEOUTS)
    store.upsert(world.collection, [_record(1)])
    wrong = VectorRecord(id="notes:2", embedding=(1.0, 2.0), document="d", metadata=None)

    with pytest.raises(VectorStoreError) as caught:
        store.upsert(world.collection, [wrong])
    assert not caught.value.transient
    with pytest.raises(VectorStoreError) as caught:
        store.upsert(world.collection, [_record(3), _record(3)])  # duplicate ids
    assert not caught.value.transient
    assert not store.read_backs
    store.close()


# -- ambiguous writes are settled by reading back ---------------------------------------------


@pytest.mark.chroma_server
@pytest.mark.parametrize("write", ["upsert", "replace", "delete"])
def test_a_lost_answer_is_settled_by_reading_back(
    world: fx.World, proxy: FaultProxy, write: str
) -> None:
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=0.5, call=2.0))
    store.upsert(world.collection, [_record(0)])  # the collection is looked up while healthy
    if write != "upsert":
        old = VectorRecord(
            id="notes:1", embedding=tuple(vec(1)), document="old", metadata={"k": 1, "gone": 2}
        )
        store.upsert(world.collection, [old])
    fx.switch(proxy, "drop_response")
    # Heal while the client still waits for an answer that the proxy threw away.
    healer = _after(0.25, lambda: proxy.set_mode("pass"))

    if write == "upsert":
        store.upsert(world.collection, [_record(1)])
    elif write == "replace":  # Chroma merges metadata: None removes a key
        new = VectorRecord(
            id="notes:1", embedding=tuple(vec(2)), document="new", metadata={"k": 1, "gone": None}
        )
        store.upsert(world.collection, [new])
    else:
        store.delete(world.collection, ["notes:1"])

    healer.join()
    kind = "delete" if write == "delete" else "upsert"
    assert store.read_backs == {f"{kind}:applied": 1}
    stored = world.vectors().get("notes:1")
    if write == "delete":
        assert stored is None
    else:
        assert stored is not None
        assert stored["metadata"] == {"k": 1}
    store.close()


@pytest.mark.chroma_server
def test_a_write_that_never_arrived_is_reported_by_reading_back(
    world: fx.World, proxy: FaultProxy
) -> None:
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=0.5, call=2.0))
    store.count(world.collection)
    fx.switch(proxy, "hang")  # the request is swallowed, never forwarded
    healer = _after(0.25, lambda: proxy.set_mode("pass"))

    with pytest.raises(VectorStoreTimeout):
        store.upsert(world.collection, [_record(1)])

    healer.join()
    assert store.read_backs == {"upsert:not_applied": 1}
    assert world.vectors() == {}
    store.close()


@pytest.mark.chroma_server
@pytest.mark.parametrize("differs", ["document", "embedding", "metadata"])
def test_a_vector_of_another_saga_does_not_count_as_applied(
    world: fx.World, proxy: FaultProxy, differs: str
) -> None:
    """The vector stored under the id differs from the one sent in one field only: it is
    another write's, not this one applied (the metadata names no saga any more)."""
    store = _store(proxy.port, fx.ONE_TRY, ChromaTimeouts(connect=0.5, read=0.5, call=2.0))
    store.upsert(world.collection, [_record(1, "old")])
    fx.switch(proxy, "hang")
    healer = _after(0.25, lambda: proxy.set_mode("pass"))
    mine = {
        "document": _record(1, "new"),
        "embedding": attrs.evolve(_record(1, "old"), embedding=tuple(vec(2))),
        "metadata": attrs.evolve(_record(1, "old"), metadata={"k": 2}),
    }[differs]

    with pytest.raises(VectorStoreTimeout):
        store.upsert(world.collection, [mine])

    healer.join()
    assert store.read_backs == {"upsert:not_applied": 1}
    store.close()


def test_embedded_reads_back_a_write_whose_answer_was_lost(
    runner: SagaRunner, db_path: Path
) -> None:
    with failpoints.armed("chroma.upsert.after=raise:chroma-timeout"):
        runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")

    assert runner.stores.vectors.read_backs == {"upsert:applied": 1}
    assert set(rows(db_path)) == {1}
    assert vector_ids(runner) == {"notes:1"}


def test_embedded_compensates_a_write_that_read_back_shows_missing(
    runner: SagaRunner, db_path: Path
) -> None:
    with (
        failpoints.armed("chroma.upsert=raise:chroma-timeout"),
        pytest.raises(DataIntegrityError) as caught,
    ):
        runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")

    assert isinstance(caught.value.cause, VectorStoreTimeout)
    assert runner.stores.vectors.read_backs == {"upsert:not_applied": 1}
    assert rows(db_path) == {}
    assert vector_ids(runner) == set()


def test_embedded_read_back_tells_another_vector_by_its_embedding(
    runner: SagaRunner, db_path: Path
) -> None:
    """An update of the embedding alone keeps the stored document and metadata, so the
    stored vector and the one sent differ only there: a write that never arrived must
    be read back as not applied (else the row would commit over the old vector)."""
    runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")

    with (
        failpoints.armed("chroma.upsert=raise:chroma-timeout*1"),
        pytest.raises(DataIntegrityError) as caught,
    ):
        runner.update("notes", 1, {"body": "two"}, embedding=vec(2))

    assert isinstance(caught.value.cause, VectorStoreTimeout)
    assert runner.stores.vectors.read_backs == {"upsert:not_applied": 1}
    assert rows(db_path)[1]["body"] == "one"
    stored = runner.vectors_of("notes", [1], embeddings=True)[1]
    assert stored.embedding == pytest.approx(vec(1))
    assert runner.reconcile().clean


def test_embedded_compensates_when_the_read_back_fails_too(
    runner: SagaRunner, db_path: Path
) -> None:
    armed = "chroma.upsert.after=raise:chroma-timeout;chroma.readback=raise:chroma-unavailable*1"
    with failpoints.armed(armed), pytest.raises(DataIntegrityError) as caught:
        runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")

    assert isinstance(caught.value.cause, VectorStoreTimeout)
    assert "may or may not have been applied" in str(caught.value.cause)
    assert rows(db_path) == {}
    assert vector_ids(runner) == set()  # compensation deleted what may have been written


def test_a_5xx_injected_after_the_write_is_not_read_back(runner: SagaRunner, db_path: Path) -> None:
    # The server answered, so the saga compensates (the failpoint tests rely on that).
    with (
        failpoints.armed("chroma.upsert.after=raise:chroma-unavailable"),
        pytest.raises(DataIntegrityError),
    ):
        runner.create("notes", {"id": 1, "body": "one"}, embedding=vec(1), document="one")

    assert not runner.stores.vectors.read_backs
    assert vector_ids(runner) == set()


def _after(seconds: float, action: Callable[[], None]) -> threading.Thread:
    thread = threading.Timer(seconds, action)
    thread.start()
    return thread
