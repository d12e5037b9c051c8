"""Write scenarios: single create/update/delete and batches of 100 and 1,000.

The machine is shared and its disk latency drifts by several times within a minute,
so contenders are interleaved finely: in each round every contender has its own fresh
stores (SQLite file and embedded Chroma folder) open at once, warmed up untimed, and
the records are written in small blocks, each block by every contender in turn (the
order rotating from block to block). A contender's sample is its summed time over all
blocks of the round divided by the record count; since all contenders sample the same
moments, the per-round ratio to the unprotected write is robust to the drift.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench._contenders import Contender
from bench._data import Record, chunked, records
from bench._figures import rotated
from bench._stores import release_chroma

WARMUP = 5
WARM_KEYS = 10_000_000  # warm-up records live far from the measured keys
BLOCK = 10  # single writes per contender turn
Samples = dict[tuple[str, str], list[float]]  # (op, contender) -> ms per record, by round


@contextlib.contextmanager
def _opened(contenders: list[Contender], workdir: Path, label: str) -> Iterator[None]:
    """Every contender open on fresh stores of its own; all closed and removed after."""
    folders = [workdir / f"{label}-{c.name}" for c in contenders]
    opened: list[Contender] = []
    try:
        for contender, folder in zip(contenders, folders, strict=True):
            contender.open(folder)
            opened.append(contender)
        yield
    finally:
        for contender in opened:
            contender.close()
        release_chroma()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _interleave(
    contenders: list[Contender],
    blocks: Sequence[Sequence[Record]],
    action: Callable[[Contender, Sequence[Record]], None],
) -> dict[str, float]:
    """Seconds each contender spent on ``action`` over all blocks, turns interleaved."""
    spent: dict[str, float] = defaultdict(float)
    for number, block in enumerate(blocks):
        for contender in rotated(contenders, number):
            start = time.perf_counter()
            action(contender, block)
            spent[contender.name] += time.perf_counter() - start
    return spent


def _each(method: str) -> Callable[[Contender, Sequence[Record]], None]:
    def run(contender: Contender, block: Sequence[Record]) -> None:
        call = getattr(contender, method)
        for record in block:
            call(record.key if method == "delete" else record)

    return run


def singles(
    contenders: list[Contender],
    ops: set[str],
    count: int,
    rounds: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> Samples:
    """Per-record cost of ``count`` single creates, then updates, then deletes."""
    fresh, changed = records(count), records(count, version=1)
    warm, warm_changed = (
        records(WARMUP, start=WARM_KEYS),
        records(WARMUP, start=WARM_KEYS, version=1),
    )
    samples: Samples = defaultdict(list)
    for round_no in range(rounds):
        progress(f"single writes: round {round_no + 1}/{rounds}")
        with _opened(contenders, workdir, f"single-{round_no}"):
            for op, data, warm_data in (
                ("create", fresh, warm),
                ("update", changed, warm_changed),
                ("delete", fresh, warm),
            ):
                if op != "create" and op not in ops:
                    continue
                able = [c for c in contenders if op in c.supports]
                for contender in able:  # untimed: the first writes of each kind
                    _each(op)(contender, warm_data)
                spent = _interleave(able, list(chunked(data, BLOCK)), _each(op))
                for name, seconds in spent.items():
                    samples[(op, name)].append(seconds * 1000.0 / count)
    return samples


def batches(
    contenders: list[Contender],
    size: int,
    count: int,
    rounds: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> Samples:
    """Per-record cost of ``count`` records written in batches of ``size``."""
    groups = list(chunked(records(count), size))
    warm = records(size, start=WARM_KEYS)
    label = f"batch{size}"
    samples: Samples = defaultdict(list)

    def one_batch(contender: Contender, block: Sequence[Record]) -> None:
        contender.create_batch(block)

    for round_no in range(rounds):
        progress(f"batches of {size}: round {round_no + 1}/{rounds}")
        with _opened(contenders, workdir, f"{label}-{round_no}"):
            for contender in contenders:
                contender.create_batch(warm)  # untimed
            spent = _interleave(contenders, groups, one_batch)
            for name, seconds in spent.items():
                samples[(label, name)].append(seconds * 1000.0 / count)
    return samples
