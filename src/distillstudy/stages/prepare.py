"""The `prepare` stage: make, split and hash one dataset.

    distillstudy prepare --name sine --kind sine --seed 0 --val-fraction 0.2 \
        --test-fraction 0.2 --n-train 200 --n-test 2000 \
        --out-data data/prepared/sine.npz --out-meta data/prepared/sine.json

The split seed is derived from (global seed, "split", dataset name), so every dataset
gets its own split and renaming one re-splits only it. An offline teacher's logits
(`--teacher-logits`, csv and npz datasets) are split with their rows and stored beside
the inputs as teacher_logits_<split>.
"""

from __future__ import annotations

import json

import numpy as np

from distillstudy.artifacts import save_npz, write_json
from distillstudy.engine import datasets, lm_data
from distillstudy.engine.seeds import derive_seed
from distillstudy.students import LM_KINDS


def run(*, name: str, kind: str, global_seed: int, val_fraction: float, test_fraction: float,
        out_data: str, out_meta: str, n_train: int | None = None, n_test: int | None = None,
        path: str | None = None, label: str | None = None, teacher_logits: str | None = None,
        spec: dict | None = None) -> dict:
    """Write the dataset's arrays and record; return the record. Language-model data
    (students.LM_KINDS) take their prepare.datasets entry as `spec` (engine/lm_data.py)."""
    if kind in LM_KINDS:
        return prepare_lm(name, kind, {**spec, "name": name}, derive_seed(global_seed, "split", name),
                          val_fraction, test_fraction, out_data, out_meta)
    return datasets.prepare(name, kind, out_data, out_meta, seed=derive_seed(global_seed, "split", name),
                            val_fraction=val_fraction, test_fraction=test_fraction, n_train=n_train,
                            n_test=n_test, path=path, label=label, teacher_logits=teacher_logits)


def prepare_lm(name: str, kind: str, spec: dict, seed: int, val_fraction: float, test_fraction: float,
               out_data: str, out_meta: str) -> dict:
    """Token sequences in engine/lm_data's format, and their record (sizes, vocabulary, hashes)."""
    arrays = lm_data.synthetic_lm(spec, seed) if kind == "synthetic_lm" else \
        lm_data.text(spec, seed, val_fraction, test_fraction)
    lm_data.check(arrays, f"prepare.datasets[{name}]")
    meta = {"name": name, "kind": kind, "sha256": datasets.content_hash(arrays),
            **{f"n_{s}": int(len(arrays[f"tokens_{s}"])) for s in ("train", "val", "test")},
            "vocab_size": int(arrays["vocab_size"]), "bos": int(arrays["bos"]),
            "block": int(arrays["tokens_train"].shape[1]) - 1, "spec": spec,
            "record": json.loads(str(arrays["record"]))}
    save_npz(out_data, {k: np.asarray(v) for k, v in arrays.items()})
    write_json(out_meta, meta)
    print(f"prepare[{name}]: {lm_data.describe(arrays)}")
    return meta
