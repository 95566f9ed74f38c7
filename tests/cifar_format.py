"""Tiny image datasets in the on-disk formats of `prepare` (engine/images.py), for tests.

- `write_cifar`: a CIFAR-10 or CIFAR-100 python-pickle folder exactly as torchvision writes
  it (`cifar-10-batches-py/` data_batch_1..5 + test_batch + batches.meta, or
  `cifar-100-python/` train + test + meta: dicts with bytes keys, b"data" (n, 3072) uint8).
- `write_imagefolder`: train/<class>/*.png (and test/<class>/... when asked).

The images are learnable: each class has its own colour and stripe pattern, plus noise, so a
small model beats chance within an epoch or two.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_images(labels: np.ndarray, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 3, size, size): class k's colour (a fixed RGB per class) lit by stripes whose
    direction and frequency depend on k, plus Gaussian noise (sd 20 of 255)."""
    palette = np.random.default_rng(12345).integers(40, 216, size=(n_classes, 3))
    row, col = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.empty((len(labels), 3, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        freq = 1 + k % 4
        coord = row if k % 2 == 0 else col
        stripes = 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * freq * coord / size + k))
        pixels = palette[k][:, None, None] * stripes + rng.normal(0, 20, size=(3, size, size))
        images[i] = np.clip(np.rint(pixels), 0, 255)
    return images


def _labels(n: int, n_used: int, rng: np.random.Generator) -> np.ndarray:
    """n labels over the first n_used classes, as even as can be, shuffled."""
    return rng.permutation(np.arange(n) % n_used)


def write_cifar(folder: Path, kind: str = "cifar100", n_train: int = 200, n_test: int = 100, seed: int = 0,
                size: int = 32) -> Path:
    """A CIFAR folder under `folder`; returns its path (`cifar-100-python` or `cifar-10-batches-py`).

    The meta file names all 10 or 100 classes, but the images use only the first
    min(classes, max(2, n_train // 20)) of them (about 20 training images per class), so that a
    tiny set still splits stratified by class; the prepared dataset keeps 10 or 100 outputs.
    `size` other than 32 writes rows CIFAR's format does not allow (tests of that refusal).
    Pickled at protocol 2 with bytes keys, like the published files.
    """
    cifar10 = kind == "cifar10"
    n_classes = 10 if cifar10 else 100
    names = CIFAR10_CLASSES if cifar10 else [f"class{k:02d}" for k in range(n_classes)]
    n_used = min(n_classes, max(2, n_train // 20))
    rng = np.random.default_rng(seed)
    root = Path(folder) / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    root.mkdir(parents=True, exist_ok=True)
    label_key = b"labels" if cifar10 else b"fine_labels"

    def batch(n: int, title: str, offset: int) -> dict:
        labels = _labels(n, n_used, rng)
        data = class_images(labels, n_classes, size, rng).reshape(n, -1)
        out = {b"batch_label": title.encode(), label_key: [int(v) for v in labels], b"data": data,
               b"filenames": [f"img_{offset + i:05d}.png".encode() for i in range(n)]}
        if not cifar10:
            out[b"coarse_labels"] = [int(v) // 5 for v in labels]
        return out

    def dump(name: str, obj) -> None:
        with open(root / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)

    if cifar10:
        dump("batches.meta", {b"num_cases_per_batch": -(-n_train // 5), b"label_names": [n.encode() for n in names],
                              b"num_vis": 3 * size * size})
        for i, rows in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            dump(f"data_batch_{i}", batch(len(rows), f"training batch {i} of 5", int(rows[0]) if len(rows) else 0))
        dump("test_batch", batch(n_test, "testing batch 1 of 1", n_train))
    else:
        dump("meta", {b"fine_label_names": [n.encode() for n in names],
                      b"coarse_label_names": [f"super{k:02d}".encode() for k in range(20)]})
        dump("train", batch(n_train, "training batch 1 of 1", 0))
        dump("test", batch(n_test, "testing batch 1 of 1", n_train))
    return root


def write_imagefolder(folder: Path, n_classes: int = 3, per_class: int = 20, size: int = 16, seed: int = 0,
                      test_per_class: int = 0) -> Path:
    """train/<class>/<i>.png (classes named c0, c1, ...) and, with test_per_class > 0,
    test/<class>/...; lossless PNG, so the prepared pixels equal these. Returns `folder`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for k in range(n_classes if n else 0):
            (Path(folder) / split / f"c{k}").mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(class_images(np.full(n, k), n_classes, size, rng)):
                Image.fromarray(image.transpose(1, 2, 0)).save(Path(folder) / split / f"c{k}" / f"{i:03d}.png")
    return Path(folder)
