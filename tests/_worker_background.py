"""An application process with in-app recovery (``recover_every``), for crash tests.

    python -m tests._worker_background DB (--chroma-path DIR | --chroma-port P)
        --every SECONDS --first-key K --journal FILE [--until FILE]

It arms ``SAGA_FAILPOINTS`` itself (``failpoints.load_from_env()``), opens
``SagaRunner.open(DB, ..., recover_every=SECONDS)``, tracks ``notes`` and writes keys
``K, K+1, ...`` of its own: create the key, update it, and delete every third one. Each
write is journaled before it starts (``begin OP KEY TAG``) and once acknowledged
(``ok OP KEY TAG``, or ``error ...``), fsynced, so the parent knows what must be
stored. It writes until a failpoint (or the parent) kills it, or until the file
``--until`` exists; then it closes the runner and prints one JSON object: its
background recovery's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from loguru import logger

from saga import RetryPolicy, SagaError, SagaRunner, failpoints
from tests._recovery_worker import body, embedding_for

PAUSE = 0.02  # between writes when running until told to stop: a modest load


def write(runner: SagaRunner, out: IO[str], op: str, key: int, tag: str) -> None:
    out.write(f"begin {op} {key} {tag}\n")
    _sync(out)
    text = body(tag, key)
    vector: dict[str, Any] = {
        "embedding": embedding_for(text),
        "document": text,
        "metadata": {"tag": tag},
    }
    try:
        if op == "create":
            runner.create("notes", {"id": key, "body": text}, **vector)
        elif op == "update":
            runner.update("notes", key, {"body": text}, **vector)
        else:
            runner.delete("notes", key)
    except SagaError as exc:
        out.write(f"error {op} {key} {tag} {type(exc).__name__}: {exc}\n")
    else:
        out.write(f"ok {op} {key} {tag}\n")
    _sync(out)


def _sync(out: IO[str]) -> None:
    out.flush()
    os.fsync(out.fileno())


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    logger.remove()  # the library's log on stderr, for the parent to show if a test fails
    logger.add(sys.stderr, level="INFO")
    logger.enable("saga")
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--chroma-path")
    parser.add_argument("--chroma-port", type=int)
    parser.add_argument("--every", type=float, required=True)
    parser.add_argument("--first-key", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--until")
    args = parser.parse_args(argv)
    where = (
        {"chroma_host": "127.0.0.1", "chroma_port": args.chroma_port}
        if args.chroma_port
        else {"chroma_path": args.chroma_path}
    )
    runner = SagaRunner.open(
        args.db, **where, retry=RetryPolicy.disabled(), recover_every=args.every
    )
    runner.track("notes")
    stop = Path(args.until) if args.until else None
    with Path(args.journal).open("a") as out:
        key = args.first_key
        while stop is None or not stop.exists():
            write(runner, out, "create", key, f"c{key}")
            write(runner, out, "update", key, f"u{key}")
            if key % 3 == 0:
                write(runner, out, "delete", key, f"d{key}")
            key += 1
            if stop is not None:
                time.sleep(PAUSE)
    background = runner._background
    assert background is not None
    runner.close()
    counts = {
        "passes": background.passes,
        "settled": background.settled,
        "failures": background.failures,
        "alive": background.thread.is_alive(),
    }
    sys.stdout.write(json.dumps(counts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
