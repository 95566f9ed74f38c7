"""Image datasets at real size (engine/images.py): CIFAR-10/100 python-pickle folders and
image folders read exactly, stored as uint8 (n, C, H, W) with per-channel statistics,
validation carved from train (stratified, seeded, recorded), every bad file refused naming
it with nothing written, and `distillstudy prepare` on a CIFAR-100 folder."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from cifar_format import write_cifar, write_imagefolder
from conftest import BIN, make_workspace, run, tiny_params
from distillstudy.engine import datasets, images
from distillstudy.errors import DataError, ParamsError
from distillstudy.params import check_params
from distillstudy.userfiles import dataset_input_shape, image_dataset_files

SPLIT = dict(seed=3, val_fraction=0.2, test_fraction=0.25)


def unpickle(path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def prepare(folder, kind, path, **options):
    options = {**SPLIT, **options}
    meta = datasets.prepare("d", kind, folder / "d.npz", folder / "d.json", path=str(path), **options)
    return meta, dict(np.load(folder / "d.npz"))


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_folders_are_read_as_torchvision_lays_them_out(kind, tmp_path):
    root = write_cifar(tmp_path, kind, n_train=120, n_test=40)
    meta_file, train_files, test_file, label_key, names_key = (
        ("batches.meta", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", b"label_names")
        if kind == "cifar10" else ("meta", ["train"], "test", b"fine_labels", b"fine_label_names"))
    batches = [unpickle(root / f) for f in train_files]
    data = images.read_images(kind, root)
    rows = np.concatenate([b[b"data"] for b in batches])
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (120, 3, 32, 32)
    # A row is the red, green, then blue 32 x 32 plane, each row-major.
    assert (data.x_train[:, 0].reshape(120, -1) == rows[:, :1024]).all()
    assert (data.x_train[:, 2, 5, 7] == rows[:, 2048 + 5 * 32 + 7]).all()
    assert data.y_train.tolist() == [v for b in batches for v in b[label_key]]
    test = unpickle(root / test_file)
    assert (data.x_test.reshape(40, -1) == test[b"data"]).all() and data.y_test.tolist() == test[label_key]
    assert data.class_names == [n.decode() for n in unpickle(root / meta_file)[names_key]]
    assert len(data.class_names) == (10 if kind == "cifar10" else 100)


def test_prepared_cifar100_keeps_pixels_uint8_with_per_channel_statistics(tmp_path):
    root = write_cifar(tmp_path, "cifar100", n_train=200, n_test=100)
    meta, arrays = prepare(tmp_path, "cifar100", root, val_fraction=0.25)
    assert list(arrays) == ["x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std", "input_shape"]
    for s, n in (("train", 150), ("val", 50), ("test", 100)):
        assert arrays[f"x_{s}"].dtype == np.uint8 and arrays[f"x_{s}"].shape == (n, 3, 32, 32)
        assert arrays[f"y_{s}"].dtype == np.int64 and arrays[f"y_{s}"].shape == (n,)
    assert arrays["input_shape"].dtype == np.int64 and arrays["input_shape"].tolist() == [3, 32, 32]
    pixels = arrays["x_train"].astype(np.float64) / 255
    assert arrays["mean"].dtype == np.float32 and arrays["mean"].shape == (3,)
    np.testing.assert_allclose(arrays["mean"], pixels.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(arrays["std"], pixels.std(axis=(0, 2, 3)), rtol=1e-6)
    assert len(set(np.round(arrays["mean"], 3))) == 3  # the channels' own statistics, not one for all
    # The official test batch stays the test split, in its order.
    test = unpickle(root / "test")
    assert (arrays["x_test"].reshape(100, -1) == test[b"data"]).all()
    # Train and validation together are the official training images, each once.
    train = unpickle(root / "train")[b"data"]
    carved = np.concatenate([arrays["x_train"], arrays["x_val"]]).reshape(200, -1)
    assert sorted(map(bytes, carved)) == sorted(map(bytes, train))
    # Stratified: each class gives validation its share (20 images per class, a quarter held out).
    assert np.bincount(arrays["y_val"], minlength=100)[:10].tolist() == [5] * 10
    assert (meta["n_classes"], meta["n_features"], meta["input_shape"]) == (100, 3072, [3, 32, 32])
    assert meta["carved"]["test"] == {"from": "test", "rows": 100}
    val = meta["carved"]["val"]
    assert (val["from"], val["rows"], val["seed"], val["fraction"], val["stratified"]) == ("train", 50, 3, 0.25, True)
    rows = datasets._split_rows(np.array(unpickle(root / "train")[b"fine_labels"]), 0.25, 0.25, 3, 100)["val"]
    assert val["rows_sha256"] == hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()
    assert meta["source"]["files_sha256"]["train"] == hashlib.sha256((root / "train").read_bytes()).hexdigest()


def test_same_seed_gives_identical_bytes_and_another_seed_another_validation(tmp_path):
    root = write_cifar(tmp_path / "raw", "cifar10", n_train=100, n_test=30)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    _, a = prepare(tmp_path / "a", "cifar10", root)
    _, _ = prepare(tmp_path / "b", "cifar10", root)
    _, c = prepare(tmp_path / "c", "cifar10", root, seed=4)
    for f in ("d.npz", "d.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (a["x_test"] == c["x_test"]).all()
    assert not np.array_equal(a["x_val"], c["x_val"])


def test_the_synthetic_cifar_images_are_learnable(tmp_path):
    """The test folders must let a model learn: nearest class mean already beats chance far."""
    _, arrays = prepare(tmp_path, "cifar10", write_cifar(tmp_path, "cifar10", n_train=200, n_test=100))
    x = {s: arrays[f"x_{s}"].reshape(len(arrays[f"x_{s}"]), -1).astype(np.float64) for s in ("train", "test")}
    centres = np.stack([x["train"][arrays["y_train"] == k].mean(0) for k in range(10)])
    guess = ((x["test"][:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert (guess == arrays["y_test"]).mean() > 0.9


def test_other_pickle_protocols_and_str_keys_read_the_same(tmp_path):
    root = write_cifar(tmp_path, "cifar100", n_train=60, n_test=20)
    before = images.read_images("cifar100", root)
    for name in ("train", "test", "meta"):
        batch = unpickle(root / name)
        with open(root / name, "wb") as fh:
            pickle.dump({k.decode(): v for k, v in batch.items()}, fh, protocol=5)
    after = images.read_images("cifar100", root)
    assert (before.x_train == after.x_train).all() and (before.y_test == after.y_test).all()
    assert before.class_names == after.class_names


#: A Python 2 pickle, as the published CIFAR files are: {"data": a (2, 3) uint8 array 0..5,
#: "labels": [1, 2]}, py2 str as BINSTRING ("U"), numpy named by its old module path.
PY2_BATCH = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03"
             b"K\x00\x85U\x01b\x87R(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x04U\x02u1K\x00K\x01\x87R(K\x03U\x01|NNN"
             b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tbU\x06labels]q\x05"
             b"(K\x01K\x02eu.")


def test_a_python2_pickle_loads_like_the_published_files(tmp_path):
    (tmp_path / "batch").write_bytes(PY2_BATCH)
    batch, digest = images.load_batch(tmp_path / "batch")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert batch[b"labels"] == [1, 2] and digest == hashlib.sha256(PY2_BATCH).hexdigest()


def test_an_image_folder_with_its_own_test_split(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", n_classes=3, per_class=12, size=10, test_per_class=4)
    meta, arrays = prepare(tmp_path, "imagefolder", root)
    assert meta["class_names"] == ["c0", "c1", "c2"] and meta["input_shape"] == [3, 10, 10]
    assert (meta["n_train"] + meta["n_val"], meta["n_test"]) == (36, 12)
    assert arrays["x_test"].dtype == np.uint8 and arrays["x_test"].shape == (12, 3, 10, 10)
    assert arrays["y_test"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted classes, sorted files
    png = np.asarray(Image.open(root / "test/c1/002.png").convert("RGB")).transpose(2, 0, 1)
    assert (arrays["x_test"][6] == png).all()
    assert meta["carved"]["test"]["from"] == "test" and meta["source"]["n_files"] == 48


def test_an_image_folder_without_test_carves_it_from_train(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", n_classes=3, per_class=20, size=8)
    meta, arrays = prepare(tmp_path, "imagefolder", root)
    assert (meta["n_train"], meta["n_val"], meta["n_test"]) == (36, 9, 15)
    assert np.bincount(arrays["y_test"]).tolist() == [5, 5, 5]  # stratified
    assert meta["carved"]["test"]["from"] == "train" and meta["carved"]["test"]["fraction"] == 0.25
    all_rows = np.concatenate([arrays[f"x_{s}"] for s in ("train", "val", "test")]).reshape(60, -1)
    assert len({bytes(r) for r in all_rows}) == 60  # every image once
    # Workflow inputs: every image, so editing one re-runs prepare.
    spec = {"kind": "imagefolder", "path": "imgs"}
    files = image_dataset_files(spec, base=tmp_path)
    assert len(files) == 60 and files[0] == os.path.join("imgs", "train", "c0", "000.png")
    assert dataset_input_shape(spec, base=tmp_path) == (3, 8, 8)
    assert dataset_input_shape({"kind": "cifar100", "path": "x"}) == (3, 32, 32)


def _damage(case: str, tmp_path):
    """(kind, folder, the file the error must name) for one bad-file case."""
    if case.startswith("folder"):
        root = write_imagefolder(tmp_path / "imgs", n_classes=3, per_class=6, size=8, test_per_class=3)
        named = {
            "folder: unreadable image": root / "train/c1/002.png",
            "folder: truncated image": root / "train/c2/004.png",
            "folder: empty class": root / "train/c3",
            "folder: another size": root / "train/c2/001.png",
            "folder: unknown test class": root / "test/zebra",
        }[case]
        if case.endswith("unreadable image"):
            named.write_bytes(b"this is not a png")
        if case.endswith("truncated image"):
            named.write_bytes(named.read_bytes()[:60])
        if case.endswith("empty class"):
            named.mkdir()
            (named / "notes.txt").write_text("no images here")
        if case.endswith("another size"):
            Image.new("RGB", (9, 8)).save(named)
        if case.endswith("unknown test class"):
            named.mkdir()
            Image.new("RGB", (8, 8)).save(named / "0.png")
        return "imagefolder", root, named
    kind = case.split(":")[0]
    root = write_cifar(tmp_path, kind, n_train=60, n_test=20, size=16 if "size" in case else 32)
    named = root / {"cifar10": "data_batch_1" if "size" in case else "data_batch_2", "cifar100": "train"}[kind]
    batch = unpickle(named)
    labels = b"labels" if kind == "cifar10" else b"fine_labels"
    if case.endswith("truncated pickle"):
        named.write_bytes(named.read_bytes()[: len(named.read_bytes()) // 2])
    if case.endswith("missing batch"):
        named = root / "data_batch_4"
        named.unlink()
    if case.endswith("not a dict"):
        named.write_bytes(pickle.dumps([batch[b"data"]], protocol=2))
    if case.endswith("label count"):
        batch[labels] = batch[labels][:-1]
        named.write_bytes(pickle.dumps(batch, protocol=2))
    if case.endswith("label range"):
        batch[labels][3] = 10 if kind == "cifar10" else 100
        named.write_bytes(pickle.dumps(batch, protocol=2))
    if case.endswith("runs code"):
        named.write_bytes(pickle.dumps(RunsCode(tmp_path / "ran"), protocol=2))
    return kind, root, named


class RunsCode:
    """A pickle that would create a folder while being loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


BAD = [
    ("cifar100: truncated pickle", "not a readable CIFAR pickle"),
    ("cifar10: missing batch", "file does not exist"),
    ("cifar10: not a dict", "expected a dict with bytes keys, got list"),
    ("cifar100: label count", "59 labels (b'fine_labels') for 60 rows"),
    ("cifar10: label range", "label 10 at row 3 is outside 0..9"),
    ("cifar100: label range", "label 100 at row 3 is outside 0..99"),
    ("cifar100: runs code", "names posix.mkdir"),
    ("cifar10: size", "uint8 rows of 3072 pixels"),
    ("folder: unreadable image", "not a readable image"),
    ("folder: truncated image", "not a readable image"),
    ("folder: empty class", "class folder holds no PNG or JPEG image"),
    ("folder: another size", "image is 9 x 8 (W x H), the dataset's 8 x 8"),
    ("folder: unknown test class", "class 'zebra' has no folder under train/"),
]


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_bad_files_stop_prepare_naming_the_file_with_nothing_written(case, message, tmp_path):
    kind, root, named = _damage(case, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as error:
        prepare(out, kind, root)
    assert str(named) in str(error.value) and message in str(error.value)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "ran").exists()


def image_params(spec: dict) -> dict:
    """The tiny study on one image dataset (name c100) with a zoo teacher and the standard
    engine's recipe, trained for one epoch."""
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "c100", "teacher": {"family": "cifar", "size": "resnet8"}, **spec}]
    params["designs"]["datasets"] = []
    params["distill"]["students"] = [{"family": "mlp", "sizes": [8]}]
    params["distill"].pop("tune", None)
    params["designs"]["sizes"] = [8]
    params["walkthrough"]["enabled"] = False
    recipe = {"optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"}, "epochs": 1,
              "batch_size": 16}
    params["distill"]["recipe"] = params["teacher"]["recipe"] = recipe
    return params


def path_errors(spec: dict, base) -> list[str]:
    """check_params's messages about the dataset's path (none when the folder is usable)."""
    try:
        check_params(image_params(spec), base=base)
    except ParamsError as exc:
        return [line.strip() for line in str(exc).splitlines() if "prepare.datasets[0]" in line and "path" in line]
    return []


def test_params_name_a_missing_folder_or_cifar_file_before_any_job(tmp_path):
    root = write_cifar(tmp_path / "data/raw", "cifar100", n_train=60, n_test=20)
    spec = {"kind": "cifar100", "path": "data/raw/cifar-100-python"}
    assert path_errors(spec, tmp_path) == []
    assert path_errors({**spec, "path": "data/raw/nowhere"}, tmp_path) == [
        "prepare.datasets[0].path: 'data/raw/nowhere' is not a folder (relative to " + str(tmp_path) + ")"]
    assert path_errors({"kind": "imagefolder", "path": "data/raw"}, tmp_path) == [
        "prepare.datasets[0].path: 'data/raw' has no train/ folder (train/<class>/*.png|jpg, optionally test/<class>/...)"]
    (root / "test").unlink()
    (root / "meta").unlink()
    assert path_errors(spec, tmp_path) == [
        "prepare.datasets[0].path: 'data/raw/cifar-100-python' is not a complete cifar100 folder (torchvision's "
        "python-pickle layout): missing meta, test"]
    with pytest.raises(ParamsError, match=r"prepare.datasets\[0\].*'path' is a required property"):
        check_params(image_params({"kind": "cifar10"}), base=tmp_path)


@pytest.mark.slow
def test_every_image_is_a_workflow_input_so_editing_one_reruns_prepare(tmp_path):
    ws = make_workspace(tmp_path / "study", image_params({"kind": "imagefolder", "path": "data/raw/imgs"}))
    write_imagefolder(ws / "data/raw/imgs", per_class=10, size=8)
    run(["snakemake", "-c1", "data/prepared/c100.npz"], ws)
    assert np.load(ws / "data/prepared/c100.npz")["x_train"].shape[1:] == (3, 8, 8)
    assert "Nothing to be done" in run(["snakemake", "-n", "data/prepared/c100.npz"], ws).stdout
    edited = ws / "data/raw/imgs/train/c1/003.png"
    Image.new("RGB", (8, 8)).save(edited)
    os.utime(edited, (edited.stat().st_atime, edited.stat().st_mtime + 5))
    out = run(["snakemake", "-n", "data/prepared/c100.npz"], ws).stdout
    assert "Updated input files: data/raw/imgs/train/c1/003.png" in out


def test_distillstudy_prepare_reads_a_cifar100_folder(tmp_path):
    root = write_cifar(tmp_path, "cifar100", n_train=200, n_test=100)
    out = run([str(BIN / "distillstudy"), "prepare", "--name", "c100", "--kind", "cifar100", "--seed", "0",
               "--val-fraction", "0.1", "--test-fraction", "0.2", "--path", str(root),
               "--out-data", "c100.npz", "--out-meta", "c100.json"], tmp_path)
    assert "180/20/100 train/val/test, 3072 features, 100 classes" in out.stdout
    arrays = np.load(tmp_path / "c100.npz")
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_val"].shape == (20, 3, 32, 32)
    assert json.loads((tmp_path / "c100.json").read_text())["carved"]["val"]["fraction"] == 0.1
