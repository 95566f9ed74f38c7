"""Your tables and arrays, read for the prepare stage: a CSV with a label column, an npz of
x / y (and a fixed test split), an offline teacher's logits. Every error names the file,
the column or array, and the first bad row; every value must fit float32, the dtype the
prepared arrays are stored in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distillstudy.errors import DataError


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
        # Features are stored as float32: a value finite here but past its range would be inf there.
        over = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
        if over.size:
            raw = frame[col].iloc[over[0]]
            raise DataError(f"{path}: row {over[0] + 2}, column {col!r}: {raw!r} overflows float32, the type "
                            f"features are stored in (|value| <= {np.finfo(np.float32).max:.4g}; {over.size} "
                            "such values in this column): rescale the column")
        x[:, j] = values
    class_names = sorted(labels.unique())
    if len(class_names) < 2:
        raise DataError(f"{path}: label column {label!r} has a single class ({class_names[0]!r}); "
                        "distillation needs at least two")
    y = np.searchsorted(np.array(class_names), labels.to_numpy())
    return x, y, features, class_names


def labels(values: np.ndarray, path, key: str) -> tuple[np.ndarray, list[str]]:
    """Integer or string labels -> (class index per row, sorted class names)."""
    if values.ndim != 1:
        raise DataError(f"{path}: `{key}` must be one label per row, shaped (n,), got {values.shape}")
    if values.dtype.kind not in "iuUS":
        raise DataError(f"{path}: `{key}` must hold integer or string labels, got dtype {values.dtype}")
    if values.dtype.kind == "S":
        values = values.astype(str)
    classes = np.unique(values)
    return np.searchsorted(classes, values).astype(np.int64), [str(c) for c in classes]


def features(values: np.ndarray, path, key: str) -> np.ndarray:
    if values.ndim < 2 or values.shape[0] == 0:
        raise DataError(f"{path}: `{key}` must be shaped (n, ...) with n >= 1, got {values.shape}")
    if values.dtype.kind not in "iufb":
        raise DataError(f"{path}: `{key}` must be numeric, got dtype {values.dtype}")
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: `{key}` row {bad[0]} holds a non-finite value ({bad.size} such rows)")
    # Stored as float32: a wider float's value past its range would be stored as inf.
    flat = values.reshape(len(values), -1)
    over = np.abs(flat) > np.finfo(np.float32).max if values.dtype.kind == "f" else np.zeros(flat.shape, bool)
    rows = np.flatnonzero(over.any(axis=1))
    if rows.size:
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(over[rows[0]])), values.shape[1:]))
        raise DataError(f"{path}: `{key}` row {rows[0]}, index {at}: {float(values[(rows[0], *at)]):g} overflows "
                        f"float32, the type features are stored in (|value| <= {np.finfo(np.float32).max:.4g}; "
                        f"{rows.size} such rows)")
    return values.reshape(len(values), -1).astype(np.float64)


def user_npz(path: Path, what: str) -> dict[str, np.ndarray]:
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
    raw = user_npz(path, "file")
    missing = [k for k in ("x", "y") if k not in raw]
    if missing:
        raise DataError(f"{path}: needs arrays `x` and `y`; missing {', '.join(missing)} (found {sorted(raw)})")
    if ("x_test" in raw) != ("y_test" in raw):
        raise DataError(f"{path}: `x_test` and `y_test` go together (found only one of them)")
    x = features(raw["x"], path, "x")
    y, class_names = labels(raw["y"], path, "y")
    if len(y) != len(x):
        raise DataError(f"{path}: `y` has {len(y)} labels for {len(x)} rows of `x`")
    out = {"x": x, "y": y, "class_names": class_names, "input_shape": tuple(int(d) for d in raw["x"].shape[1:])}
    if "x_test" in raw:
        if raw["x_test"].shape[1:] != raw["x"].shape[1:]:
            raise DataError(f"{path}: `x_test` examples are shaped {raw['x_test'].shape[1:]}, `x`'s "
                            f"{raw['x'].shape[1:]}")
        x_test = features(raw["x_test"], path, "x_test")
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
    raw = user_npz(path, "teacher logits file")
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
        over = np.abs(a.astype(np.float64)) > np.finfo(np.float32).max
        if over.any():
            row, col = (int(i) for i in np.argwhere(over)[0])
            raise DataError(f"{path}: `{key}` row {row}, column {col}: {float(a[row, col]):g} overflows float32, the "
                            f"type logits are stored in (|value| <= {np.finfo(np.float32).max:.4g}; "
                            f"{int(over.any(axis=1).sum())} such rows)")
        out[key] = a.astype(np.float32)
    return out


def check_class_sizes(y: np.ndarray, class_names: list[str], path) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if len(class_names) < 2:
        raise DataError(f"{path}: a single class ({class_names[0]!r}); distillation needs at least two")
    if counts.min() < 3:
        raise DataError(f"{path}: class {class_names[int(counts.argmin())]!r} has {counts.min()} rows; "
                        "each class needs at least 3 to be split train/val/test")
