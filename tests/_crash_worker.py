"""A child process that creates one note and, with ``SAGA_FAILPOINTS`` set, dies midway.

    python -m tests._crash_worker DB CHROMA_DIR KEY

It arms the variable's failpoints itself (``failpoints.load_from_env()``): the library
never reads it on import.

Exit codes: 0 the create returned, 1 it raised (the error is printed on stderr),
86 a failpoint's ``exit`` fired, -9 (as seen by the parent) a ``kill`` fired.
"""

from __future__ import annotations

import sys

from saga import RetryPolicy, SagaError, SagaRunner, failpoints
from tests._probe import worker_embedding


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    db, chroma_path, raw_key = argv
    key = int(raw_key)
    with SagaRunner.open(db, chroma_path=chroma_path, retry=RetryPolicy.disabled()) as runner:
        runner.track("notes")
        try:
            result = runner.create(
                "notes",
                {"id": key, "body": f"note {key}"},
                embedding=worker_embedding(key),
                document=f"document {key}",
                metadata={"n": key},
            )
        except SagaError as exc:
            sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            return 1
    sys.stdout.write(f"{result.saga_id} {result.state}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
