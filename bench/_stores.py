"""Opening and tearing down the stores every contender writes to."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import chromadb
import chromadb.api.client
from chromadb.config import Settings

from bench._data import SCHEMA


def make_app_db(path: Path) -> Path:
    """The application's database: one ``notes`` table, WAL (as the library sets it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA)
    conn.commit()
    conn.close()
    return path


def app_connection(
    path: Path, synchronous: str = "FULL", *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A plain connection as an application would open it: WAL, ``synchronous=FULL``."""
    conn = sqlite3.connect(path, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def chroma_client(folder: Path) -> Any:
    """An embedded Chroma, configured as the library configures its own."""
    folder.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(folder), settings=Settings(anonymized_telemetry=False)
    )


def notes_collection(client: Any) -> Any:
    return client.get_or_create_collection("notes", embedding_function=None)


def release_chroma() -> None:
    """Stop every embedded Chroma of this process (between contender runs: each run
    gets fresh stores, and nothing of the previous one keeps threads or memory)."""
    with contextlib.suppress(Exception):
        # Public in chromadb's docs, not re-exported for type checkers.
        chromadb.api.client.SharedSystemClient.clear_system_cache()  # type: ignore[attr-defined]
