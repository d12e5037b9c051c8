"""A writer process for crash tests: it runs sagas until a failpoint or SIGKILL ends it.

Run as ``python -m tests._recovery_worker MODE DB CHROMA [options]`` from the repo
root. Failpoints come from the SAGA_FAILPOINTS environment variable, armed by
``failpoints.load_from_env()`` first thing (the library never reads it on import).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
from pathlib import Path
from typing import Any

from saga import RetryPolicy, SagaError, SagaRunner, failpoints
from tests.conftest import rewired

DIM = 4


def embedding_for(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 for b in digest[:DIM]]


def body(tag: str, key: int) -> str:
    return f"{tag}-{key}"


class SmallBatches:
    """Wraps the real Chroma store so batches split into sub-batches of ``size``."""

    def __init__(self, inner: Any, size: int) -> None:
        self._inner = inner
        self._size = size

    def max_batch_size(self) -> int:
        return self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def open_runner(db: str, chroma: str, small_batches: int = 0) -> SagaRunner:
    runner = SagaRunner.open(db, chroma_path=chroma, retry=RetryPolicy.disabled())
    runner.track("notes")
    if small_batches:
        runner = rewired(runner, vectors=SmallBatches(runner.stores.vectors, small_batches))
    return runner


def run_op(runner: SagaRunner, op: str, keys: list[int], tag: str) -> None:
    """One saga of kind ``op`` over ``keys``, writing text ``tag-key``."""
    if op == "create":
        runner.create("notes", {"id": keys[0], "body": body(tag, keys[0])}, **_vector(tag, keys[0]))
    elif op == "update":
        runner.update("notes", keys[0], {"body": body(tag, keys[0])}, **_vector(tag, keys[0]))
    elif op == "delete":
        runner.delete("notes", keys[0])
    elif op == "create_many":
        runner.create_many(
            "notes", [{"row": {"id": k, "body": body(tag, k)}, **_vector(tag, k)} for k in keys]
        )
    elif op == "update_many":
        runner.update_many(
            "notes",
            [{"key": k, "changes": {"body": body(tag, k)}, **_vector(tag, k)} for k in keys],
        )
    elif op == "delete_many":
        runner.delete_many("notes", keys)
    else:
        raise ValueError(op)


def _vector(tag: str, key: int) -> dict[str, Any]:
    text = body(tag, key)
    return {"embedding": embedding_for(text), "document": text, "metadata": {"tag": tag}}


def workload(runner: SagaRunner, seed: int, journal: Path, key_space: int) -> None:
    """A seeded endless mix of operations; each acknowledged one is journaled.

    Keys are touched at most once per run so that the journal says exactly what must
    be in the stores: the op that was in flight when the kill came is not journaled.
    """
    rng = random.Random(seed)
    with journal.open("a") as out:
        existing = set(runner_keys(runner))
        free = [k for k in range(1, key_space) if k not in existing]
        rng.shuffle(free)
        touched: set[int] = set()
        step = 0
        while True:
            step += 1
            op, keys = _pick(rng, existing - touched, free)
            if not keys:
                return
            touched.update(keys)
            tag = f"s{seed}n{step}"
            try:
                run_op(runner, op, keys, tag)
            except SagaError as exc:
                out.write(f"error {op} {','.join(map(str, keys))} {tag} {type(exc).__name__}\n")
            else:
                out.write(f"ok {op} {','.join(map(str, keys))} {tag}\n")
                if "create" in op:
                    existing.update(keys)
                if "delete" in op:
                    existing.difference_update(keys)
            out.flush()
            os.fsync(out.fileno())


def _pick(rng: random.Random, existing: set[int], free: list[int]) -> tuple[str, list[int]]:
    choice = rng.random()
    pool = sorted(existing)
    if choice < 0.4 or len(pool) < 3:
        if choice < 0.25 or len(free) < 3:
            return "create", [free.pop()] if free else []
        return "create_many", [free.pop() for _ in range(3)]
    if choice < 0.7:
        return "update", [rng.choice(pool)]
    if choice < 0.8:
        return "update_many", rng.sample(pool, 3)
    if choice < 0.93:
        return "delete", [rng.choice(pool)]
    return "delete_many", rng.sample(pool, 2)


def runner_keys(runner: SagaRunner) -> list[int]:
    with runner.stores.log.db.read() as conn:
        return [row[0] for row in conn.execute("SELECT id FROM notes")]


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["op", "workload", "recover"])
    parser.add_argument("db")
    parser.add_argument("chroma")
    parser.add_argument("--op", default="create")
    parser.add_argument("--keys", default="1")
    parser.add_argument("--tag", default="new")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--journal", default="journal.txt")
    parser.add_argument("--key-space", type=int, default=200)
    parser.add_argument("--small-batches", type=int, default=0)
    parser.add_argument("--policy", default="resume")
    args = parser.parse_args(argv)
    runner = open_runner(args.db, args.chroma, args.small_batches)
    if args.mode == "op":
        run_op(runner, args.op, [int(k) for k in args.keys.split(",")], args.tag)
    elif args.mode == "workload":
        workload(runner, args.seed, Path(args.journal), args.key_space)
    else:
        report = runner.recover(policy=args.policy)
        print(report.to_dict())
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
