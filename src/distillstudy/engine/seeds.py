"""Per-run seeds derived from the global seed and the run's coordinates.

A student's seed depends on (global seed, dataset, family, size, replicate) but
not on temperature or objective: every cell of one (dataset, family, size) trains
replicate r from the same initial weights in the same batch order, so
distilled-minus-baseline differences are paired by seed.
"""

from __future__ import annotations

import hashlib


def derive_seed(global_seed: int, *parts) -> int:
    """A stable 31-bit seed: sha256 of the parts, independent of Python's hash salt."""
    text = "|".join(str(p) for p in (global_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def student_seeds(global_seed: int, dataset: str, size: int | str, n_seeds: int, family: str = "mlp") -> list[int]:
    """Replicate seeds of a (dataset, family, size). Today's mlp keeps the derivation it had
    before families existed (its results stay bit-identical); any other family's label is
    part of its seeds, so a cnn of size 16 and the mlp of width 16 are independent draws.
    A size is a number or a zoo model's name ("resnet8x4"), spelled as params give it."""
    where = (dataset, int(size)) if family == "mlp" else (dataset, family, size)
    return [derive_seed(global_seed, "student", *where, r) for r in range(n_seeds)]


def teacher_seed(global_seed: int, dataset: str) -> int:
    return derive_seed(global_seed, "teacher", dataset)
