"""The library's log: silent unless enabled, every line naming its saga, retries in it
(not as bare lines on the application's stderr), and handed to ``logging`` on request
(issue 15)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger

from saga import RetryPolicy, SagaRunner, failpoints, log_to_stdlib
from tests.conftest import ROOT, make_db, vec

RETRIED = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02)


def test_a_retried_write_prints_nothing_when_the_log_is_off(tmp_path: Path) -> None:
    """A fresh process, as an application with no logging configured: a Chroma call
    that fails once and is retried leaves stdout and stderr empty."""
    script = f"""
import sys
from saga import RetryPolicy, SagaRunner, failpoints
from tests.conftest import make_db, vec
db = make_db(__import__("pathlib").Path({str(tmp_path)!r}) / "app.db")
with SagaRunner.open(db, chroma_path={str(tmp_path / "chroma")!r},
                     retry=RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02)) as r:
    r.track("notes")
    with failpoints.armed("chroma.upsert=raise:chroma-unavailable*1"):
        r.create("notes", {{"id": 1, "body": "b"}}, embedding=vec(1))
    assert failpoints.hits("chroma.upsert") == 1  # failed once; the write went through
    assert r.row("notes", 1) is not None
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_lines_name_the_saga_and_reach_stdlib_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = make_db(tmp_path / "app.db")
    sink = log_to_stdlib("DEBUG")
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="saga"),
            SagaRunner.open(db, chroma_path=tmp_path / "chroma", retry=RETRIED) as runner,
        ):
            runner.track("notes")
            with failpoints.armed("chroma.upsert=raise:chroma-unavailable*1"):
                result = runner.create("notes", {"id": 7, "body": "b"}, embedding=vec(1))
    finally:
        logger.remove(sink)
        logger.disable("saga")
    lines = [r.getMessage() for r in caplog.records if r.name == "saga"]
    mine = [line for line in lines if result.saga_id in line]
    assert any("pending" in line for line in mine), lines
    retry = [line for line in mine if "Chroma upsert: try 1 of 3 failed" in line]
    assert retry, lines
    assert f"[saga {result.saga_id} notes keys 7]" in retry[0]
    assert all(line.startswith(f"[saga {result.saga_id} notes keys 7]") for line in mine)
