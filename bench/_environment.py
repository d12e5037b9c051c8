"""What the figures were measured on: interpreter, platform, library versions, load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "dualwrite-saga",
    "chromadb",
    "numpy",
    "langchain-core",
    "langchain-chroma",
    "langchain-classic",
    "langchain-community",
    "SQLAlchemy",
    "dbos",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git(*args: str) -> str:
    """The output of one git command in the repository this bench belongs to."""
    return subprocess.run(
        ["git", *args],  # noqa: S607  # fixed argv
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def library_revision() -> str:
    """The git commit the library was measured at, marked if saga/steps/stores differ."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "saga", "steps", "stores")
    except (OSError, subprocess.SubprocessError):
        return "library: unknown revision"
    return f"library at {head}{' + uncommitted changes' if dirty else ''}"


def environment() -> dict[str, Any]:
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in PACKAGES if _version(name)},
        "library": library_revision(),
        "load_average_at_start": load_average(),
    }
