"""A smoke run of the benchmark (``python -m bench --quick``), so it cannot rot.

Tiny sizes, one round. The figures are checked for presence and sanity only (a ratio
above zero), never against the targets: timing on a shared machine is no test. The
LangChain and DBOS scenarios (the optional ``bench`` extra) are skipped when their
packages are not importable, or when the bench itself reports it cannot run them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = [
    "create",
    "update",
    "delete",
    "batch100",
    "batch1000",
    "recovery",
    "reconcile",
    "memory",
    "rebuild",
    "concurrency",
]
WRITES = ["create", "batch100", "batch1000"]


def _importable(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


HAVE_LANGCHAIN = _importable("langchain_core", "langchain_chroma", "sqlalchemy") and (
    _importable("langchain_classic") or _importable("langchain_community")
)
HAVE_DBOS = _importable("dbos")


def _bench(
    *args: str, timeout: float = 900, module: str = "bench"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    only = [*CORE, *(["langchain"] if HAVE_LANGCHAIN else []), *(["dbos"] if HAVE_DBOS else [])]
    workdir = tmp_path_factory.mktemp("bench")
    done = _bench(
        "--quick", "--json", "--quiet", "--workdir", str(workdir), "--only", ",".join(only)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _figures(result: dict[str, Any], scenario: str, contender: str) -> list[dict[str, Any]]:
    return [
        f for f in result["figures"] if f["scenario"] == scenario and f["contender"] == contender
    ]


@pytest.mark.parametrize("scenario", CORE)
def test_every_scenario_has_its_figures(result: dict[str, Any], scenario: str) -> None:
    figures = _figures(result, scenario, "saga")

    assert figures, f"no saga figure for {scenario}"
    for figure in figures:
        assert figure["samples"]
        assert figure["median"] >= 0
        if figure["ratio_of"] != "none":  # a figure shown for context has no reference
            assert figure["ratio"] is not None
            assert figure["ratio"] > 0


@pytest.mark.parametrize("scenario", ["create", "update", "delete", "batch100", "batch1000"])
def test_write_scenarios_are_measured_against_the_unprotected_write(
    result: dict[str, Any], scenario: str
) -> None:
    (baseline,) = _figures(result, scenario, "unprotected")
    (floor,) = _figures(result, scenario, "floor")
    (saga,) = _figures(result, scenario, "saga")

    assert baseline["ratio"] == pytest.approx(1.0)
    assert floor["ratio"] > 0
    assert saga["baseline"] == pytest.approx(baseline["median"])
    (linked,) = _figures(result, scenario, "unprotected+links")
    (versus,) = _figures(result, scenario, "saga vs links")
    assert versus["baseline"] == pytest.approx(linked["median"])
    assert versus["median"] == pytest.approx(saga["median"])


def test_concurrency_compares_the_same_threads_unprotected(result: dict[str, Any]) -> None:
    detail = result["details"]["concurrency"]
    assert detail["threads"] == 4
    assert set(detail["per_second"]) == {"unprotected", "saga"}
    assert all(len(v) == len(detail["paired"]) for v in detail["seconds"].values())


def test_reconcile_finds_exactly_the_planted_orphans(result: dict[str, Any]) -> None:
    for entry in result["details"]["reconcile"]:
        assert entry["clean"]["orphan_vectors"] == 0
        assert entry["with_orphans"]["orphan_vectors"] == entry["orphans"]
        assert entry["clean"]["rows_checked"] == entry["size"]


def test_rebuild_measures_the_kept_vectors_and_rebuilds_every_one(result: dict[str, Any]) -> None:
    details = result["details"]["rebuild"]
    n = details["records"]
    sizes = details["sizes"]

    assert sizes["kept_vectors"] == n
    assert sizes["embedding_per_record"] == 384 * 4  # float32, nothing else
    assert sizes["payload_per_record"] > sizes["embedding_per_record"]
    assert sizes["vacuumed_bytes"] > sizes["vacuumed_without_kept_bytes"]
    for run in [*details["rebuild"], *details["ingest"]]:
        assert run["stored"] == n
    (time,) = [f for f in _figures(result, "rebuild", "saga") if f["case"] == "time"]
    assert time["target"] == pytest.approx(1.2)
    assert time["met"] in (True, False)  # a verdict, whichever it is


def test_the_rebuild_bench_runs_on_its_own_and_prints_its_figures(tmp_path: Path) -> None:
    done = _bench(
        "--records",
        "200",
        "--rounds",
        "1",
        "--quiet",
        "--workdir",
        str(tmp_path),
        module="bench.rebuild",
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for text in (
        "database file, checkpointed",
        "kept vector: file bytes / record",
        "kept vector: payload / record",
        "chroma ingest",
        "<= 1.20x ingest",
        "peak RSS over loaded collection",
        "< 300 MB",
        "Method:",
        "wal_checkpoint(TRUNCATE)",
        "Rebuild round 1:",
    ):
        assert text in out, f"{text!r} missing from:\n{out}"
    assert " 200 " in out  # N, in the table


def test_the_output_states_the_method_and_the_versions(result: dict[str, Any]) -> None:
    env = result["environment"]

    assert env["python"]
    assert env["platform"]
    assert "chromadb" in env["packages"]
    assert result["method"]
    assert not result["errors"]


@pytest.mark.parametrize("name", ["langchain", "dbos"])
def test_alternatives_are_measured_when_installed(result: dict[str, Any], name: str) -> None:
    installed = HAVE_LANGCHAIN if name == "langchain" else HAVE_DBOS
    if not installed:
        pytest.skip(f"{name} is not installed (the optional bench extra)")
    if name in result["skipped"]:
        pytest.skip(f"the bench could not run {name}: {result['skipped'][name]}")
    for scenario in WRITES:
        (figure,) = _figures(result, scenario, name)
        assert figure["ratio"] > 0
    assert {c["alternative"] for c in result["comparisons"]} >= {name}


def test_an_unknown_scenario_is_bad_usage() -> None:
    done = _bench("--only", "nonsense", timeout=120)

    assert done.returncode == 2
    assert "unknown scenarios" in done.stderr
