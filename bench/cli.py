"""``python -m bench``: run the scenarios, print the table (or ``--json``).

Scenarios (``--only`` takes a comma-separated subset):

- ``create``, ``update``, ``delete``: single writes, per record, saga vs unprotected;
- ``batch100``, ``batch1000``: ``create_many`` per record vs the unprotected batch;
- ``langchain``, ``dbos``: the alternatives, as extra contenders of the create and
  batch rounds (so they share rounds, records and baseline with the saga);
- ``recovery``: interrupted sagas settled by one ``recover()``;
- ``reconcile``: ``reconcile()`` over growing stores, clean and with orphans, time and
  peak RSS in a fresh process;
- ``memory``: peak RSS of one large ``create_many`` vs the unprotected batch;
- ``rebuild``: the bytes the kept vectors add to the database, and ``rebuild()`` against
  Chroma's own ingest of the same vectors, time and peak RSS (``bench.rebuild``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import concurrency, memory, rebuild, reconcile, recovery, writes
from bench._contenders import Contender, Floor, Saga, Unprotected, UnprotectedLinked
from bench._data import DIM, DOC_CHARS
from bench._environment import environment, load_average
from bench._figures import Figure
from bench._report import render
from bench._stores import release_chroma
from bench.alternatives import ALTERNATIVES, unavailable

SINGLE = ("create", "update", "delete")
BATCHES = {"batch100": 100, "batch1000": 1000}
ALTERNATIVE_NAMES = ("langchain", "dbos")
SCENARIOS = (
    *SINGLE,
    *BATCHES,
    *ALTERNATIVE_NAMES,
    "recovery",
    "reconcile",
    "memory",
    "rebuild",
    "concurrency",
)
SINGLE_TARGET, BATCH_TARGET = 1.05, 1.03


@dataclass
class Config:
    records: int = 200
    batch_records: int = 3000
    rounds: int = 3
    recovery: int = 1000
    reconcile_sizes: list[int] = field(default_factory=lambda: [5_000, 10_000, 20_000])
    memory_batch: int = 10_000
    rebuild_records: int = rebuild.QUICK
    rebuild_rounds: int = 2
    threads: int = 4
    per_thread: int = 50
    only: set[str] = field(default_factory=lambda: set(SCENARIOS))
    workdir: Path | None = None
    keep: bool = False
    as_json: bool = False
    save: Path | None = None
    quiet: bool = False


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, help="single writes per contender and round")
    parser.add_argument("--batch-records", type=int, help="records per batch scenario and round")
    parser.add_argument("--rounds", type=int, help="rounds (medians are taken over them)")
    parser.add_argument("--recovery", type=int, help="interrupted sagas to recover")
    parser.add_argument("--reconcile-sizes", help="comma-separated record counts")
    parser.add_argument("--memory-batch", type=int, help="records in the memory batch")
    parser.add_argument("--rebuild-records", type=int, help="records the rebuild scenario keeps")
    parser.add_argument(
        "--rebuild-rounds", type=int, help="rebuild/ingest pairs (their order alternates)"
    )
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--full",
        action="store_true",
        help="target sizes: 10k recovery, 10k/50k/100k reconcile, 100k rebuild",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    config = Config(
        workdir=args.workdir, keep=args.keep, as_json=args.json, quiet=args.quiet, save=args.save
    )
    if args.full:
        config.recovery, config.reconcile_sizes = 10_000, [10_000, 50_000, 100_000]
        config.rebuild_records = rebuild.FULL
    if args.quick:
        config.records, config.batch_records, config.rounds = 4, 1000, 1
        config.recovery, config.reconcile_sizes, config.memory_batch = 20, [300], 300
        config.rebuild_records, config.rebuild_rounds = 200, 1
        config.per_thread = 3
    for name in (
        "records",
        "batch_records",
        "rounds",
        "recovery",
        "memory_batch",
        "rebuild_records",
        "rebuild_rounds",
    ):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
            setattr(config, name, value)
    if args.reconcile_sizes:
        config.reconcile_sizes = [int(x) for x in args.reconcile_sizes.split(",") if x.strip()]
    if config.batch_records < max(BATCHES.values()):
        parser.error("--batch-records must be at least 1000 (one batch of 1,000)")
    if args.only:
        chosen = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = chosen - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        config.only = chosen
    return config


class Bench:
    """One run: the figures, the details behind them, what was skipped and why."""

    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def progress(self, text: str) -> None:
        if not self.config.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def guarded(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # one broken scenario must not hide the others
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.progress(f"{name} FAILED:\n{traceback.format_exc()}")
        finally:
            release_chroma()

    # -- write scenarios --------------------------------------------------------------

    def alternatives(self) -> list[Contender]:
        found: list[Contender] = []
        for name in ALTERNATIVE_NAMES:
            if name not in self.config.only:
                continue
            reason = unavailable(name) or self._probe(name)
            if reason is not None:
                self.skipped[name] = reason
                self.progress(f"{name} skipped: {reason}")
            else:
                found.append(ALTERNATIVES[name]())
        return found

    def _probe(self, name: str) -> str | None:
        """Open and close the alternative once: it may be installed and still not run."""
        contender = ALTERNATIVES[name]()
        try:
            contender.open(self.workdir / f"probe-{name}")
            contender.close()
        except Exception as exc:
            return f"cannot run here: {type(exc).__name__}: {exc}"
        finally:
            release_chroma()
        return None

    def run_writes(self) -> None:
        alts = self.alternatives()
        ops = {op for op in SINGLE if op in self.config.only}
        if ops or alts:
            contenders = [*_core(with_saga=bool(ops)), *alts]
            needed = ops | {"create"}
            self.guarded(
                "single",
                lambda: self._add(
                    writes.singles(
                        contenders,
                        needed,
                        self.config.records,
                        self.config.rounds,
                        self.workdir,
                        self.progress,
                    ),
                    "single",
                    self.config.records,
                    SINGLE_TARGET,
                    keep=ops | ({"create"} if alts else set()),
                ),
            )
        for label, size in BATCHES.items():
            mine = label in self.config.only
            if mine or alts:
                batch_contenders = [*_core(with_saga=mine), *alts]
                self.guarded(label, functools.partial(self._batch, batch_contenders, label, size))

    def _batch(self, contenders: list[Contender], label: str, size: int) -> None:
        samples = writes.batches(
            contenders,
            size,
            self.config.batch_records,
            self.config.rounds,
            self.workdir,
            self.progress,
        )
        case = f"batches of {size:,}"
        self._add(samples, case, self.config.batch_records, BATCH_TARGET, keep={label})

    def _add(
        self,
        samples: writes.Samples,
        case: str,
        count: int,
        target: float,
        keep: set[str],
    ) -> None:
        for (op, name), values in sorted(samples.items(), key=_write_order):
            if op not in keep:
                continue
            base_samples = samples[(op, "unprotected")]
            baseline = Figure(op, case, "unprotected", "ms/record", count, base_samples)
            self.figures.append(
                Figure(
                    op,
                    case,
                    name,
                    "ms/record",
                    count,
                    values,
                    baseline=baseline.median,
                    paired=[v / b for v, b in zip(values, base_samples, strict=True)],
                    target=target if name == "saga" else None,
                    target_text=f"<= {target:.2f}x" if name == "saga" else "",
                )
            )
            linked = samples.get((op, "unprotected+links"))
            if name == "saga" and linked:
                self.figures.append(
                    Figure(
                        op,
                        case,
                        "saga vs links",
                        "ms/record",
                        count,
                        values,
                        baseline=statistics.median(linked),
                        paired=[v / b for v, b in zip(values, linked, strict=True)],
                    )
                )

    # -- operations -------------------------------------------------------------------

    def run_recovery(self) -> None:
        count = self.config.recovery
        self.progress(f"recovery: planting {count:,} interrupted sagas")
        result = recovery.measure(self.workdir / "recovery", count)
        self.details["recovery"] = result
        self.figures.append(
            Figure(
                "recovery",
                f"{count:,} interrupted sagas",
                "saga",
                "s",
                count,
                [result["seconds"]],
                budget=10.0 * count / 10_000,
                target=1.0,
                target_text="< 10 s per 10,000",
                ratio_of="budget",
            )
        )

    def run_reconcile(self) -> None:
        results = reconcile.measure(
            self.workdir / "reconcile", self.config.reconcile_sizes, self.progress
        )
        self.details["reconcile"] = results
        for entry in results:
            size = entry["size"]
            for label, data in (("clean", entry["clean"]), ("+1% orphans", entry["with_orphans"])):
                case = f"{size:,} records, {label}"
                self.figures.append(
                    Figure(
                        "reconcile",
                        f"{case}: time",
                        "saga",
                        "s",
                        size,
                        [data["seconds"]],
                        budget=10.0 * size / 100_000,
                        target=1.0,
                        target_text="< 10 s per 100,000",
                        ratio_of="budget",
                    )
                )
                self.figures.append(
                    Figure(
                        "reconcile",
                        f"{case}: peak RSS",
                        "saga",
                        "MB",
                        size,
                        [data["peak_rss_mb"]],
                        budget=500.0,
                        target=1.0,
                        target_text="< 500 MB",
                        ratio_of="budget",
                        extra={"over_baseline_mb": data["peak_over_baseline_mb"]},
                    )
                )
                if data.get("peak_over_loaded_mb") is not None:
                    self.figures.append(
                        Figure(
                            "reconcile",
                            f"{case}: peak RSS over loaded collection",
                            "saga",
                            "MB",
                            size,
                            [data["peak_over_loaded_mb"]],
                            ratio_of="none",
                        )
                    )

    def run_memory(self) -> None:
        count = self.config.memory_batch
        results = memory.measure(self.workdir, count, self.progress)
        self.details["memory"] = results
        base = results["unprotected"]["peak_over_before_mb"]
        for name in ("unprotected", "saga"):
            self.figures.append(
                Figure(
                    "memory",
                    f"one batch of {count:,}: peak RSS over before",
                    name,
                    "MB",
                    count,
                    [results[name]["peak_over_before_mb"]],
                    baseline=base,
                    target=1.2 if name == "saga" else None,
                    target_text="<= 1.20x" if name == "saga" else "",
                    extra={"seconds": results[name]["seconds"]},
                )
            )

    def run_rebuild(self) -> None:
        results = rebuild.measure(
            self.workdir / "rebuild",
            self.config.rebuild_records,
            self.config.rebuild_rounds,
            self.progress,
        )
        self.details["rebuild"] = results
        self.figures.extend(rebuild.figures(results))

    def run_concurrency(self) -> None:
        threads, per = self.config.threads, self.config.per_thread
        self.progress(
            f"concurrency: {threads} threads x {per} creates, {self.config.rounds} rounds"
        )
        result = concurrency.measure(
            self.workdir / "concurrency", threads=threads, per_thread=per, rounds=self.config.rounds
        )
        self.details["concurrency"] = result
        case = f"{threads} threads, single creates"
        base = result["per_second"]["unprotected"]
        for name in ("unprotected", "saga"):
            self.figures.append(
                Figure(
                    "concurrency",
                    f"{case}: time",
                    name,
                    "s",
                    result["records"],
                    result["seconds"][name],
                    baseline=statistics.median(result["seconds"]["unprotected"]),
                    paired=result["paired"] if name == "saga" else [],
                    extra={"records_per_second": result["per_second"][name], "base": base},
                )
            )

    def run(self) -> None:
        self.run_writes()
        for name, action in (
            ("concurrency", self.run_concurrency),
            ("recovery", self.run_recovery),
            ("reconcile", self.run_reconcile),
            ("memory", self.run_memory),
            ("rebuild", self.run_rebuild),
        ):
            if name in self.config.only:
                self.guarded(name, action)

    def comparisons(self) -> list[dict[str, Any]]:
        """Per record, is the saga faster than each alternative on the same work?"""
        rows = []
        by_key = {(f.scenario, f.contender): f for f in self.figures}
        for (scenario, name), figure in by_key.items():
            saga = by_key.get((scenario, "saga"))
            if name in ALTERNATIVE_NAMES and saga is not None:
                rows.append(
                    {
                        "scenario": scenario,
                        "alternative": name,
                        "saga_ms_per_record": saga.median,
                        "alternative_ms_per_record": figure.median,
                        "saga_faster": saga.median < figure.median,
                    }
                )
        return rows


def _core(*, with_saga: bool) -> list[Contender]:
    """The baseline, and with the saga the floor beside it."""
    found: list[Contender] = [Unprotected()]
    if with_saga:
        found += [UnprotectedLinked(), Floor(), Saga()]
    return found


def _write_order(entry: tuple[tuple[str, str], list[float]]) -> tuple[int, int]:
    (op, name), _values = entry
    ops = [*SINGLE, *BATCHES]
    names = ["unprotected", "unprotected+links", "floor", "saga", *ALTERNATIVE_NAMES]
    return ops.index(op) if op in ops else 99, names.index(name) if name in names else 99


def method(config: Config) -> list[str]:
    return [
        f"Workload: {DIM}-dim unit embeddings (numpy, seeded) and {DOC_CHARS}-character "
        "documents; the same records for every contender and round.",
        "Unprotected dual write (the baseline: the user's code today): Chroma upsert of the "
        "caller's metadata only, on a collection object looked up once, then SQLite "
        "INSERT/UPDATE/DELETE and commit (WAL, synchronous=FULL); batches: request-sized "
        "upserts and one executemany + commit. unprotected+links: the same, storing "
        "sqlite_table and sqlite_record_id in every vector too (the earlier baseline); "
        "the saga row 'vs links' divides by it.",
        "Floor: the unprotected write plus one durable intent commit before Chroma is "
        "touched (dropped in the row's commit): the least any crash-safe dual write pays; "
        "its ratio is what one more synchronous=FULL commit costs here.",
        "Saga: SagaRunner.open(db, chroma_path=...) with default options (WAL, synchronous="
        "FULL), embedded Chroma, the public create/update/delete/create_many calls.",
        f"Write scenarios: {config.rounds} round(s); in each, every contender has fresh "
        "stores of its own (SQLite file, embedded Chroma folder) open at once, warmed up "
        "untimed; records are written in blocks (10 single writes, or one batch), each "
        "block by every contender in turn, the order rotating from block to block, so all "
        "contenders sample the same moments of a disk whose latency drifts. Sample = a "
        f"contender's summed time in a round / records ({config.records} single writes; "
        f"{config.batch_records} records in batches). Figure = median over rounds; ratio = "
        "median over rounds of (contender / unprotected in the same round).",
        "Alternatives: LangChain index() (langchain-core indexing API, SQLRecordManager on "
        "SQLite at SQLAlchemy defaults, langchain-chroma on embedded Chroma, lookup-table "
        "embeddings, cleanup=None, no application row written: a lower bound); DBOS workflow "
        "of two steps (Chroma upsert, SQLite INSERT/commit) with a SQLite system database at "
        "DBOS defaults.",
        "Recovery: sagas planted through engine.begin, a third left there, a third with "
        "the vector upserted (still pending), a third moved on to vector_written by "
        "log.advance; leases owned by a dead pid of this host; one recover() timed on "
        "a fresh runner. Target budget scales linearly: 10 s per 10,000 (issue 17).",
        "Concurrency: " + concurrency.__doc__.split("Method: ", 1)[1].replace("\n", " "),
        "Reconcile: synced records planted by SQL + Chroma (rows, vectors, vector_sync_state "
        "with content hashes, synced sagas); reconcile() timed in a fresh process; peak RSS = "
        "VmHWM of that process (everything imported before the baseline). 'Over loaded "
        "collection' = peak during reconcile() minus the RSS after one Chroma read (Chroma "
        "maps the collection's vectors on its first read). Time budget scales linearly: "
        "10 s per 100,000 (issue 17); RSS budget 500 MB absolute.",
        "Memory: one create_many in a fresh process; peak RSS during the call (VmHWM reset "
        "via /proc/self/clear_refs) minus RSS before it (records already built).",
        *rebuild.method(config.rebuild_records, config.rebuild_rounds),
        "Single samples (recovery, reconcile, memory) are one run each. The machine is "
        "noisy: compare ratios within one run, not figures across runs.",
    ]


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    started = time.perf_counter()
    env = environment()
    owned = config.workdir is None
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="saga-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(config, workdir)
    try:
        bench.run()
    finally:
        if owned and not config.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(workdir, ignore_errors=True)
    env["load_average_at_end"] = load_average()
    result = {
        "environment": env,
        "method": method(config),
        "config": {
            "records": config.records,
            "batch_records": config.batch_records,
            "rounds": config.rounds,
            "recovery": config.recovery,
            "reconcile_sizes": config.reconcile_sizes,
            "memory_batch": config.memory_batch,
            "rebuild_records": config.rebuild_records,
            "rebuild_rounds": config.rebuild_rounds,
            "scenarios": sorted(config.only),
        },
        "figures": [f.to_dict() for f in bench.figures],
        "comparisons": bench.comparisons(),
        "details": bench.details,
        "skipped": bench.skipped,
        "errors": bench.errors,
        "elapsed_s": time.perf_counter() - started,
    }
    text = json.dumps(result, indent=2, default=str)
    if config.save is not None:
        config.save.write_text(text + "\n")
    if config.as_json:
        print(text)
    else:
        print(render(result, bench.figures))
    return 1 if bench.errors else 0
