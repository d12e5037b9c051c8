"""The advisory lock that keeps an embedded Chroma folder to one process.

``PersistentClient`` is not safe for several processes at once, so before the adapter
opens a client on a folder it takes an ``flock`` on ``LOCK_NAME`` inside it; a second
process is refused and pointed to server mode. Within one process several stores may
share a folder (chromadb shares one client per folder), so the lock is counted per user
and dropped with its descriptor when the last one releases it. The kernel drops a flock
with its process, so a process that dies leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import ClassVar

from saga._errors import ConcurrentClientError

LOCK_NAME = ".saga-embedded.lock"


class EmbeddedLock:
    """An advisory lock on an embedded Chroma folder, shared within one process."""

    _held: ClassVar[dict[Path, tuple[int, int]]] = {}  # path -> (fd, users in this process)
    _guard: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, folder: Path) -> None:
        """Take the folder's lock, or raise ``ConcurrentClientError`` if another process
        holds it."""
        path = (folder / LOCK_NAME).resolve()
        with cls._guard:
            if path in cls._held:
                fd, users = cls._held[path]
                cls._held[path] = (fd, users + 1)
                return
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConcurrentClientError(
                    f"the embedded Chroma folder {folder} is open in another process; "
                    "PersistentClient is not safe across processes: run `chroma run "
                    "--path DIR` and pass chroma_client=chromadb.HttpClient(...)"
                ) from None
            cls._held[path] = (fd, 1)

    @classmethod
    def release(cls, folder: Path) -> None:
        """Give up one use of the folder's lock; the last one lets other processes in."""
        path = (folder / LOCK_NAME).resolve()
        with cls._guard:
            if path not in cls._held:
                return
            fd, users = cls._held[path]
            if users > 1:
                cls._held[path] = (fd, users - 1)
                return
            del cls._held[path]
            os.close(fd)  # closing the descriptor drops the flock
