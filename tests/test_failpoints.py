"""Failpoints are armed only on request: importing the library never reads the variable.

The import tests run in a fresh subprocess, since this process imported ``saga`` long
ago; they arm a ``kill`` so that a regression shows as a SIGKILL, not a quiet pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from saga import FailpointError, failpoints

REPO = Path(__file__).resolve().parent.parent
KILL_AT_PENDING = "after:pending=kill"

IMPORT_ONLY = """
import saga
from saga import failpoints
assert not failpoints._armed, failpoints._armed
failpoints.hit("after:pending")
"""

OPTED_IN = """
from saga import failpoints
failpoints.load_from_env()
failpoints.hit("after:pending")
"""


def run_child(code: str, spec: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, failpoints.ENV_VAR: spec}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_library_does_not_arm_the_variable() -> None:
    done = run_child(IMPORT_ONLY, KILL_AT_PENDING)
    assert done.returncode == 0, done.stderr


def test_load_from_env_arms_the_variable_in_a_child() -> None:
    done = run_child(OPTED_IN, KILL_AT_PENDING)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_load_from_env_arms_what_the_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.ENV_VAR, "after:pending=raise*1;before:write_vectors=exit@3")
    failpoints.load_from_env()
    assert failpoints._armed == {
        "after:pending": ["raise", 1, 0],
        "before:write_vectors": ["exit", -1, 2],
    }
    with pytest.raises(FailpointError):
        failpoints.hit("after:pending")
    failpoints.hit("after:pending")  # *1: fired once, then inert


@pytest.mark.parametrize("value", [None, "", " ; "])
def test_load_from_env_without_a_spec_disarms_everything(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    failpoints.configure("after:pending=raise")
    if value is None:
        monkeypatch.delenv(failpoints.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(failpoints.ENV_VAR, value)
    failpoints.load_from_env()
    assert failpoints._armed == {}
    failpoints.hit("after:pending")


@pytest.mark.parametrize("spec", ["after:pending", "=raise", "after:pending=", "x=raise*two"])
def test_load_from_env_refuses_a_malformed_spec(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(failpoints.ENV_VAR, spec)
    with pytest.raises(ValueError):
        failpoints.load_from_env()
