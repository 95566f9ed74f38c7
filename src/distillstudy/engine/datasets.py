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

from distillstudy.artifacts import file_sha256, save_npz, write_json

from distillstudy.grid import SPLITS  # noqa: F401
from distillstudy.errors import DataError
from distillstudy.engine import images, tables
from distillstudy.students import IMAGE_KINDS
from distillstudy.userfiles import BUILTIN_SHAPES


@dataclass
class Splits:
    x: dict[str, np.ndarray]  # split -> (n, features) float32
    y: dict[str, np.ndarray]  # split -> (n,) int64 class index
    feature_names: list[str]
    class_names: list[str]
    #: split -> (n, classes) logits of an offline teacher, rows aligned with x (or None)
    teacher_logits: dict[str, np.ndarray] | None = None
    #: one example's shape before flattening into features (npz data)
    input_shape: tuple[int, ...] | None = None
    #: image kinds: x holds uint8 pixels (n, C, H, W), stored as such (images.pixel_arrays)
    pixels: bool = False
    #: more for the prepared dataset's record (image kinds: the files read, how splits were carved)
    record: dict | None = None


def _split_rows(y, val_fraction, test_fraction, seed, n_fixed_test=None) -> dict[str, np.ndarray]:
    """Row indices of each split, stratified by y. With `n_fixed_test` the dataset keeps its
    own test split (rows of that array) and only validation is held out of the pool.
    Splitting indices chooses exactly the rows that splitting the arrays themselves would."""
    from sklearn.model_selection import train_test_split  # lazy: training stages skip sklearn

    pool = np.arange(len(y))
    if n_fixed_test is None:
        pool, test = train_test_split(pool, test_size=test_fraction, random_state=seed, stratify=y)
    else:
        test = np.arange(n_fixed_test)
    train, val = train_test_split(pool, test_size=val_fraction, random_state=seed, stratify=y[pool])
    return {"train": train, "val": val, "test": test}


def _split_pool(x, y, val_fraction, test_fraction, seed, fixed_test=None):
    """Stratified splits; `fixed_test` keeps a dataset's own published test split."""
    rows = _split_rows(y, val_fraction, test_fraction, seed, None if fixed_test is None else len(fixed_test[1]))
    xs = {s: (fixed_test[0] if s == "test" and fixed_test is not None else x)[r] for s, r in rows.items()}
    ys = {s: (fixed_test[1] if s == "test" and fixed_test is not None else y)[r] for s, r in rows.items()}
    return xs, ys


def sine_probability(x: np.ndarray) -> np.ndarray:
    """The sine distribution's p(y = 1 | x) = 0.4 sin x + 0.5 (in [0.1, 0.9]), float64."""
    return 0.4 * np.sin(np.asarray(x, dtype=np.float64)) + 0.5


def sine_oracle_logits(x: np.ndarray) -> np.ndarray:
    """The oracle teacher's logits (n, 2) on sine inputs x (n, 1): log(1 - p), log p, so
    that softmax gives exactly (1 - p, p): the true conditional distribution."""
    p = sine_probability(np.asarray(x).reshape(-1))
    return np.stack([np.log1p(-p), np.log(p)], axis=1)


def make_sine(n_train: int, n_test: int, val_fraction: float, seed: int) -> Splits:
    """The walkthrough's distribution: x ~ 10 N(0, 1), y ~ Bernoulli(0.4 sin x + 0.5).

    `n_train` is the training pool before the validation hold-out.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.standard_normal(n) * 10
    y = rng.binomial(1, sine_probability(x))
    x = x.reshape(-1, 1)
    xs, ys = _split_pool(x[:n_train], y[:n_train], val_fraction, None, seed,
                         fixed_test=(x[n_train:], y[n_train:]))
    return Splits(xs, ys, ["x"], ["0", "1"])


def make_digits(val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    xs, ys = _split_pool(bunch.data, bunch.target, val_fraction, test_fraction, seed)
    return Splits(xs, ys, [f"px{i}" for i in range(bunch.data.shape[1])], [str(c) for c in range(10)],
                  input_shape=BUILTIN_SHAPES["digits"])


def make_mnist1d(val_fraction: float, seed: int) -> Splits:
    """MNIST-1D generated locally (never downloaded): 4,000 train / 1,000 test, 40 features."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds NumPy's global generator itself (args.seed = 42), so the
    # data are the published benchmark's; only our validation split uses `seed`.
    data = make_dataset(get_dataset_args())
    xs, ys = _split_pool(data["x"], data["y"], val_fraction, None, seed,
                         fixed_test=(data["x_test"], data["y_test"]))
    return Splits(xs, ys, [f"t{i}" for i in range(data["x"].shape[1])], [str(c) for c in range(10)])


def make_csv(path: str, label: str, val_fraction: float, test_fraction: float, seed: int,
             teacher_logits: str | None = None) -> Splits:
    x, y, features, class_names = tables.read_label_table(path, label)
    counts = np.bincount(y)
    if counts.min() < 3:
        rare = class_names[int(counts.argmin())]
        raise DataError(f"{path}: class {rare!r} of column {label!r} has {counts.min()} rows; "
                        "each class needs at least 3 to be split train/val/test")
    rows = _split_rows(y, val_fraction, test_fraction, seed)
    teacher = None
    if teacher_logits is not None:  # aligned with the CSV's data rows
        logits = tables.read_teacher_logits(teacher_logits, len(y), len(class_names), None)["logits"]
        teacher = {s: logits[r] for s, r in rows.items()}
    return Splits({s: x[r] for s, r in rows.items()}, {s: y[r] for s, r in rows.items()}, features, class_names,
                  teacher)


def make_npz(path: str, val_fraction: float, test_fraction: float, seed: int,
             teacher_logits: str | None = None) -> Splits:
    data = tables.read_npz(path)
    x, y, class_names = data["x"], data["y"], data["class_names"]
    tables.check_class_sizes(y, class_names, path)
    fixed = "x_test" in data
    logits = None if teacher_logits is None else tables.read_teacher_logits(
        teacher_logits, len(y), len(class_names), len(data["y_test"]) if fixed else None)
    rows = _split_rows(y, val_fraction, test_fraction, seed, len(data["y_test"]) if fixed else None)
    pick = {s: (data["x_test"], data["y_test"], "logits_test") if s == "test" and fixed else (x, y, "logits")
            for s in rows}
    xs = {s: pick[s][0][r] for s, r in rows.items()}
    ys = {s: pick[s][1][r] for s, r in rows.items()}
    teacher = None if logits is None else {s: logits[pick[s][2]][r] for s, r in rows.items()}
    shape = data["input_shape"]
    names = [f"f{i}" for i in range(x.shape[1])]
    return Splits(xs, ys, names, class_names, teacher, shape)


def make_images(kind: str, path: str | None, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """CIFAR-10/100 or an image folder (engine/images.py), kept as uint8 (n, C, H, W): its own
    test split stays the test split; validation (and test, for a folder without test/) is
    carved from the training images, stratified and seeded, and recorded (images.carved_record)."""
    data = images.read_images(kind, path)
    fixed = data.y_test is not None
    try:
        rows = _split_rows(data.y_train, val_fraction, test_fraction, seed, len(data.y_test) if fixed else None)
    except ValueError as exc:  # scikit-learn: a split too small to hold each class once
        raise DataError(f"{path}: cannot split the training images stratified by class ({exc})") from None
    source = {s: (data.x_test, data.y_test) if s == "test" and fixed else (data.x_train, data.y_train) for s in rows}
    record = {"source": data.source, "carved": images.carved_record(rows, fixed, seed, val_fraction, test_fraction)}
    return Splits({s: source[s][0][r] for s, r in rows.items()}, {s: source[s][1][r] for s, r in rows.items()},
                  [], data.class_names, input_shape=tuple(data.x_train.shape[1:]), pixels=True, record=record)


def to_arrays(splits: Splits) -> dict[str, np.ndarray]:
    if splits.pixels:  # uint8 (n, C, H, W) and per-channel statistics: the images' storage contract
        return images.pixel_arrays(splits.x, splits.y)
    arrays = {}
    for s in SPLITS:
        arrays[f"x_{s}"] = np.ascontiguousarray(splits.x[s], dtype=np.float32)
        arrays[f"y_{s}"] = np.ascontiguousarray(splits.y[s], dtype=np.int64)
    arrays["mean"] = arrays["x_train"].mean(axis=0, dtype=np.float64).astype(np.float32)
    # A constant feature would divide by zero; leave it unscaled instead.
    std = arrays["x_train"].std(axis=0, dtype=np.float64)
    arrays["std"] = np.where(std > 0, std, 1.0).astype(np.float32)
    # One example's shape before flattening: what a student family is built for.
    arrays["input_shape"] = np.array(splits.input_shape or (arrays["x_train"].shape[1],), dtype=np.int64)
    if splits.teacher_logits is not None:  # an offline teacher: its logits follow the rows
        for s in SPLITS:
            arrays[f"teacher_logits_{s}"] = np.ascontiguousarray(splits.teacher_logits[s], dtype=np.float32)
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
          label: str | None = None, teacher_logits: str | None = None) -> Splits:
    if teacher_logits is not None and kind not in ("csv", "npz"):
        raise DataError(f"an offline teacher's logits need rows to align with: a csv or npz dataset, not {kind!r}")
    if kind == "sine":
        if n_train is None or n_test is None:
            raise DataError("a sine dataset needs n_train and n_test (prepare.datasets[*])")
        return make_sine(n_train, n_test, val_fraction, seed)
    if kind == "digits":
        return make_digits(val_fraction, test_fraction, seed)
    if kind == "mnist1d":
        return make_mnist1d(val_fraction, seed)
    if kind == "csv":
        return make_csv(path, label, val_fraction, test_fraction, seed, teacher_logits)
    if kind == "npz":
        return make_npz(path, val_fraction, test_fraction, seed, teacher_logits)
    if kind in IMAGE_KINDS:
        return make_images(kind, path, val_fraction, test_fraction, seed)
    raise DataError(f"unknown dataset kind {kind!r} (expected sine, digits, mnist1d, csv, npz, "
                    f"{', '.join(IMAGE_KINDS)})")


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
        "n_features": int(np.prod(arrays["x_train"].shape[1:])),
        "n_classes": len(splits.class_names),
        "feature_names": splits.feature_names,
        "class_names": splits.class_names,
        "input_shape": list(splits.input_shape or (int(arrays["x_train"].shape[1]),)),
        "options": {k: v for k, v in options.items() if v is not None},
    }
    meta.update(splits.record or {})
    if splits.teacher_logits is not None:
        meta["teacher"] = {"kind": "offline logits", "path": str(options["teacher_logits"]),
                           "sha256": file_sha256(options["teacher_logits"])}
    for s in SPLITS:
        present = np.unique(arrays[f"y_{s}"])
        if len(present) < 2:
            raise DataError(f"dataset {name!r}: the {s} split holds a single class; add data or "
                            "change the split fractions")
    save_npz(out_data, arrays)
    write_json(out_meta, meta)
    return meta
