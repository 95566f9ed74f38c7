"""Your data's files as params.yaml names them, read before any job: one example's shape
(without preparing the dataset), and the checks of CSV tables, npz arrays, offline teacher
logits and image folders that name the key and the file (params.check_params runs them;
their values are checked when the prepare stage reads them, naming the row).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from distillstudy.grid import factory_file

def csv_errors(i: int, spec: dict, base: Path) -> list[str]:
    where = f"prepare.datasets[{i}]"
    path = base / spec["path"]
    if not path.is_file():
        return [f"{where}.path: {spec['path']!r} does not exist (relative to {base})"]
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{where}.path: {spec['path']!r} cannot be read as CSV: {exc}"]
    header = [h.strip() for h in header]
    if spec["label"] not in header:
        return [f"{where}.label: {spec['label']!r} is not a column of {spec['path']} "
                f"(columns: {', '.join(header) or 'none'})"]
    return []


def npz_shapes(path: Path) -> dict[str, tuple]:
    """{array name: shape} of an npz, read from the arrays' headers only (no data)."""
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                if version not in read_header:
                    raise ValueError(f"array {member}: npy format version {version} is not supported")
                shape, _, _ = read_header[version](handle)
            shapes[member.removesuffix(".npy")] = shape
    return shapes


#: The per-example input shape of the built-in datasets (a csv table's is (columns - 1,),
#: an npz's is its x's): what student families are built and checked for.
BUILTIN_SHAPES = {"mnist1d": (40,), "digits": (8, 8), "sine": (1,)}

#: Image datasets (students.IMAGE_KINDS) are prepared as uint8 pixels shaped (n, C, H, W)
#: (engine/images.py): CIFAR's python-pickle folders as torchvision writes them, and class
#: sub-folders of PNG/JPEG files. Each CIFAR folder's files: (class names, training batches, test batch); images 3 x 32 x 32.
CIFAR_FILES = {"cifar10": ("batches.meta", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
               "cifar100": ("meta", ("train",), "test")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_classes(split_folder: Path) -> dict[str, list[Path]]:
    """An imagefolder split (train/ or test/): each class sub-folder's name (sorted; hidden ones
    skipped) and its images (sorted files ending in IMAGE_SUFFIXES, in any case)."""
    return {d.name: sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(Path(split_folder).iterdir()) if d.is_dir() and not d.name.startswith(".")}


def image_dataset_files(spec: dict, base: str | Path = ".") -> list[str]:
    """The files an image dataset's prepare reads, under its `path` (a workflow's inputs: adding,
    removing or editing one re-runs prepare; a folder's own mtime would miss an edit)."""
    root = Path(spec["path"])
    if spec["kind"] in CIFAR_FILES:
        meta, train, test = CIFAR_FILES[spec["kind"]]
        return [str(root / name) for name in (meta, *train, test)]
    return [str(root / split / name / f.name) for split in ("train", "test") if (Path(base) / root / split).is_dir()
            for name, files in image_classes(Path(base) / root / split).items() for f in files]


def dataset_input_shape(spec: dict, base: str | Path = ".") -> tuple[int, ...]:
    """One example's shape for a prepare.datasets entry, without preparing it: the
    built-in kinds' known shapes, a csv's feature count (its header), an npz's x, an
    image dataset's (C, H, W) (CIFAR's 3 x 32 x 32, an imagefolder's first training image)."""
    if spec["kind"] in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[spec["kind"]]
    if spec["kind"] in CIFAR_FILES:
        return (3, 32, 32)
    path = Path(base) / spec["path"]
    if spec["kind"] == "imagefolder":  # RGB, sized as the first image (prepare checks all are)
        from PIL import Image  # lazy: only image studies pay for Pillow

        first = next((f for files in image_classes(path / "train").values() for f in files), None)
        if first is None:
            raise ValueError(f"{path / 'train'}: no PNG or JPEG image in a class sub-folder")
        with Image.open(first) as image:
            return (3, image.height, image.width)
    if spec["kind"] == "npz":
        return tuple(int(d) for d in npz_shapes(path)["x"][1:])
    with open(path, newline="", encoding="utf-8") as fh:
        return (len(next(csv.reader(fh), [])) - 1,)


def _rows(shape: tuple) -> int:
    return int(shape[0]) if shape else 0


def user_file_errors(i: int, spec: dict, base: Path) -> list[str]:
    """An npz dataset's arrays and an offline teacher's logits, by name and shape (their
    values are checked when the prepare stage reads them, naming the row)."""
    where = f"prepare.datasets[{i}]"
    messages, shapes = [], {}
    teacher = spec.get("teacher", {})
    if "logits" in teacher and ("factory" in teacher or "weights" in teacher):
        messages.append(f"{where}.teacher: give either logits (an offline teacher) or factory (your module, "
                        "with or without weights), not both")
    if "weights" in teacher and "factory" not in teacher:
        messages.append(f"{where}.teacher.weights: weights need the factory that builds their module "
                        f"({where}.teacher.factory)")
    if "logits" in teacher and spec["kind"] not in ("csv", "npz"):
        messages.append(f"{where}.teacher.logits: an offline teacher's logits need rows to align with; only csv "
                        f"and npz datasets take them, not kind {spec['kind']!r}")
    for key in ("factory", "weights"):  # your teacher's code and weights: loaded by the teacher stage
        if key in teacher:
            name = factory_file(teacher[key]) if key == "factory" else teacher[key]
            if not (base / name).is_file():
                messages.append(f"{where}.teacher.{key}: {name!r} does not exist (relative to {base})")
    files = ([("path", spec["path"])] if spec["kind"] == "npz" else []) + (
        [("teacher.logits", teacher["logits"])] if "logits" in teacher else [])
    for key, name in files:
        path = base / name
        if not path.is_file():
            messages.append(f"{where}.{key}: {name!r} does not exist (relative to {base})")
            continue
        try:
            shapes[key] = npz_shapes(path)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            messages.append(f"{where}.{key}: {name!r} is not a readable npz file ({exc})")
    data = shapes.get("path")
    if data is not None:
        missing = [k for k in ("x", "y") if k not in data]
        if missing:
            messages.append(f"{where}.path: {spec['path']!r} needs arrays x and y; missing {', '.join(missing)}")
        elif _rows(data["y"]) != _rows(data["x"]):
            messages.append(f"{where}.path: {spec['path']!r}: y has {_rows(data['y'])} rows, x {_rows(data['x'])}")
        if ("x_test" in data) != ("y_test" in data):
            messages.append(f"{where}.path: {spec['path']!r}: x_test and y_test go together")
    logits = shapes.get("teacher.logits")
    if logits is not None:
        wanted = ["logits"] + (["logits_test"] if data is not None and "x_test" in data else [])
        for key in wanted:
            if key not in logits:
                messages.append(f"{where}.teacher.logits: {spec['teacher']['logits']!r} needs an array {key!r}"
                                f" (found {', '.join(sorted(logits)) or 'none'})")
        if data is not None and "logits" in logits and "x" in data and _rows(logits["logits"]) != _rows(data["x"]):
            messages.append(f"{where}.teacher.logits: `logits` has {_rows(logits['logits'])} rows, the data "
                            f"{_rows(data['x'])}: one row per example, in the data's order")
    return messages


def image_folder_errors(i: int, spec: dict, base: Path) -> list[str]:
    """An image dataset's folder and the files it must hold (their contents are checked when
    the prepare stage reads them, naming the file)."""
    where, root = f"prepare.datasets[{i}].path", base / spec["path"]
    if not root.is_dir():
        return [f"{where}: {spec['path']!r} is not a folder (relative to {base})"]
    if spec["kind"] == "imagefolder":
        return [] if (root / "train").is_dir() else [
            f"{where}: {spec['path']!r} has no train/ folder (train/<class>/*.png|jpg, optionally test/<class>/...)"]
    missing = [f for f in image_dataset_files(spec) if not (base / f).is_file()]
    return [f"{where}: {spec['path']!r} is not a complete {spec['kind']} folder (torchvision's python-pickle "
            f"layout): missing {', '.join(Path(f).name for f in missing)}"] if missing else []


def known_shape(spec: dict, base: Path) -> tuple:
    """One example's shape, or () where the dataset's file cannot tell (its own entry says why)."""
    try:
        return dataset_input_shape(spec, base)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ()
