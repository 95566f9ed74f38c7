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
from distillstudy.params import BUILTIN_SHAPES


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


def make_csv(path: str, label: str, val_fraction: float, test_fraction: float, seed: int,
             teacher_logits: str | None = None) -> Splits:
    x, y, features, class_names = read_label_table(path, label)
    counts = np.bincount(y)
    if counts.min() < 3:
        rare = class_names[int(counts.argmin())]
        raise DataError(f"{path}: class {rare!r} of column {label!r} has {counts.min()} rows; "
                        "each class needs at least 3 to be split train/val/test")
    rows = _split_rows(y, val_fraction, test_fraction, seed)
    teacher = None
    if teacher_logits is not None:  # aligned with the CSV's data rows
        logits = read_teacher_logits(teacher_logits, len(y), len(class_names), None)["logits"]
        teacher = {s: logits[r] for s, r in rows.items()}
    return Splits({s: x[r] for s, r in rows.items()}, {s: y[r] for s, r in rows.items()}, features, class_names,
                  teacher)


def _labels(values: np.ndarray, path, key: str) -> tuple[np.ndarray, list[str]]:
    """Integer or string labels -> (class index per row, sorted class names)."""
    if values.ndim != 1:
        raise DataError(f"{path}: `{key}` must be one label per row, shaped (n,), got {values.shape}")
    if values.dtype.kind not in "iuUS":
        raise DataError(f"{path}: `{key}` must hold integer or string labels, got dtype {values.dtype}")
    if values.dtype.kind == "S":
        values = values.astype(str)
    classes = np.unique(values)
    return np.searchsorted(classes, values).astype(np.int64), [str(c) for c in classes]


def _features(values: np.ndarray, path, key: str) -> np.ndarray:
    if values.ndim < 2 or values.shape[0] == 0:
        raise DataError(f"{path}: `{key}` must be shaped (n, ...) with n >= 1, got {values.shape}")
    if values.dtype.kind not in "iufb":
        raise DataError(f"{path}: `{key}` must be numeric, got dtype {values.dtype}")
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: `{key}` row {bad[0]} holds a non-finite value ({bad.size} such rows)")
    return values.reshape(len(values), -1).astype(np.float64)


def _user_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of a user's npz, refusing pickled objects (they would run code)."""
    if not path.is_file():
        raise DataError(f"{path}: {what} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz file without pickled objects ({exc})") from None


def read_npz(path: str | Path) -> dict:
    """A user's npz: `x` (n, ...) numeric and `y` (n,) integer or string labels, optionally
    `x_test`, `y_test` (a fixed test split). Rows are examples; x is flattened to features,
    its per-example shape kept as `input_shape`. Raises DataError naming the file and key."""
    path = Path(path)
    raw = _user_npz(path, "file")
    missing = [k for k in ("x", "y") if k not in raw]
    if missing:
        raise DataError(f"{path}: needs arrays `x` and `y`; missing {', '.join(missing)} (found {sorted(raw)})")
    if ("x_test" in raw) != ("y_test" in raw):
        raise DataError(f"{path}: `x_test` and `y_test` go together (found only one of them)")
    x = _features(raw["x"], path, "x")
    y, class_names = _labels(raw["y"], path, "y")
    if len(y) != len(x):
        raise DataError(f"{path}: `y` has {len(y)} labels for {len(x)} rows of `x`")
    out = {"x": x, "y": y, "class_names": class_names, "input_shape": tuple(int(d) for d in raw["x"].shape[1:])}
    if "x_test" in raw:
        if raw["x_test"].shape[1:] != raw["x"].shape[1:]:
            raise DataError(f"{path}: `x_test` examples are shaped {raw['x_test'].shape[1:]}, `x`'s "
                            f"{raw['x'].shape[1:]}")
        x_test = _features(raw["x_test"], path, "x_test")
        train_labels, test_labels = (raw[k].astype(str) if raw[k].dtype.kind == "S" else raw[k] for k in ("y", "y_test"))
        if test_labels.ndim != 1 or (test_labels.dtype.kind in "US") != (train_labels.dtype.kind in "US"):
            raise DataError(f"{path}: `y_test` must hold labels of `y`'s kind, one per row "
                            f"(got dtype {test_labels.dtype}, shape {test_labels.shape})")
        classes = np.unique(train_labels)
        unknown = np.setdiff1d(np.unique(test_labels), classes)
        if unknown.size:
            raise DataError(f"{path}: `y_test` has labels that `y` never uses: {', '.join(map(str, unknown[:5]))}")
        y_test = np.searchsorted(classes, test_labels).astype(np.int64)
        if len(y_test) != len(x_test):
            raise DataError(f"{path}: `y_test` has {len(y_test)} labels for {len(x_test)} rows of `x_test`")
        out.update(x_test=x_test, y_test=y_test)
    return out


def read_teacher_logits(path: str | Path, n: int, n_classes: int, n_test: int | None) -> dict[str, np.ndarray]:
    """An offline teacher's logits: `logits` (n, classes) aligned with the data's rows, and
    `logits_test` aligned with its fixed test split when it has one. Raises DataError
    naming the file, the array and what is wrong."""
    path = Path(path)
    raw = _user_npz(path, "teacher logits file")
    wanted = {"logits": n, **({} if n_test is None else {"logits_test": n_test})}
    out = {}
    for key, rows in wanted.items():
        if key not in raw:
            raise DataError(f"{path}: needs `{key}` ({rows} rows x {n_classes} classes); found {sorted(raw)}")
        a = raw[key]
        if a.ndim != 2 or a.shape != (rows, n_classes):
            raise DataError(f"{path}: `{key}` must be shaped ({rows}, {n_classes}) (one row per example, one "
                            f"column per class), got {a.shape}")
        if a.dtype.kind not in "iuf":
            raise DataError(f"{path}: `{key}` must be numeric, got dtype {a.dtype}")
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            raise DataError(f"{path}: `{key}` row {bad[0]} holds a non-finite value ({bad.size} such rows)")
        out[key] = a.astype(np.float32)
    return out


def _check_class_sizes(y: np.ndarray, class_names: list[str], path) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if len(class_names) < 2:
        raise DataError(f"{path}: a single class ({class_names[0]!r}); distillation needs at least two")
    if counts.min() < 3:
        raise DataError(f"{path}: class {class_names[int(counts.argmin())]!r} has {counts.min()} rows; "
                        "each class needs at least 3 to be split train/val/test")


def make_npz(path: str, val_fraction: float, test_fraction: float, seed: int,
             teacher_logits: str | None = None) -> Splits:
    data = read_npz(path)
    x, y, class_names = data["x"], data["y"], data["class_names"]
    _check_class_sizes(y, class_names, path)
    fixed = "x_test" in data
    logits = None if teacher_logits is None else read_teacher_logits(
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


def to_arrays(splits: Splits) -> dict[str, np.ndarray]:
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
    raise DataError(f"unknown dataset kind {kind!r} (expected sine, digits, mnist1d, csv or npz)")


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
        "input_shape": list(splits.input_shape or (int(arrays["x_train"].shape[1]),)),
        "options": {k: v for k, v in options.items() if v is not None},
    }
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
