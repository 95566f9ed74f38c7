"""Per-run seeds derived from the global seed and the run's coordinates.

A student's seed depends on (global seed, dataset, student size, replicate) but
not on temperature or objective: every cell of one (dataset, size) trains
replicate r from the same initial weights in the same batch order, so
distilled-minus-baseline differences are paired by seed.
"""

from __future__ import annotations

import hashlib


def derive_seed(global_seed: int, *parts) -> int:
    """A stable 31-bit seed: sha256 of the parts, independent of Python's hash salt."""
    text = "|".join(str(p) for p in (global_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def student_seeds(global_seed: int, dataset: str, size: int, n_seeds: int) -> list[int]:
    return [derive_seed(global_seed, "student", dataset, int(size), r) for r in range(n_seeds)]


def teacher_seed(global_seed: int, dataset: str) -> int:
    return derive_seed(global_seed, "teacher", dataset)
