"""The `prepare` stage: make each dataset offline and deterministically, split it
train / validation / test, and save it with a content hash.

    distillstudy prepare --name mnist1d --kind mnist1d --out-data data/prepared/mnist1d.npz ...

Features are stored raw (float32); the train split's mean and standard deviation
are stored beside them so every model standardises the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillstudy.artifacts import save_npz, write_json

from distillstudy.grid import SPLITS  # noqa: F401
from distillstudy.errors import DataError


@dataclass
class Splits:
    x: dict[str, np.ndarray]  # split -> (n, features) float32
    y: dict[str, np.ndarray]  # split -> (n,) int64 class index
    feature_names: list[str]
    class_names: list[str]


def _split_pool(x, y, val_fraction, test_fraction, seed, fixed_test=None):
    """Stratified splits; `fixed_test` keeps a dataset's own published test split."""
    from sklearn.model_selection import train_test_split  # lazy: training stages skip sklearn

    if fixed_test is None:
        x, x_test, y, y_test = train_test_split(x, y, test_size=test_fraction,
                                                random_state=seed, stratify=y)
    else:
        x_test, y_test = fixed_test
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=val_fraction,
                                                random_state=seed, stratify=y)
    return {"train": x_tr, "val": x_val, "test": x_test}, {"train": y_tr, "val": y_val, "test": y_test}


def make_sine(n_train: int, n_test: int, val_fraction: float, seed: int) -> Splits:
    """The walkthrough's distribution: x ~ 10 N(0, 1), y ~ Bernoulli(0.4 sin x + 0.5).

    `n_train` is the training pool before the validation hold-out.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.standard_normal(n) * 10
    y = rng.binomial(1, 0.4 * np.sin(x) + 0.5)
    x = x.reshape(-1, 1)
    xs, ys = _split_pool(x[:n_train], y[:n_train], val_fraction, None, seed,
                         fixed_test=(x[n_train:], y[n_train:]))
    return Splits(xs, ys, ["x"], ["0", "1"])


def make_digits(val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    xs, ys = _split_pool(bunch.data, bunch.target, val_fraction, test_fraction, seed)
    return Splits(xs, ys, [f"px{i}" for i in range(bunch.data.shape[1])], [str(c) for c in range(10)])


def make_mnist1d(val_fraction: float, seed: int) -> Splits:
    """MNIST-1D generated locally (never downloaded): 4,000 train / 1,000 test, 40 features."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds NumPy's global generator itself (args.seed = 42), so the
    # data are the published benchmark's; only our validation split uses `seed`.
    data = make_dataset(get_dataset_args())
    xs, ys = _split_pool(data["x"], data["y"], val_fraction, None, seed,
                         fixed_test=(data["x_test"], data["y_test"]))
    return Splits(xs, ys, [f"t{i}" for i in range(data["x"].shape[1])], [str(c) for c in range(10)])


def read_label_table(path: str | Path, label: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read a user's CSV: numeric feature columns plus one label column.

    Raises DataError naming the file, the column and the first bad row (1-based,
    counting the header as row 1, as a spreadsheet shows it).
    """
    import pandas as pd  # lazy: training stages skip pandas

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc.__class__.__name__}: {str(exc).strip()})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if label not in frame.columns:
        raise DataError(f"{path}: label column {label!r} not found (columns: {', '.join(frame.columns)})")
    features = [c for c in frame.columns if c != label]
    if not features:
        raise DataError(f"{path}: no feature columns beside the label column {label!r}")
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows")
    labels = frame[label].str.strip()
    missing = np.flatnonzero(labels.eq("").to_numpy())
    if missing.size:
        raise DataError(f"{path}: row {missing[0] + 2}: missing value in label column {label!r} "
                        f"({missing.size} rows without a label)")
    x = np.empty((len(frame), len(features)), dtype=np.float64)
    for j, col in enumerate(features):
        values = pd.to_numeric(frame[col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raw = frame[col].iloc[bad[0]]
            raise DataError(f"{path}: row {bad[0] + 2}, column {col!r}: {raw!r} is not a finite number "
                            f"({bad.size} bad values in this column)")
        x[:, j] = values
    class_names = sorted(labels.unique())
    if len(class_names) < 2:
        raise DataError(f"{path}: label column {label!r} has a single class ({class_names[0]!r}); "
                        "distillation needs at least two")
    y = np.searchsorted(np.array(class_names), labels.to_numpy())
    return x, y, features, class_names


def make_csv(path: str, label: str, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    x, y, features, class_names = read_label_table(path, label)
    counts = np.bincount(y)
    if counts.min() < 3:
        rare = class_names[int(counts.argmin())]
        raise DataError(f"{path}: class {rare!r} of column {label!r} has {counts.min()} rows; "
                        "each class needs at least 3 to be split train/val/test")
    xs, ys = _split_pool(x, y, val_fraction, test_fraction, seed)
    return Splits(xs, ys, features, class_names)


def to_arrays(splits: Splits) -> dict[str, np.ndarray]:
    arrays = {}
    for s in SPLITS:
        arrays[f"x_{s}"] = np.ascontiguousarray(splits.x[s], dtype=np.float32)
        arrays[f"y_{s}"] = np.ascontiguousarray(splits.y[s], dtype=np.int64)
    arrays["mean"] = arrays["x_train"].mean(axis=0, dtype=np.float64).astype(np.float32)
    # A constant feature would divide by zero; leave it unscaled instead.
    std = arrays["x_train"].std(axis=0, dtype=np.float64)
    arrays["std"] = np.where(std > 0, std, 1.0).astype(np.float32)
    return arrays


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes: independent of the npz container."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        digest.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def build(kind: str, *, seed: int, val_fraction: float, test_fraction: float,
          n_train: int | None = None, n_test: int | None = None, path: str | None = None,
          label: str | None = None) -> Splits:
    if kind == "sine":
        if n_train is None or n_test is None:
            raise DataError("a sine dataset needs n_train and n_test (prepare.datasets[*])")
        return make_sine(n_train, n_test, val_fraction, seed)
    if kind == "digits":
        return make_digits(val_fraction, test_fraction, seed)
    if kind == "mnist1d":
        return make_mnist1d(val_fraction, seed)
    if kind == "csv":
        return make_csv(path, label, val_fraction, test_fraction, seed)
    raise DataError(f"unknown dataset kind {kind!r} (expected sine, digits, mnist1d or csv)")


def prepare(name: str, kind: str, out_data: str | Path, out_meta: str | Path, **options) -> dict:
    """Build one dataset, write its arrays and a metadata record, return the record."""
    splits = build(kind, **options)
    arrays = to_arrays(splits)
    meta = {
        "name": name,
        "kind": kind,
        "sha256": content_hash(arrays),
        "n_train": int(len(arrays["y_train"])),
        "n_val": int(len(arrays["y_val"])),
        "n_test": int(len(arrays["y_test"])),
        "n_features": int(arrays["x_train"].shape[1]),
        "n_classes": len(splits.class_names),
        "feature_names": splits.feature_names,
        "class_names": splits.class_names,
        "options": {k: v for k, v in options.items() if v is not None},
    }
    for s in SPLITS:
        present = np.unique(arrays[f"y_{s}"])
        if len(present) < 2:
            raise DataError(f"dataset {name!r}: the {s} split holds a single class; add data or "
                            "change the split fractions")
    save_npz(out_data, arrays)
    write_json(out_meta, meta)
    return meta
