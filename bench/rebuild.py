"""Rebuild: what keeping every synced vector costs, and what ``runner.rebuild()`` costs.

``python -m bench.rebuild [--records N]`` (also ``python -m bench --only rebuild``).

1. **Disk.** N records are written through the library (``create_many`` in batches of
   1,000; 384-dim embeddings, 200-character documents, three metadata keys, as
   ``bench._data`` makes them). The database file is measured after
   ``PRAGMA wal_checkpoint(TRUNCATE)``. The bytes the kept vectors add are measured
   twice: their payload (``SUM(length(embedding) + length(CAST(record AS BLOB)))``) and
   the file they take (a copy, vacuumed, against the same copy with ``embedding`` and
   ``record`` set to NULL and vacuumed again; the difference divided by N).
2. **Time.** In one run, each in a fresh process: Chroma's own ingest of the same
   vectors (a fresh embedded folder, ``collection.upsert`` in batches of
   ``client.get_max_batch_size()``, only the upsert calls timed, their input read from
   the log untimed), and ``runner.rebuild()`` into a fresh empty folder (timed whole:
   settling sagas, reading pages from SQLite, decoding, upserting, the check for rows
   without a kept vector). With several rounds the order alternates (ABBA...).
   Ratio = median over rounds of rebuild / ingest in the same round; target 1.2x.
3. **Memory.** Peak RSS (VmHWM, reset before the work) of each of those processes, and
   the RSS of a third fresh process that opened the rebuilt folder and read its
   collection (a get and a query): the loaded collection. The target: the rebuild's
   peak under 300 MB above the loaded collection.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._data import DIM, DOC_CHARS, TABLE, records
from bench._figures import Figure, timed
from bench._spawn import child
from bench._stores import make_app_db, release_chroma

QUICK, FULL = 2_000, 100_000
BUILD_BATCH = 1_000
TIME_TARGET = 1.2
MEMORY_BUDGET_MB = 300.0
MB = 1024.0 * 1024.0


def build(folder: Path, count: int, progress: Callable[[str], None]) -> Path:
    """``count`` records written through the library, ``create_many`` of 1,000 each."""
    from saga import SagaRunner  # noqa: PLC0415

    db = make_app_db(folder / "app.db")
    with SagaRunner.open(db, chroma_path=folder / "chroma") as runner:
        runner.track(TABLE, dimension=DIM)
        tenth = max(1, count // 10)
        for start in range(0, count, BUILD_BATCH):
            made = records(min(BUILD_BATCH, count - start), start=start)
            runner.create_many(
                TABLE,
                [
                    {
                        "row": r.row,
                        "embedding": r.embedding,
                        "document": r.document,
                        "metadata": r.metadata,
                    }
                    for r in made
                ],
            )
            done = start + len(made)
            if done // tenth != start // tenth or done == count:
                progress(f"rebuild: {done:,}/{count:,} records written")
    release_chroma()
    return db


def _checkpointed_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _vacuumed_size(conn: sqlite3.Connection, path: Path) -> int:
    conn.execute("VACUUM")
    return path.stat().st_size


def sizes(db: Path, scratch: Path, count: int) -> dict[str, Any]:
    """The file after a checkpoint; the kept vectors' payload and file share."""
    file_bytes = _checkpointed_size(db)
    conn = sqlite3.connect(db)
    try:
        kept, embedding, record, content = conn.execute(
            "SELECT COUNT(*), SUM(length(embedding)), SUM(length(CAST(record AS BLOB))), "
            "SUM(length(CAST(content AS BLOB))) FROM vector_sync_state "
            "WHERE embedding IS NOT NULL"
        ).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    copy = scratch / "sizes.db"
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")  # the copy is one file
        with_kept = _vacuumed_size(conn, copy)
        conn.execute("UPDATE vector_sync_state SET embedding = NULL, record = NULL")
        without_kept = _vacuumed_size(conn, copy)
    finally:
        conn.close()
        copy.unlink(missing_ok=True)
    return {
        "records": count,
        "kept_vectors": kept,
        "page_size": page_size,
        "file_bytes": file_bytes,
        "vacuumed_bytes": with_kept,
        "vacuumed_without_kept_bytes": without_kept,
        "file_delta_per_record": (with_kept - without_kept) / count,
        "payload_per_record": ((embedding or 0) + (record or 0)) / count,
        "embedding_per_record": (embedding or 0) / count,
        "record_per_record": (record or 0) / count,
        "content_per_record": (content or 0) / count,
    }


def _disk_bytes(folder: Path) -> int:
    """What ``du`` counts: allocated blocks of every file under ``folder``."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.stat(Path(root) / name).st_blocks * 512
    return total


def measure(
    folder: Path,
    count: int,
    rounds: int,
    progress: Callable[[str], None],
    *,
    profile: bool = False,
) -> dict[str, Any]:
    """Build ``count`` records, measure the file, then time ingest and rebuild."""
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"rebuild: writing {count:,} records through create_many")
    made: list[Path] = []
    build_s = timed(lambda: made.append(build(folder / "source", count, progress)))
    db = made[0]
    progress("rebuild: measuring the database file")
    disk = sizes(db, folder, count)
    runs: dict[str, list[dict[str, Any]]] = {"ingest": [], "rebuild": []}
    kept_folder: Path | None = None
    for round_no in range(rounds):
        order = ("ingest", "rebuild") if round_no % 2 == 0 else ("rebuild", "ingest")
        for kind in order:
            target = folder / f"round{round_no}-{kind}"
            progress(f"rebuild: round {round_no + 1}/{rounds}, {kind} of {count:,} vectors")
            result = child(kind, str(db), str(target))
            if (
                result["stored"] != count
                or result.get("rebuilt", count) != count
                or result.get("not_rebuildable")
            ):
                raise RuntimeError(f"{kind} left {result['stored']} of {count} vectors: {result}")
            result.pop("profile", None)
            runs[kind].append(result)
            if kind == "rebuild" and kept_folder is None:
                kept_folder = target
            else:
                shutil.rmtree(target, ignore_errors=True)
    assert kept_folder is not None
    chroma_bytes = _disk_bytes(kept_folder)
    progress("rebuild: RSS of a process with the rebuilt collection loaded")
    loaded = child("loaded", str(db), str(kept_folder))
    shutil.rmtree(kept_folder, ignore_errors=True)
    profiled = None
    if profile:
        progress("rebuild: one more rebuild under cProfile (not a figure)")
        target = folder / "profiled"
        profiled = child("rebuild", str(db), str(target), "--profile")
        shutil.rmtree(target, ignore_errors=True)
    return {
        "records": count,
        "rounds": rounds,
        "build_seconds": build_s,
        "sizes": disk,
        "chroma_folder_bytes": chroma_bytes,
        "ingest": runs["ingest"],
        "rebuild": runs["rebuild"],
        "loaded": loaded,
        "profiled": profiled,
    }


def figures(result: dict[str, Any]) -> list[Figure]:
    n, disk = result["records"], result["sizes"]
    ingest, rebuilt = result["ingest"], result["rebuild"]
    loaded = result["loaded"]["loaded_rss_mb"]

    def context(case: str, contender: str, unit: str, values: list[float]) -> Figure:
        return Figure("rebuild", case, contender, unit, n, values, ratio_of="none")

    ingest_s = [r["seconds"] for r in ingest]
    rebuild_s = [r["seconds"] for r in rebuilt]
    outside = [r["seconds"] - r["phases"]["chroma_upsert_s"] for r in rebuilt]
    return [
        context(
            f"write {n:,} records (create_many of 1,000)", "saga", "s", [result["build_seconds"]]
        ),
        context("database file, checkpointed", "saga", "MB", [disk["file_bytes"] / MB]),
        context("kept vector: file bytes / record", "saga", "B", [disk["file_delta_per_record"]]),
        context("kept vector: payload / record", "saga", "B", [disk["payload_per_record"]]),
        context(
            "Chroma folder after rebuild", "chroma", "MB", [result["chroma_folder_bytes"] / MB]
        ),
        Figure("rebuild", "time", "chroma ingest", "s", n, ingest_s, ratio_of="none"),
        Figure(
            "rebuild",
            "time",
            "saga",
            "s",
            n,
            rebuild_s,
            baseline=statistics.median(ingest_s),
            paired=[r / i for r, i in zip(rebuild_s, ingest_s, strict=True)],
            target=TIME_TARGET,
            target_text=f"<= {TIME_TARGET:.2f}x ingest",
            ratio_of="baseline",
        ),
        Figure(
            "rebuild",
            "time outside chromadb's upsert",
            "saga",
            "s",
            n,
            outside,
            baseline=statistics.median(ingest_s),
            paired=[o / i for o, i in zip(outside, ingest_s, strict=True)],
            ratio_of="baseline",
        ),
        context("loaded collection: RSS", "chroma", "MB", [loaded]),
        context("peak RSS", "chroma ingest", "MB", [r["peak_rss_mb"] for r in ingest]),
        context("peak RSS", "saga", "MB", [r["peak_rss_mb"] for r in rebuilt]),
        context(
            "peak RSS over loaded collection",
            "chroma ingest",
            "MB",
            [r["peak_rss_mb"] - loaded for r in ingest],
        ),
        Figure(
            "rebuild",
            "peak RSS over loaded collection",
            "saga",
            "MB",
            n,
            [r["peak_rss_mb"] - loaded for r in rebuilt],
            budget=MEMORY_BUDGET_MB,
            target=1.0,
            target_text=f"< {MEMORY_BUDGET_MB:.0f} MB",
            ratio_of="budget",
        ),
    ]


def breakdown(result: dict[str, Any]) -> list[str]:
    """Where each rebuild's time went, and its RSS along the way."""
    lines = []
    for number, (run, ingest) in enumerate(zip(result["rebuild"], result["ingest"], strict=True)):
        p = run["phases"]
        lines.append(
            f"Rebuild round {number + 1}: {run['seconds']:.2f} s = reading pages from SQLite "
            f"{p['read_sql_s']:.2f} + decoding {p['decode_s']:.2f} + adapter (lists, dicts, "
            f"collection lookup) {p['adapter_s']:.2f} + chromadb upsert "
            f"{p['chroma_upsert_s']:.2f} + other (settling, rows without a kept vector) "
            f"{p['other_s']:.2f}; {run['pages']} pages; "
            f"Chroma ingest of the same round: {ingest['seconds']:.2f} s in "
            f"{len(ingest['rss_by_batch_mb'])} batches of {ingest['batch']:,}."
        )
        lines.append(
            f"  RSS (MB): rebuild start {run['start_rss_mb']:.0f}, by quarter "
            f"{_quarters(run['rss_by_page_mb'])}, peak {run['peak_rss_mb']:.0f}; ingest start "
            f"{ingest['start_rss_mb']:.0f}, by quarter {_quarters(ingest['rss_by_batch_mb'])}, "
            f"peak {ingest['peak_rss_mb']:.0f}."
        )
    disk = result["sizes"]
    lines.append(
        f"Database: {disk['file_bytes'] / MB:.1f} MB as written, {disk['vacuumed_bytes'] / MB:.1f}"
        f" MB vacuumed, {disk['vacuumed_without_kept_bytes'] / MB:.1f} MB vacuumed without "
        f"the kept vectors (page size {disk['page_size']:,}); per record: embedding "
        f"{disk['embedding_per_record']:.0f} B + record {disk['record_per_record']:.0f} B "
        f"kept (and the content column, there since schema 2, "
        f"{disk['content_per_record']:.0f} B)."
    )
    return lines


def _quarters(values: list[float]) -> str:
    if not values:
        return "-"
    picks = [values[max(0, round(len(values) * q / 4) - 1)] for q in (1, 2, 3, 4)]
    return " / ".join(f"{v:.0f}" for v in picks)


def method(records_count: int, rounds: int) -> list[str]:
    return [
        f"Rebuild, disk: {records_count:,} records written through the library "
        f"(create_many of {BUILD_BATCH:,}; {DIM}-dim float32 embeddings, {DOC_CHARS}-character "
        "documents, 3 metadata keys); the database file measured after PRAGMA "
        "wal_checkpoint(TRUNCATE). Kept vector, file bytes / record: a copy of the file, "
        "VACUUMed, minus the same copy with vector_sync_state.embedding and .record set to "
        "NULL and VACUUMed again, over N (pages included). Payload / record: "
        "SUM(length(embedding) + length(CAST(record AS BLOB))) / N.",
        f"Rebuild, time: {rounds} round(s), each one Chroma ingest and one rebuild, each in a "
        "fresh process into a fresh embedded folder, the order alternating from round to "
        "round. Chroma ingest: collection.upsert of the same vectors (ids, float32 numpy "
        "embeddings, documents, metadata, read from the log beforehand, untimed) in batches "
        "of client.get_max_batch_size(); only the upsert calls timed. Rebuild: "
        "runner.rebuild() timed whole (settling sagas, paging the log, decoding, upserting, "
        "the check for rows with no kept vector). Ratio = median over rounds of rebuild / "
        f"ingest of the same round; target {TIME_TARGET:.1f}x. Time outside chromadb's "
        "upsert: the rebuild's time minus its calls to chromadb's Collection.upsert (wrapped "
        "in the child, as are the log's page reads and decoding, for the breakdown): the "
        "library's own share, which Chroma's noise does not blur.",
        "Rebuild, memory: peak RSS = VmHWM of each process, reset when its work starts "
        "(everything imported and the stores open before). Loaded collection = RSS of a "
        "third fresh process that opened the rebuilt folder through SagaRunner.open and "
        "read its collection (one get, one query); over loaded = peak - that. Budget "
        f"{MEMORY_BUDGET_MB:.0f} MB.",
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rebuild", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--records", type=int, default=QUICK, help=f"records (default {QUICK:,}; full: {FULL:,})"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="ingest/rebuild pairs, order alternating"
    )
    parser.add_argument("--profile", action="store_true", help="one more rebuild under cProfile")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.records < 1 or args.rounds < 1:
        parser.error("--records and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench._environment import environment, load_average  # noqa: PLC0415
    from bench._report import render  # noqa: PLC0415

    args = _parse(argv)
    started = time.perf_counter()

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    env = environment()
    owned = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="saga-bench-rebuild-"))
    try:
        result = measure(workdir, args.records, args.rounds, progress, profile=args.profile)
    finally:
        if owned and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    env["load_average_at_end"] = load_average()
    found = figures(result)
    out = {
        "environment": env,
        "method": method(args.records, args.rounds),
        "config": {"records": args.records, "rounds": args.rounds},
        "figures": [f.to_dict() for f in found],
        "comparisons": [],
        "details": {"rebuild": result},
        "skipped": {},
        "errors": {},
        "elapsed_s": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(render(out, found))
    print()
    print("\n".join(breakdown(result)))
    profiled = result["profiled"]
    if profiled is not None:
        print(f"Profiled rebuild ({profiled['seconds']:.1f} s under cProfile, not a figure):")
        print(profiled["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
