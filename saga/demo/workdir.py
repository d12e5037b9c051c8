"""The demo's work folder: wiped and recreated each run, but only if it is the demo's."""

from __future__ import annotations

import shutil
from pathlib import Path

from saga.demo.errors import DemoUsageError

MARKER = ".saga-demo-workdir"
"""A file the demo leaves in its work folder, so a later run knows it may wipe it."""


def prepare(workdir: Path) -> Path:
    """Wipe ``workdir`` if a previous demo made it, create it, and mark it as the demo's.

    Refuses a file, and a non-empty folder without the marker: it could be anything.
    """
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise DemoUsageError(f"{workdir} exists and is not a folder: choose another --workdir")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / MARKER).is_file():
            raise DemoUsageError(
                f"{workdir} is not empty and was not made by `saga demo` (no {MARKER} in it): "
                "refusing to wipe it; choose another --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `saga demo`; wiped and recreated by its next run\n")
    return workdir
