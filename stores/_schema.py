"""The saga log's schema, applied by forward-only migrations.

The schema version is kept in the ``saga_meta`` table, not in ``PRAGMA user_version``:
the log lives in the application's own database file, and ``user_version`` belongs to
the application (many apps number their own migrations with it).
"""

from __future__ import annotations

SCHEMA_VERSION = 7

# Written as literals, identical in the partial indexes and the queries, so that
# SQLite uses the indexes: only sagas in flight are ever looked for this way, and
# they are few among all the sagas ever run.
IN_FLIGHT_SAGA = "state NOT IN ('synced', 'failed')"
IN_FLIGHT_VECTOR = "sync_status NOT IN ('synced', 'failed')"

# Migration N takes a database from version N-1 to N. Never edit a shipped one: add.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE saga_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """CREATE TABLE saga_tracked_tables (
            sqlite_table TEXT PRIMARY KEY,
            collection TEXT NOT NULL,
            key_column TEXT NOT NULL,
            vector_id_column TEXT NOT NULL,
            dimension INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE saga_instances (
            saga_id TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            sqlite_table TEXT NOT NULL,
            state TEXT NOT NULL,
            item_count INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            lease_owner TEXT,
            lease_expires_at TEXT,
            progress TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_saga_instances_state ON saga_instances (state, created_at)",
        """CREATE TABLE vector_sync_state (
            id INTEGER PRIMARY KEY,
            vector_id TEXT NOT NULL UNIQUE,
            sqlite_table TEXT NOT NULL,
            sqlite_record_id NOT NULL,
            sync_status TEXT NOT NULL,
            saga_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            content_hash TEXT,
            last_synced_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX idx_vector_sync_status ON vector_sync_state (sync_status)",
        "CREATE INDEX idx_vector_sync_table ON vector_sync_state (sqlite_table, sqlite_record_id)",
        """CREATE TABLE pending_vectors (
            temp_id TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE saga_history (
            id INTEGER PRIMARY KEY,
            saga_id TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            event TEXT NOT NULL,
            at TEXT NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX idx_saga_history_saga ON saga_history (saga_id, id)",
    ),
    # 2: the synced document/metadata (so reconcile can repair drift without the
    # application) and an index for the per-saga updates of vector_sync_state.
    2: (
        "ALTER TABLE vector_sync_state ADD COLUMN content TEXT",
        "CREATE INDEX idx_vector_sync_saga ON vector_sync_state (saga_id)",
    ),
    # 3: partial indexes over what is in flight (recovery and reconcile look for it).
    3: (
        "CREATE INDEX idx_saga_instances_in_flight ON saga_instances (created_at, saga_id) "
        f"WHERE {IN_FLIGHT_SAGA}",
        "CREATE INDEX idx_vector_sync_in_flight ON vector_sync_state (sqlite_table) "
        f"WHERE {IN_FLIGHT_VECTOR}",
    ),
    # 4: late-write re-checks. A write that went unanswered may still land after its
    # saga was compensated; recovery undoes it again once the grace period is over,
    # from the payload (before-images included) kept here.
    4: (
        """CREATE TABLE saga_rechecks (
            saga_id TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            sqlite_table TEXT NOT NULL,
            payload TEXT NOT NULL,
            due_at TEXT NOT NULL
        )""",
    ),
    # 5: SQLite is the system of record: each synced vector's embedding (float32,
    # little-endian) and its exact document and metadata, kept until the row is deleted.
    # Update and delete take their before-images from here, not from Chroma.
    5: (
        "ALTER TABLE vector_sync_state ADD COLUMN embedding BLOB",
        "ALTER TABLE vector_sync_state ADD COLUMN record TEXT",
    ),
    # 6: a table may opt out of the kept vectors (``track(keep_vectors=False)``).
    6: ("ALTER TABLE saga_tracked_tables ADD COLUMN keep_vectors INTEGER NOT NULL DEFAULT 1",),
    # 7: the link keys on vectors become optional (``track(link_keys=...)``); a table
    # tracked before keeps them (its vectors have them), a new one has none by default.
    7: ("ALTER TABLE saga_tracked_tables ADD COLUMN link_keys INTEGER NOT NULL DEFAULT 1",),
}

LOG_TABLES = (
    "saga_meta",
    "saga_tracked_tables",
    "saga_instances",
    "vector_sync_state",
    "pending_vectors",
    "saga_history",
    "saga_rechecks",
)
