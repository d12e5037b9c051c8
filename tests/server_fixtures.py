"""Server-mode fixtures: a real ``chroma run`` per test module, a fault proxy per test.

Test modules load this with ``pytest_plugins = ["tests.server_fixtures"]``. Each test gets
a fresh SQLite file and a fresh collection on the module's server; the runner under test
reaches Chroma through a ``FaultProxy``, while checks read Chroma directly (``World.direct``)
and SQLite with their own connection, so a check never goes through the fault.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
from chromadb.config import Settings

from saga import (
    ChromaTimeouts,
    CompensationError,
    DataIntegrityError,
    LeaseLostError,
    LeasePolicy,
    RetryPolicy,
    SagaConflictError,
    SagaError,
    SagaRunner,
    StoreError,
    ValidationError,
)
from tests._probe import sync_states
from tests.chroma_server import ChromaServer
from tests.conftest import DIM, make_db, rewired, rows, vec
from tests.faultproxy import FaultProxy

HOST = "127.0.0.1"

# The everyday test profile: one call is bounded by 2 s, a retried call by 3 s.
TIMEOUTS = ChromaTimeouts(connect=0.5, read=1.0, call=2.0)
RETRY = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.05, timeout=3.0)
# Where a fault lasts the whole call: small bounds keep the test short.
FAST_TIMEOUTS = ChromaTimeouts(connect=0.2, read=0.3, call=0.5)
FAST_RETRY = RetryPolicy(attempts=2, wait_initial=0.01, wait_max=0.05, timeout=0.5)
# Backoff long enough to outlive a short fault (reset, down): the retry is what heals.
PATIENT_RETRY = RetryPolicy(attempts=4, wait_initial=0.2, wait_max=0.5, timeout=3.0)
# No retry: the read-back alone settles an ambiguous write.
ONE_TRY = RetryPolicy(attempts=1, wait_initial=0.0, wait_max=0.0, timeout=3.0)
# Nobody else claims a saga in these tests; a short lease lets recovery run soon after.
SHORT_LEASE = LeasePolicy(ttl=1.0)
# Workloads, where recovery runs while sagas are live: a vector step (a write and its
# read-back, 2 x 1 s at most) must fit in half the lease, which is renewed before it.
WORKLOAD_TIMEOUTS = ChromaTimeouts(connect=0.25, read=0.5, call=1.0)
WORKLOAD_RETRY = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.05, timeout=1.0)
WORKLOAD_LEASE = LeasePolicy(ttl=5.0)


def switch(proxy: FaultProxy, mode: str, seconds: float | None = None) -> None:
    """Set the proxy's mode and wait until open connections follow it too.

    A connection's thread reads the mode before it waits (up to 50 ms) for data, so a
    request sent on a kept-alive connection right after ``set_mode`` can still be
    handled in the old mode.
    """
    if seconds is None:
        proxy.set_mode(mode)
    else:
        proxy.set_mode(mode, seconds=seconds)
    time.sleep(0.1)


def bound(retry: RetryPolicy, timeouts: ChromaTimeouts) -> float:
    """The most one retried Chroma call may take, in seconds (see ``stores.chroma``)."""
    return max(retry.timeout, timeouts.call)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One real ``chroma run`` per test module (start-up costs about a second)."""
    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server


@pytest.fixture
def proxy(chroma_server: ChromaServer) -> Iterator[FaultProxy]:
    with FaultProxy(chroma_server.host, chroma_server.port) as running:
        yield running


@pytest.fixture
def world(tmp_path: Path, chroma_server: ChromaServer, proxy: FaultProxy) -> Iterator[World]:
    found = World(tmp_path, chroma_server, proxy)
    try:
        yield found
    finally:
        found.close()


# -- the world of one test -------------------------------------------------------------


class World:
    """A fresh database and collection on the shared server, and the probes to check them."""

    def __init__(self, tmp_path: Path, server: ChromaServer, proxy: FaultProxy) -> None:
        self.db = make_db(tmp_path / "app.db")
        self.server = server
        self.proxy = proxy
        self.collection = f"notes-{uuid.uuid4().hex[:12]}"
        self.direct = chromadb.HttpClient(
            host=server.host, port=server.port, settings=Settings(anonymized_telemetry=False)
        )
        self._runners: list[SagaRunner] = []

    def open(
        self,
        *,
        timeouts: ChromaTimeouts = TIMEOUTS,
        retry: RetryPolicy = RETRY,
        lease: LeasePolicy = SHORT_LEASE,
        client: Any = None,
    ) -> SagaRunner:
        """A runner through the proxy (``chroma_host``/``chroma_port``, or ``client``)."""
        runner = SagaRunner.open(
            self.db,
            chroma_client=client,
            chroma_host=None if client is not None else HOST,
            chroma_port=None if client is not None else self.proxy.port,
            chroma_timeouts=timeouts,
            retry=retry,
            lease=lease,
        )
        self._runners.append(runner)
        runner.track("notes", collection=self.collection, dimension=DIM)
        return runner

    def vectors(self) -> dict[str, dict[str, Any]]:
        """Every vector of the collection, read straight from the server."""
        found = self.direct.get_or_create_collection(self.collection, embedding_function=None)
        got = found.get(include=["documents", "metadatas"])
        return {
            vid: {"document": doc, "metadata": meta}
            for vid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }

    def assert_consistent(self) -> dict[int, str | None]:
        """Both stores hold the same records, linked both ways (the row names its vector,
        the vector's id ``notes:key`` its row, and the log records that pair), each
        vector with exactly the caller's metadata (none: these writes pass none);
        returns key -> body."""
        table = rows(self.db)
        vectors = self.vectors()
        states = sync_states(self.db)
        assert set(vectors) == {f"notes:{k}" for k in table}, "orphan vector or missing vector"
        for key, row in table.items():
            vector = vectors[f"notes:{key}"]
            assert row["vector_id"] == f"notes:{key}"
            assert vector["document"] == row["body"], f"key {key}: stores disagree"
            assert not vector["metadata"], f"key {key}: metadata the caller never sent"
            state = states[f"notes:{key}"]
            assert (state["sqlite_table"], state["sqlite_record_id"]) == ("notes", key)
            assert state["sync_status"] in ("synced", "failed"), state  # nothing in flight
        return {int(str(k)): str(r["body"]) for k, r in table.items()}

    def settle(self, *, older_than: dt.timedelta = dt.timedelta(0)) -> None:
        """Heal the network, recover every saga left in flight, and check the result."""
        self.proxy.set_mode("pass")
        runner = self.open()
        deadline = time.monotonic() + 30
        while runner.in_flight():
            runner.recover(older_than=older_than)
            assert time.monotonic() < deadline, runner.in_flight()
            time.sleep(0.1)  # a lease held by a live runner of this pid must expire first
        report = runner.reconcile()
        assert report.clean, report
        self.assert_consistent()

    def close(self) -> None:
        for runner in self._runners:
            runner.close()
        self.direct.close()


def swap_vectors(runner: SagaRunner, store: Any) -> SagaRunner:
    """A runner like ``runner`` on ``store`` (a wrapper of the real adapter)."""
    return rewired(runner, vectors=store)


# -- faults on a schedule ----------------------------------------------------------------

Step = tuple[float, str, float | None]  # (seconds after the trigger, mode, latency seconds)


class FaultAtWrite:
    """The real Chroma adapter, wrapped: the first forward write starts a fault schedule.

    ``upsert`` and ``delete`` are what a saga's vector step calls, so the fault hits the
    write itself, not the read of before-images that precedes it. Every port call is
    timed (``calls``: method, seconds, error or None).
    """

    def __init__(self, store: Any, proxy: FaultProxy, schedule: Sequence[Step]) -> None:
        self.store = store
        self.proxy = proxy
        self.schedule = list(schedule)
        self.calls: list[tuple[str, float, BaseException | None]] = []
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def upsert(self, collection: str, records: Sequence[Any]) -> None:
        self._timed("upsert", bool(records), lambda: self.store.upsert(collection, records))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._timed("delete", bool(ids), lambda: self.store.delete(collection, ids))

    def _timed(self, name: str, real: bool, action: Callable[[], None]) -> None:
        if real and not self._started.is_set():
            self._started.set()
            self._thread = threading.Thread(target=self._play, daemon=True)
            self._thread.start()
            time.sleep(0.1)  # the first step reaches open connections (see ``switch``)
        began = time.monotonic()
        try:
            action()
        except BaseException as exc:
            self.calls.append((name, time.monotonic() - began, exc))
            raise
        self.calls.append((name, time.monotonic() - began, None))

    def _play(self) -> None:
        began = time.monotonic()
        for at, mode, seconds in self.schedule:
            if self._stop.wait(max(0.0, began + at - time.monotonic())):
                return
            if mode in ("latency", "drip"):
                self.proxy.set_mode(mode, seconds=seconds or 0.0)
            else:
                self.proxy.set_mode(mode)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def worst(self) -> float:
        return max((seconds for _, seconds, _ in self.calls), default=0.0)


class FaultCycler:
    """Cycles the proxy through random modes (seeded) until stopped; ends in ``pass``."""

    MODES: tuple[tuple[str, float | None], ...] = (
        ("pass", None),
        ("pass", None),  # a healthy network half the time, so that work gets done
        ("latency", 0.1),
        ("hang", None),
        ("reset", None),
        ("down", None),
        ("drop_response", None),
    )

    def __init__(self, proxy: FaultProxy, seed: int, hold: tuple[float, float]) -> None:
        self.proxy = proxy
        self.random = random.Random(seed)
        self.hold = hold
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FaultCycler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.proxy.set_mode("pass")

    def _run(self) -> None:
        while not self._stop.is_set():
            mode, seconds = self.random.choice(self.MODES)
            if seconds is None:
                self.proxy.set_mode(mode)
            else:
                self.proxy.set_mode(mode, seconds=seconds)
            self.seen.append(mode)
            self._stop.wait(self.random.uniform(*self.hold))


# -- a workload and its model ------------------------------------------------------------

OK, FAILED, UNSETTLED, REFUSED, STORE_ERROR = "ok", "failed", "unsettled", "refused", "store"


def run_one(runner: SagaRunner, rng: random.Random, keys: Sequence[int], tag: str) -> list[dict]:
    """One random write on ``keys``; returns one outcome record per key it touched."""
    kind = rng.choice(("create", "create", "update", "delete", "create_many"))
    key = rng.choice(keys)
    body = f"{kind}-{tag}"
    touched = [key]
    try:
        if kind == "create":
            runner.create("notes", {"id": key, "body": body}, embedding=vec(key), document=body)
        elif kind == "update":
            runner.update("notes", key, {"body": body}, embedding=vec(key + 1), document=body)
        elif kind == "delete":
            runner.delete("notes", key)
        else:
            touched = sorted({key, rng.choice(keys)})
            runner.create_many(
                "notes",
                [
                    {"row": {"id": k, "body": body}, "embedding": vec(k), "document": body}
                    for k in touched
                ],
            )
        outcome, error = OK, None
    except DataIntegrityError as exc:
        outcome, error = FAILED, str(exc)
    except (CompensationError, LeaseLostError) as exc:
        # Left in flight; or taken over mid-way by a recovery that thought us gone.
        outcome, error = UNSETTLED, f"{type(exc).__name__}: {exc}"
    except (ValidationError, SagaConflictError) as exc:
        outcome, error = REFUSED, f"{type(exc).__name__}: {exc}"
    except StoreError as exc:  # raised before any saga existed (e.g. reading before-images)
        outcome, error = STORE_ERROR, f"{type(exc).__name__}: {exc}"
    except SagaError as exc:
        outcome, error = "other", f"{type(exc).__name__}: {exc}"
    new = None if kind == "delete" else body
    return [
        {"key": k, "kind": kind, "new": new, "outcome": outcome, "error": error} for k in touched
    ]


def expected_states(log: Sequence[dict]) -> dict[int, set[str | None]]:
    """For every key, the bodies it may hold once recovery has run (None: absent).

    An acknowledged write fixes the state; a refused or compensated one changes nothing;
    one left to recovery (``CompensationError``) may end either way.
    """
    states: dict[int, set[str | None]] = {}
    for entry in log:
        now = states.setdefault(entry["key"], {None})
        if entry["outcome"] == OK:
            states[entry["key"]] = {entry["new"]}
        elif entry["outcome"] == UNSETTLED:
            now.add(entry["new"])
    return states


def assert_model(world: World, log: Sequence[dict]) -> None:
    """Every acknowledged write is in both stores; every failed one left nothing."""
    strange = [e for e in log if e["outcome"] == "other"]
    assert not strange, strange
    locked = [e for e in log if e["error"] and "locked" in e["error"]]
    assert not locked, locked
    log = [e for e in log if e["key"] is not None]  # opening a runner touched no key
    actual = world.assert_consistent()
    for key, allowed in expected_states(log).items():
        assert actual.get(key) in allowed, (key, actual.get(key), allowed)


def summary(log: Sequence[dict]) -> str:
    """Outcome counts, and the distinct errors behind them (for a failing test's output)."""
    counts = Counter(entry["outcome"] for entry in log)
    errors = Counter(str(entry["error"]).split(":")[0] for entry in log if entry["outcome"] != OK)
    return f"outcomes: {dict(counts)}; errors: {dict(errors)}"


def process_workload(
    db: str, port: int, collection: str, keys: list[int], seed: int, out: str, go: Any, stop: Any
) -> None:
    """A worker process: write random sagas through the proxy until told to stop.

    Outcomes are written as JSON to ``out`` when done, for the parent to check.
    """
    log: list[dict] = []
    with _open_patiently(db, port, collection, log) as runner:
        rng = random.Random(seed)
        Path(out + ".ready").touch()
        go.wait(60)
        workload(runner, runner, rng, keys, str(seed), stop.is_set, log)
    Path(out).write_text(json.dumps(log))


def _open_patiently(db: str, port: int, collection: str, log: list[dict]) -> SagaRunner:
    """Open and track, retrying for a while: on a loaded machine the first Chroma calls
    may overrun the small test bounds. Every failure is logged (a caller saw it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _open_and_track(db, port, collection)
        except StoreError as exc:
            log.append({"key": None, "outcome": "open", "error": f"{type(exc).__name__}: {exc}"})
            if time.monotonic() > deadline:
                raise


def _open_and_track(db: str, port: int, collection: str) -> SagaRunner:
    runner = SagaRunner.open(
        db,
        chroma_host=HOST,
        chroma_port=port,
        chroma_timeouts=WORKLOAD_TIMEOUTS,
        retry=WORKLOAD_RETRY,
        lease=WORKLOAD_LEASE,
    )
    try:
        runner.track("notes", collection=collection, dimension=DIM)
    except BaseException:
        runner.close()
        raise
    return runner


def workload(
    runner: SagaRunner,
    recoverer: SagaRunner,
    rng: random.Random,
    keys: Sequence[int],
    tag: str,
    done: Callable[[], bool],
    log: list[dict],
) -> None:
    """Random writes until ``done()``, with ``recoverer.recover()`` about every second,
    as an operator's cron would run ``saga recover`` (a saga left in flight holds its
    key: without recovery, every later write on it is refused)."""
    step, recovered = 0, time.monotonic()
    while not done():
        entries = run_one(runner, rng, keys, f"{tag}-{step}")
        log.extend(entries)
        step += 1
        if time.monotonic() - recovered > 1.0:
            with contextlib.suppress(SagaError):  # a fault may stop it: the next run goes on
                recoverer.recover()
            recovered = time.monotonic()
        if all(e["outcome"] == REFUSED for e in entries):
            time.sleep(0.01)  # every key busy: no hot loop


# -- a proxy that answers with HTTP errors -----------------------------------------------


class StatusProxy:
    """An HTTP proxy to Chroma that, when told, answers every request with one status.

    A load balancer in front of Chroma answers 502/503/429 with bodies chromadb does not
    know; Chroma itself answers with its own JSON errors. ``answer`` sets what to send.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.reply: tuple[int, str] | None = None
        self.answered = 0  # requests answered with ``reply``
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if owner.reply is not None:
                    owner.answered += 1
                    status, text = owner.reply
                    self._send(status, text.encode(), "application/json")
                    return
                upstream = httpx.request(
                    self.command,
                    owner.upstream + self.path,
                    content=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                    timeout=5,
                )
                kind = upstream.headers.get("Content-Type", "")
                self._send(upstream.status_code, upstream.content, kind)

            def _send(self, status: int, payload: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one

            def log_message(self, *_: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, status: int | None, text: str = "") -> None:
        self.reply = None if status is None else (status, text)
        self.answered = 0

    def __enter__(self) -> StatusProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def status_proxy(chroma_server: ChromaServer) -> Iterator[StatusProxy]:
    with StatusProxy(chroma_server.url) as running:
        yield running


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as took:`` ... ``took[0]`` is the block's duration in seconds."""
    took: list[float] = []
    began = time.monotonic()
    try:
        yield took
    finally:
        took.append(time.monotonic() - began)
