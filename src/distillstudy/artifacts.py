"""Atomic artifact writes: write to a temp file beside the target, then rename.

An interrupted run therefore never leaves a half-written file under a final
name that Snakemake or DVC would mistake for a finished output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it onto `path` on success.

    `suffix` keeps an extension for writers that insist on one (np.savez adds
    ".npz" when it is missing; matplotlib picks the format from it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A job killed between writing and renaming leaves its temp file behind; the job
    # that rewrites the same target (only one may, under Snakemake's lock) removes it.
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Deterministic JSON: sorted keys, fixed indent, trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed npz written atomically; byte-identical for identical arrays."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def read_record(logits_npz: dict) -> dict:
    """The JSON record a stage stored inside its npz (key `record`)."""
    return json.loads(str(logits_npz["record"]))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (a user's data or teacher file, recorded in provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
