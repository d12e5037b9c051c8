"""The workload: deterministic records, 384-dim embeddings, ~200-character documents.

Everything derives from numpy's seeded generator, so every contender of every round
writes exactly the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DIM = 384
DOC_CHARS = 200
TABLE = "notes"
SCHEMA = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, vector_id TEXT)"
_WORDS = (
    "saga",
    "vector",
    "commit",
    "ledger",
    "orbit",
    "harbour",
    "lantern",
    "meadow",
    "copper",
    "signal",
    "quartz",
    "river",
    "atlas",
    "pivot",
    "summit",
    "canvas",
    "ember",
    "falcon",
    "garnet",
    "helium",
    "island",
    "jasper",
)


@dataclass(frozen=True)
class Record:
    """One application record: its row, its vector and the vector's document/metadata."""

    key: int
    body: str
    embedding: list[float]
    document: str
    metadata: dict[str, Any]

    @property
    def vector_id(self) -> str:
        return f"{TABLE}:{self.key}"

    @property
    def row(self) -> dict[str, Any]:
        return {"id": self.key, "body": self.body}

    def linked_metadata(self) -> dict[str, Any]:
        """What an unprotected writer stores: the caller's metadata plus the row link."""
        return {**self.metadata, "sqlite_table": TABLE, "sqlite_record_id": self.key}


def document(key: int, version: int, rng: np.random.Generator) -> str:
    words = rng.choice(_WORDS, size=40)
    text = f"note {key} v{version}: " + " ".join(str(w) for w in words)
    return text[:DOC_CHARS].ljust(DOC_CHARS, ".")


def records(count: int, *, start: int = 0, version: int = 0, seed: int = 20240607) -> list[Record]:
    """``count`` records with keys ``start..start+count-1`` (``version`` changes content)."""
    rng = np.random.default_rng([seed, start, version])
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    made = []
    for offset, vector in enumerate(vectors.tolist()):
        key = start + offset
        text = document(key, version, rng)
        made.append(
            Record(
                key=key,
                body=text,
                embedding=vector,
                document=text,
                metadata={"lang": "en", "n": key, "version": version},
            )
        )
    return made


def embedding_block(start: int, count: int, seed: int = 99) -> np.ndarray:
    """A block of unit vectors (for planting many records without Python lists)."""
    rng = np.random.default_rng([seed, start])
    block = rng.standard_normal((count, DIM), dtype=np.float32)
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block


def chunked(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for begin in range(0, len(values), size):
        yield values[begin : begin + size]
