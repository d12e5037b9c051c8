"""A mixed write workload (create, update, delete) on disjoint and shared keys.

Used by ``tests/test_concurrency.py`` from threads (``run``) and from processes:

    python -m tests._worker_mixed DB HOST PORT WORKER WRITES SEED

which opens ``SagaRunner.open(DB, chroma_host=HOST, chroma_port=PORT)`` and prints one
JSON object: the acknowledged writes, the refusals, and anything unexpected. Like every
test worker it arms ``SAGA_FAILPOINTS`` itself, if set (``run`` in a thread does not).

Each worker owns ``OWN_KEYS`` keys nobody else writes (it knows their state, so it
never expects a refusal there), and shares ``SHARED_KEYS`` with every other worker
(where a create of a stored key, an update or delete of a missing one, and a key held
by another saga are refused: those are the only errors allowed).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from typing import Any

from saga import (
    LeaseLostError,
    RecordExistsError,
    RecordNotFoundError,
    SagaConflictError,
    SagaError,
    SagaRunner,
    SqliteStoreError,
    failpoints,
)

OWN_KEYS = 12
SHARED_KEYS = tuple(range(1, 9))
REFUSALS = (RecordExistsError, RecordNotFoundError, SagaConflictError)


def own_keys(worker: int) -> range:
    start = 1000 * (worker + 1)
    return range(start, start + OWN_KEYS)


def embedding_of(worker: int, step: int, key: int) -> list[float]:
    """Small integers: exact in float32, so the stored vector can be compared exactly."""
    return [float(worker), float(step % 1000), float(key % 1000), 1.0]


def run(runner: SagaRunner, worker: int, writes: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    present = dict.fromkeys(own_keys(worker), False)
    acked: list[dict[str, Any]] = []
    refused: Counter[str] = Counter()
    unexpected: list[str] = []
    for step in range(writes):
        shared = rng.random() < 0.5
        if shared:
            key = rng.choice(SHARED_KEYS)
            op = rng.choice(("create", "update", "delete"))
        else:
            key = rng.choice(list(present))
            op = rng.choice(("update", "update", "delete")) if present[key] else "create"
        body = f"w{worker}-s{step}"
        try:
            result = _write(runner, op, key, body, embedding_of(worker, step, key), worker)
        except LeaseLostError as exc:  # a SagaConflictError, but never acceptable here
            unexpected.append(f"{op} {key}: LeaseLostError: {exc}")
            continue
        except REFUSALS as exc:
            refused[type(exc).__name__] += 1
            if not shared:
                unexpected.append(f"{op} {key} (own key): {type(exc).__name__}: {exc}")
            continue
        except SqliteStoreError as exc:  # `database is locked` must never reach a caller
            unexpected.append(f"{op} {key}: SqliteStoreError: {exc}")
            continue
        except SagaError as exc:
            unexpected.append(f"{op} {key}: {type(exc).__name__}: {exc}")
            continue
        if not shared:
            present[key] = op != "delete"
        acked.append(
            {
                "saga_id": result.saga_id,
                "state": result.state,
                "op": op,
                "key": key,
                "body": body,
                "embedding": embedding_of(worker, step, key),
                "worker": worker,
            }
        )
    return {"acked": acked, "refused": dict(refused), "unexpected": unexpected}


def _write(
    runner: SagaRunner, op: str, key: int, body: str, embedding: list[float], worker: int
) -> Any:
    if op == "create":
        return runner.create(
            "notes",
            {"id": key, "body": body},
            embedding=embedding,
            document=body,
            metadata={"worker": worker},
        )
    if op == "update":
        return runner.update(
            "notes",
            key,
            {"body": body},
            embedding=embedding,
            document=body,
            metadata={"worker": worker},
        )
    return runner.delete("notes", key)


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    db, host, port, worker, writes, seed = argv
    with SagaRunner.open(db, chroma_host=host, chroma_port=int(port)) as runner:
        runner.track("notes")
        outcome = run(runner, int(worker), int(writes), int(seed))
    sys.stdout.write(json.dumps(outcome) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
