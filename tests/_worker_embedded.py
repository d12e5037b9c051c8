"""Try to open a runner on an embedded Chroma folder; report what happened.

    python -m tests._worker_embedded DB CHROMA_DIR

Prints ``opened`` and exits 0, or prints ``<ErrorType>: <message>`` and exits 3.
Like every test worker it arms ``SAGA_FAILPOINTS`` itself, if set.
"""

from __future__ import annotations

import sys

from saga import RetryPolicy, SagaError, SagaRunner, failpoints


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    db, chroma_path = argv
    try:
        runner = SagaRunner.open(db, chroma_path=chroma_path, retry=RetryPolicy.disabled())
    except SagaError as exc:
        sys.stdout.write(f"{type(exc).__name__}: {exc}\n")
        return 3
    runner.close()
    sys.stdout.write("opened\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
