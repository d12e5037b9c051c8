"""The application's four kinds of writes, each one saga, shared by the demo and its worker.

Each takes the records it writes and returns the runner's ``SagaResult``; failures are
the runner's own loud errors (``ValidationError``, ``DataIntegrityError``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from saga import SagaResult, SagaRunner
from saga.demo.corpus import Record
from saga.demo.embedder import embed

Write = Callable[[SagaRunner, Sequence[Record]], SagaResult]


def vector_text(record: Record, text: str | None = None) -> str:
    """What a record's embedding is made from: its title and its text."""
    return f"{record.title} {record.text if text is None else text}"


def create(runner: SagaRunner, records: Sequence[Record]) -> SagaResult:
    """One ``create`` saga for the single record in ``records``."""
    (record,) = records
    return runner.create(
        record.table,
        record.row,
        embedding=embed(vector_text(record)),
        document=record.row[record.text_column],
        metadata=record.metadata,
    )


def create_many(runner: SagaRunner, records: Sequence[Record]) -> SagaResult:
    """One ``create_many`` saga for every record (all of one table): all or nothing."""
    items = [
        {
            "row": record.row,
            "embedding": embed(vector_text(record)),
            "document": record.row[record.text_column],
            "metadata": record.metadata,
        }
        for record in records
    ]
    return runner.create_many(records[0].table, items)


def update(runner: SagaRunner, records: Sequence[Record]) -> SagaResult:
    """One ``update`` saga: the record's text replaced by its longer revision, re-embedded."""
    (record,) = records
    return runner.update(
        record.table,
        record.key,
        {record.text_column: record.revised, "revision": 2},
        embedding=embed(vector_text(record, record.revised)),
        document=record.revised,
    )


def delete(runner: SagaRunner, records: Sequence[Record]) -> SagaResult:
    """One ``delete`` saga for the single record in ``records``."""
    (record,) = records
    return runner.delete(record.table, record.key)


WRITES: dict[str, Write] = {
    "create": create,
    "create_many": create_many,
    "update": update,
    "delete": delete,
}
