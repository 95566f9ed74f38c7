"""Image datasets at real size for the `prepare` stage, read from local folders (never
downloaded):

- `cifar10`, `cifar100`: the python-pickle folders as torchvision writes them
  (`cifar-10-batches-py/`: data_batch_1..5, test_batch, batches.meta; `cifar-100-python/`:
  train, test, meta). Each batch is a dict with b"data" (n, 3072) uint8 rows (the red,
  green then blue 32 x 32 planes, row-major) and b"labels" (CIFAR-100: b"fine_labels").
- `imagefolder`: train/<class>/*.png|jpg|jpeg and optionally test/<class>/..., read with
  Pillow and converted to RGB; every image of a dataset has the same size.

    distillstudy prepare --name c100 --kind cifar100 --path data/raw/cifar-100-python ...

The readers return uint8 pixels shaped (n, C, H, W) with their labels; datasets.make_images
splits them and `pixel_arrays` stores them as such (the storage contract the training engine
relies on). Any bad file stops prepare with a DataError naming it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillstudy.errors import DataError
from distillstudy.grid import SPLITS
from distillstudy.userfiles import CIFAR_FILES, image_classes

#: Per kind: the batches' label key and the meta file's class-names key.
CIFAR_KEYS = {"cifar10": (b"labels", b"label_names"), "cifar100": (b"fine_labels", b"fine_label_names")}
CIFAR_SHAPE = (3, 32, 32)

#: The only globals a CIFAR pickle may name: numpy's array and scalar reconstruction and the
#: latin-1 codec Python 3 uses for bytes at protocol 2. A pickle naming anything else (code
#: it would run while loading) is refused before it runs.
_ARRAY_GLOBALS = {
    "_reconstruct": np.zeros(1).__reduce__()[0],
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],
    "scalar": np.int64(0).__reduce__()[0],
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric"}


@dataclass
class Images:
    """One image dataset as read: uint8 pixels (n, C, H, W) and int64 labels; the test split is
    the dataset's own, or None when it has none (then test is carved from train)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str]
    #: what was read, for the prepared dataset's record (folder, files and their sha256)
    source: dict = field(default_factory=dict)


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if module in _NUMPY_MODULES and name in _ARRAY_GLOBALS:
            return _ARRAY_GLOBALS[name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _empty_bytes  # Python 3 writes b"" at protocol 2 as bytes()
        raise pickle.UnpicklingError(f"it names {module}.{name}; a CIFAR batch holds only numpy arrays, "
                                     "lists and bytes")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"it encodes bytes as {encoding!r}, not latin1")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    return b""


def load_batch(path: Path) -> tuple[dict, str]:
    """A CIFAR pickle as a dict with bytes keys (str keys are accepted and encoded), and the
    file's sha256. Raises DataError naming the file when it is truncated or corrupt, names
    code to run (refused before it runs), or is not a dict."""
    raw = path.read_bytes()
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle can fail in any of a dozen ways
        raise DataError(f"{path}: not a readable CIFAR pickle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(batch, dict) or not all(isinstance(k, (bytes, str)) for k in batch):
        raise DataError(f"{path}: not a CIFAR pickle: expected a dict with bytes keys, got "
                        f"{type(batch).__name__}")
    return {(k.encode() if isinstance(k, str) else k): v for k, v in batch.items()}, hashlib.sha256(raw).hexdigest()


def _class_names(path: Path, batch: dict, key: bytes) -> list[str]:
    names = batch.get(key)
    if not isinstance(names, (list, tuple)) or len(names) < 2 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: needs {key!r}, a list of at least two class names (found keys "
                        f"{sorted(batch)})")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _pixels_and_labels(path: Path, batch: dict, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(label_key)
    if data is None or labels is None:
        raise DataError(f"{path}: a CIFAR batch needs b'data' and {label_key!r} (found keys {sorted(batch)})")
    width = int(np.prod(CIFAR_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise DataError(f"{path}: b'data' must be uint8 rows of {width} pixels (3 x 32 x 32), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray([None])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {label_key!r} must be a list of integer labels")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels ({label_key!r}) for {len(data)} rows of b'data'")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at row {bad[0]} is outside 0..{n_classes - 1} "
                        f"({n_classes} classes; {bad.size} such rows)")
    return data.reshape(-1, *CIFAR_SHAPE), labels.astype(np.int64)


def read_cifar(kind: str, folder: str | Path) -> Images:
    """CIFAR-10 or CIFAR-100 (fine labels) from its python-pickle folder; class names from the
    meta file; the official test batch is the test split."""
    folder = Path(folder)
    meta_name, train_names, test_name = CIFAR_FILES[kind]
    label_key, names_key = CIFAR_KEYS[kind]
    missing = [n for n in (meta_name, *train_names, test_name) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]}: file does not exist (a {kind} folder as torchvision writes it "
                        f"holds {meta_name}, {', '.join(train_names)} and {test_name}; missing: {', '.join(missing)})")
    meta, digest = load_batch(folder / meta_name)
    class_names = _class_names(folder / meta_name, meta, names_key)
    files, parts = {meta_name: digest}, {}
    for name in (*train_names, test_name):
        batch, files[name] = load_batch(folder / name)
        parts[name] = _pixels_and_labels(folder / name, batch, label_key, len(class_names))
    x_train = np.concatenate([parts[n][0] for n in train_names])
    y_train = np.concatenate([parts[n][1] for n in train_names])
    _check_classes(y_train, class_names, folder / train_names[0] if len(train_names) == 1 else folder)
    return Images(x_train, y_train, *parts[test_name], class_names,
                  {"path": str(folder), "files_sha256": files})


def _check_classes(y: np.ndarray, class_names: list[str], where) -> None:
    """Stratified splits need a few examples of each class present; classes the data never
    use are allowed (a CIFAR subset keeps its 10 or 100 outputs)."""
    counts = np.bincount(y, minlength=len(class_names))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise DataError(f"{where}: the training images hold {len(present)} class; distillation needs at least two")
    rare = present[counts[present].argmin()]
    if counts[rare] < 3:
        raise DataError(f"{where}: class {class_names[rare]!r} has {counts[rare]} training images; each class "
                        "used needs at least 3 to be split train/val/test")


def _read_image(path: Path, digest) -> np.ndarray:
    from PIL import Image  # lazy: only image datasets pay for Pillow

    raw = path.read_bytes()
    digest.update(f"{path.parent.parent.name}/{path.parent.name}/{path.name}|{len(raw)}|".encode())
    digest.update(raw)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return rgb.transpose(2, 0, 1)


def _read_split(folder: Path, classes: list[str] | None, shape, digest):
    """One imagefolder split: pixels, labels (indices into `classes`, or into its own sorted
    class folders when None), class names, the shape every image must have."""
    found = image_classes(folder)
    if not found:
        raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/*.png|jpg|jpeg)")
    for name, files in found.items():
        if not files:
            raise DataError(f"{folder / name}: class folder holds no PNG or JPEG image")
    classes = list(found) if classes is None else classes
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise DataError(f"{folder / unknown[0]}: class {unknown[0]!r} has no folder under train/ "
                        f"(train's classes: {', '.join(classes)})")
    index = {name: i for i, name in enumerate(classes)}
    paths = [(f, index[name]) for name, files in found.items() for f in files]
    first = _read_image(paths[0][0], digest)
    shape = shape or first.shape
    x = np.empty((len(paths), *shape), dtype=np.uint8)
    for i, (path, _) in enumerate(paths):
        image = first if i == 0 else _read_image(path, digest)
        if image.shape != shape:
            raise DataError(f"{path}: image is {image.shape[2]} x {image.shape[1]} (W x H), the dataset's "
                            f"{shape[2]} x {shape[1]} (every image of a dataset has the same size)")
        x[i] = image
    return x, np.array([label for _, label in paths], dtype=np.int64), classes, shape


def read_imagefolder(folder: str | Path) -> Images:
    """train/<class>/ images (classes: the sorted sub-folder names) and, when there is a test/
    folder, its images as the test split (its classes must be train's)."""
    folder = Path(folder)
    if not (folder / "train").is_dir():
        raise DataError(f"{folder}: no train/ folder (expected train/<class>/*.png|jpg|jpeg, optionally test/)")
    digest = hashlib.sha256()
    x_train, y_train, classes, shape = _read_split(folder / "train", None, None, digest)
    _check_classes(y_train, classes, folder / "train")
    x_test = y_test = None
    if (folder / "test").is_dir():
        x_test, y_test, _, _ = _read_split(folder / "test", classes, shape, digest)
    source = {"path": str(folder), "n_files": int(len(y_train) + (0 if y_test is None else len(y_test))),
              "files_sha256": digest.hexdigest()}  # over each file's split/class/name, size and bytes
    return Images(x_train, y_train, x_test, y_test, classes, source)


def read_images(kind: str, folder: str | Path | None) -> Images:
    if folder is None:
        raise DataError(f"a {kind} dataset needs the path of its folder (prepare.datasets[*].path)")
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: not a folder (a {kind} dataset is read from its folder)")
    return read_imagefolder(folder) if kind == "imagefolder" else read_cifar(kind, folder)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 pixels (n, C, H, W) scaled to [0, 1],
    over all n·H·W pixels of each channel (population std, as np.std): computed exactly from
    each channel's 256-level histogram in float64, so no pixel array is ever copied to float;
    returned float32, a constant channel's std as 1 (left unscaled rather than divided by 0)."""
    levels = np.arange(256, dtype=np.float64) / 255
    mean, std = np.empty(x.shape[1]), np.empty(x.shape[1])
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        mean[c] = counts @ levels / counts.sum()
        std[c] = np.sqrt(counts @ (levels - mean[c]) ** 2 / counts.sum())
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def pixel_arrays(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The prepared npz of an image dataset: x_<split> uint8 (n, C, H, W), y_<split> int64,
    mean and std float32 (C,) of the training split's pixels in [0, 1], input_shape int64
    (C, H, W). A model sees (x / 255 - mean[:, None, None]) / std[:, None, None]."""
    arrays = {}
    for s in SPLITS:
        arrays[f"x_{s}"] = np.ascontiguousarray(x[s], dtype=np.uint8)
        arrays[f"y_{s}"] = np.ascontiguousarray(y[s], dtype=np.int64)
    arrays["mean"], arrays["std"] = channel_stats(arrays["x_train"])
    arrays["input_shape"] = np.array(arrays["x_train"].shape[1:], dtype=np.int64)
    return arrays


def carved_record(rows: dict[str, np.ndarray], fixed_test: bool, seed: int, val_fraction: float,
                  test_fraction: float) -> dict:
    """How each split was made: the dataset's own test split, or rows carved from the training
    images (stratified by class, seeded), named by the sha256 of their int64 indices in
    reading order (CIFAR: the batches in order; imagefolder: sorted classes, sorted files)."""
    record = {}
    for s, r in rows.items():
        if s == "test" and fixed_test:
            record[s] = {"from": "test", "rows": int(len(r))}
            continue
        index = np.ascontiguousarray(r, dtype="<i8")
        record[s] = {"from": "train", "rows": int(len(r)), "stratified": True, "seed": int(seed),
                     "rows_sha256": hashlib.sha256(index.tobytes()).hexdigest()}
        if s != "train":
            record[s]["fraction"] = float(val_fraction if s == "val" else test_fraction)
    return record
