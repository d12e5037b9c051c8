"""Measurements that need a fresh process (peak RSS): ``python -m bench._child ...``.

    python -m bench._child reconcile DB CHROMA_DIR
    python -m bench._child batch-memory saga|unprotected FOLDER N
    python -m bench._child ingest|rebuild|loaded DB CHROMA_DIR [--profile]

Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Imports first: the baseline is the process with everything loaded, nothing done.
import chromadb  # noqa: F401

import saga  # noqa: F401
from bench import _rebuild_child
from bench._contenders import Saga, Unprotected
from bench._data import records
from bench._figures import timed
from bench._memory import peak_mb, reset_peak, rss_mb


def reconcile(db: str, chroma: str) -> dict[str, Any]:
    """Time one ``reconcile()``; peak RSS overall, and over the RSS once Chroma has
    loaded the collection (its first read maps the whole vector segment: that part
    grows with the collection whatever reconcile does)."""
    from saga import SagaRunner  # noqa: PLC0415

    base = rss_mb()
    with SagaRunner.open(db, chroma_path=chroma) as runner:
        opened = rss_mb()
        spec = runner.tracked()[0]
        runner.stores.vectors.get(spec.collection, [spec.vector_id(0)])  # Chroma loads it here
        loaded, early_peak = rss_mb(), peak_mb()
        exact = reset_peak()
        reports: list[Any] = []
        seconds = timed(lambda: reports.append(runner.reconcile()))
        peak = max(early_peak, peak_mb())
        working = peak_mb() - loaded if exact else None
    report = reports[0]
    return {
        "seconds": seconds,
        "baseline_rss_mb": base,
        "opened_rss_mb": opened,
        "collection_loaded_rss_mb": loaded,
        "peak_rss_mb": peak,
        "peak_over_baseline_mb": peak - base,
        "peak_over_loaded_mb": working,
        "orphan_vectors": len(report.orphan_vectors),
        "missing_vectors": len(report.missing_vectors),
        "drift": len(report.drift),
        "stuck_sagas": len(report.stuck_sagas),
        "rows_checked": report.rows_checked,
        "vectors_checked": report.vectors_checked,
    }


def batch_memory(mode: str, folder: str, count: int) -> dict[str, Any]:
    contender = Saga() if mode == "saga" else Unprotected()
    contender.open(Path(folder))
    contender.create_batch(records(10, start=10_000_000))  # warm: collection, caches
    batch = records(count)
    before = rss_mb()
    exact = reset_peak()
    seconds = timed(lambda: contender.create_batch(batch))
    peak = peak_mb()
    contender.close()
    return {
        "seconds": seconds,
        "before_rss_mb": before,
        "peak_rss_mb": peak,
        "peak_over_before_mb": peak - before,
        "peak_reset": exact,
    }


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "reconcile":
        result = reconcile(*args)
    elif kind == "batch-memory":
        result = batch_memory(args[0], args[1], int(args[2]))
    elif kind in ("ingest", "rebuild", "loaded"):  # see bench._rebuild_child
        result = getattr(_rebuild_child, kind)(*args)
    else:
        print(f"unknown measurement {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
