"""The demo's worker: a separate process that runs one write and, armed, dies midway.

    SAGA_FAILPOINTS="after:write_vectors=kill" python -m saga.demo.worker WORKDIR OP < records.json

It opens the work folder's stores itself (the parent has closed them: an embedded
Chroma folder admits one process at a time), runs ``OP`` (create, create_many, update
or delete) on the records read as JSON from stdin, and exits 0 if the write returned,
1 if it raised (the error on stderr). With a ``kill`` failpoint armed the parent sees
-9 instead: the saga is left in flight for ``saga recover``. The worker opts in to
``SAGA_FAILPOINTS`` explicitly (``failpoints.load_from_env()``): the library itself never
reads the variable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from saga import RetryPolicy, SagaError, failpoints
from saga.demo.app import Paths, open_runner
from saga.demo.corpus import Record
from saga.demo.writes import WRITES


def main(argv: list[str]) -> int:
    failpoints.load_from_env()
    workdir, op = argv
    records = [Record(**entry) for entry in json.load(sys.stdin)]
    # One try: a worker exists to be killed, not to wait out retries.
    with open_runner(Paths(Path(workdir)), retry=RetryPolicy.disabled()) as runner:
        try:
            result = WRITES[op](runner, records)
        except SagaError as exc:
            sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            return 1
    sys.stdout.write(f"{result.saga_id} {result.state}\n")
    return 0


def records_json(records: Sequence[Record]) -> str:
    """The stdin of a worker that writes ``records``."""
    return json.dumps([attrs.asdict(record) for record in records])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
