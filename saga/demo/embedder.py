"""A small deterministic embedder: hashed words and character trigrams, L2-normalised.

The demo must run offline and give the same numbers on every machine, so it ships its
own embedder instead of a model (Chroma's default embedding function downloads one and
must never run). Words carry the topic; trigrams make ``serialize`` and ``serializes``
land near each other. Features are hashed with BLAKE2b, not ``hash()``, which Python
salts per process: the worker subprocess must embed exactly as the parent does.
"""

from __future__ import annotations

import hashlib
import math
import re

DIMENSION = 64
"""Components per embedding."""

_WORD = re.compile(r"[a-z0-9_]+")
_TRIGRAM_WEIGHT = 0.5  # words say more about a text than its trigrams


def embed(text: str, dimension: int = DIMENSION) -> list[float]:
    """The unit-length embedding of ``text`` (all zeros but one for empty text)."""
    vector = [0.0] * dimension
    for feature, weight in _features(text):
        index, sign = _bucket(feature, dimension)
        vector[index] += sign * weight
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        # Nothing to hash: still a valid unit vector, so Chroma's distances stay finite.
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


def _features(text: str) -> list[tuple[str, float]]:
    features: list[tuple[str, float]] = []
    for word in _WORD.findall(text.lower()):
        features.append((f"w:{word}", 1.0))
        padded = f"^{word}$"
        features.extend((f"t:{padded[i : i + 3]}", _TRIGRAM_WEIGHT) for i in range(len(padded) - 2))
    return features


def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    """The component a feature adds to, and with which sign (signed hashing keeps
    collisions from all pushing the same way)."""
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return number % dimension, 1.0 if (number >> 63) & 1 else -1.0
