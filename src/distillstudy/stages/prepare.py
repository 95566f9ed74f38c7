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

from distillstudy.engine import datasets
from distillstudy.engine.seeds import derive_seed


def run(*, name: str, kind: str, global_seed: int, val_fraction: float, test_fraction: float,
        out_data: str, out_meta: str, n_train: int | None = None, n_test: int | None = None,
        path: str | None = None, label: str | None = None, teacher_logits: str | None = None) -> dict:
    """Write the dataset's arrays and record; return the record."""
    return datasets.prepare(name, kind, out_data, out_meta, seed=derive_seed(global_seed, "split", name),
                            val_fraction=val_fraction, test_fraction=test_fraction, n_train=n_train,
                            n_test=n_test, path=path, label=label, teacher_logits=teacher_logits)
