"""SQLite connections for the saga log: WAL, ``synchronous``, busy timeout, BEGIN IMMEDIATE.

One connection per thread (``threading.local``): a ``sqlite3.Connection`` must not be
shared between threads mid-transaction, and SQLite's own locking then serialises the
writers of all threads and processes. Every ``sqlite3`` error is translated into
``SqliteStoreError`` here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from saga import failpoints
from saga._config import SqliteOptions
from saga._errors import ConfigurationError, SqliteStoreError
from stores._schema import LOG_TABLES, MIGRATIONS, SCHEMA_VERSION

_SQLITE_MAGIC = b"SQLite format 3\x00"
T = TypeVar("T")


def _register_failpoint_errors() -> None:
    """Let tests arm ``raise:sqlite-ioerror`` and friends (done when a database is
    opened, not on import: importing the library changes nothing)."""
    failpoints.register_error(
        "sqlite-ioerror", lambda name: sqlite3.OperationalError(f"disk I/O error ({name})")
    )
    failpoints.register_error(
        "sqlite-locked", lambda name: sqlite3.OperationalError(f"database is locked ({name})")
    )
    failpoints.register_error(
        "sqlite-constraint",
        lambda name: sqlite3.IntegrityError(f"CHECK constraint failed ({name})"),
    )


def translate(
    exc: sqlite3.Error, saga_id: str | None = None, operation: str = "sqlite write"
) -> SqliteStoreError:
    """Map a ``sqlite3`` error to the project's error, marking lock errors transient;
    ``operation`` says where it failed (``sqlite begin``, ``sqlite write``, ``sqlite
    commit``, ``sqlite read``)."""
    text = str(exc)
    transient = isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
    hint = LOCKED_HINT if transient else ""
    return SqliteStoreError(
        f"SQLite: {text}{hint}", saga_id=saga_id, transient=transient, operation=operation
    )


LOCKED_HINT = (
    " (another connection held SQLite's write lock for the whole busy timeout; if it is"
    " your application's own, in a transaction still open around this call, such as"
    " `with conn:` after an INSERT, commit it first, or make that write part of the saga"
    " with runner.atomic())"
)


@contextlib.contextmanager
def translated(saga_id: str | None = None) -> Iterator[None]:
    """Translate any ``sqlite3`` error raised in the block."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, saga_id) from exc


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and each missing parent with mode 0700 (``mkdir(parents=True,
    mode=...)`` gives the mode to the last folder only; the parents get the umask's)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            created.mkdir(mode=0o700)


class Database:
    """The application's SQLite file, with the saga log tables in it."""

    def __init__(self, path: str | os.PathLike[str], options: SqliteOptions) -> None:
        _register_failpoint_errors()
        self.path = Path(path)
        self.options = options
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # Threads of one process take turns here, in order, instead of in SQLite's
        # busy handler, which polls with growing sleeps and is unfair: under load one
        # thread could wait out the whole busy timeout behind writes of milliseconds.
        # Other processes are still ordered by SQLite's lock and busy timeout.
        self._writer = threading.RLock()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], options: SqliteOptions, *, create: bool = True
    ) -> Database:
        """Open (and if ``create``, create with mode 0600) a database and migrate it."""
        target = Path(path)
        if not target.exists():
            if not create:
                raise ConfigurationError(f"no database at {target}", field="db")
            make_private_folder(target.parent)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        elif not _looks_like_sqlite(target, empty_ok=create):
            raise ConfigurationError(f"{target} is not a SQLite database", field="db")
        if not create:
            _require_saga_log(target)  # read-only look first: a refused file stays as it was
        database = cls(target, options)
        try:
            if create:
                database.migrate()
            else:
                database.require_saga_schema()
        except BaseException:
            database.close()
            raise
        return database

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        with translated():
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
                timeout=self.options.busy_timeout,
                check_same_thread=False,  # close() may run on another thread
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.options.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self.options.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextlib.contextmanager
    def write(self, saga_id: str | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on exit, rolled back on error."""
        conn = self.connection()
        with self._writer:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate(exc, saga_id, "sqlite begin") from exc
            operation = "sqlite write"
            try:
                yield conn
                operation = "sqlite commit"
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, saga_id, operation) from exc
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several SELECTs.

        Re-entrant: inside another transaction of this thread it just joins it."""
        conn = self.connection()
        if conn.in_transaction:
            with translated():
                yield conn
            return
        with translated():
            conn.execute("BEGIN")
        try:
            yield conn
        except sqlite3.Error as exc:
            raise translate(exc, None, "sqlite read") from exc
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def write_settled(
        self, action: Callable[[sqlite3.Connection], T], saga_id: str | None = None
    ) -> T:
        """Run ``action`` in a write transaction, retried while the database is locked
        for up to ``settle_timeout`` seconds: recording a compensation must not be
        abandoned just because another connection holds the write lock for a while."""
        deadline = time.monotonic() + self.options.settle_timeout
        while True:
            try:
                with self.write(saga_id) as conn:
                    return action(conn)
            except SqliteStoreError as exc:
                if not exc.transient or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def migrate(self) -> None:
        """Bring the saga log up to ``SCHEMA_VERSION`` (forward only)."""
        with self.write() as conn:
            version = self._schema_version(conn)
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"saga schema version {version} is newer than this library's "
                    f"{SCHEMA_VERSION}: upgrade the library",
                    field="db",
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO saga_meta (key, value) VALUES ('schema_version', ?)",
                    (str(target),),
                )

    def require_saga_schema(self) -> None:
        """Refuse a database that holds no saga log (the CLI never creates one)."""
        with self.read() as conn:
            version = self._schema_version(conn)
        if version == 0:
            raise ConfigurationError(f"{self.path} is not a saga database", field="db")
        if version < SCHEMA_VERSION:
            self.migrate()

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        names = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "saga_meta" not in names:
            if names & set(LOG_TABLES):
                raise ConfigurationError("saga tables without saga_meta", field="db")
            return 0
        row = conn.execute("SELECT value FROM saga_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()


def _looks_like_sqlite(path: Path, *, empty_ok: bool) -> bool:
    """An empty file is a database SQLite has yet to write: the library may make it one
    (``create``), the CLI must not."""
    if path.is_dir():
        return False
    with path.open("rb") as handle:
        head = handle.read(16)
    return head == _SQLITE_MAGIC or (empty_ok and head == b"")


def _require_saga_log(path: Path) -> None:
    """Refuse a database without a saga log, reading it through a read-only connection
    (no WAL switch, no -wal/-shm files left behind)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'saga_meta'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigurationError(
            f"{path} is not a readable SQLite database: {exc}", field="db"
        ) from exc
    if found is None:
        raise ConfigurationError(f"{path} is not a saga database", field="db")
