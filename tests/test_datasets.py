"""Datasets are deterministic, split as promised, and bad CSVs fail clearly."""

import json

import numpy as np
import pytest
from distillstudy import artifacts
from distillstudy.engine import datasets
from distillstudy.engine.datasets import DataError


def prepare(tmp_path, name, kind, **options):
    options = {"seed": 3, "val_fraction": 0.2, "test_fraction": 0.25, **options}
    out_data, out_meta = tmp_path / f"{name}.npz", tmp_path / f"{name}.json"
    meta = datasets.prepare(name, kind, out_data, out_meta, **options)
    return meta, out_data, out_meta


@pytest.mark.parametrize("kind", ["sine", "digits"])
def test_prepare_is_byte_identical_across_runs(tmp_path, kind):
    options = {"n_train": 200, "n_test": 1000} if kind == "sine" else {}
    meta1, data1, _ = prepare(tmp_path / "a", kind, kind, **options)
    meta2, data2, _ = prepare(tmp_path / "b", kind, kind, **options)
    assert data1.read_bytes() == data2.read_bytes()
    assert meta1["sha256"] == meta2["sha256"]
    assert meta1["sha256"] == datasets.content_hash(artifacts.load_npz(data1))


def test_different_seed_gives_different_split(tmp_path):
    a, _, _ = prepare(tmp_path / "a", "digits", "digits", seed=1)
    b, _, _ = prepare(tmp_path / "b", "digits", "digits", seed=2)
    assert a["sha256"] != b["sha256"]


def test_mnist1d_keeps_published_test_split(tmp_path):
    meta, data, _ = prepare(tmp_path, "mnist1d", "mnist1d")
    arrays = artifacts.load_npz(data)
    assert (meta["n_train"] + meta["n_val"], meta["n_test"], meta["n_features"], meta["n_classes"]) == (4000, 1000, 40, 10)
    assert arrays["x_train"].dtype == np.float32 and arrays["y_test"].dtype == np.int64


def test_sine_follows_the_walkthrough_distribution(tmp_path):
    meta, data, _ = prepare(tmp_path, "sine", "sine", n_train=500, n_test=20000)
    arrays = artifacts.load_npz(data)
    x, y = arrays["x_test"][:, 0].astype(np.float64), arrays["y_test"]
    assert abs(x.std() - 10) < 0.3
    # P(y = 1 | x) = 0.4 sin x + 0.5: labels are 1 far more often where sin x > 0.5.
    assert y[np.sin(x) > 0.5].mean() > 0.8 and y[np.sin(x) < -0.5].mean() < 0.2
    assert meta["n_train"] + meta["n_val"] == 500


def test_csv_dataset_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,species"] + [f"{a:.3f},{b:.3f},{'ab'[int(a > 0)]}" for a, b in rng.normal(size=(60, 2))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    meta, _, out_meta = prepare(tmp_path, "t", "csv", path=str(tmp_path / "t.csv"), label="species")
    assert meta["feature_names"] == ["f1", "f2"] and meta["class_names"] == ["a", "b"]
    assert json.loads(out_meta.read_text())["n_classes"] == 2


BAD_CSV = [
    ("missing label", "a,b,label\n1,2,x\n3,4,\n5,6,y\n", "row 3: missing value in label column 'label'"),
    ("non-numeric feature", "a,b,label\n1,2,x\n3,oops,y\n", "row 3, column 'b': 'oops' is not a finite number"),
    ("NaN feature", "a,b,label\n1,nan,x\n3,4,y\n", "row 2, column 'b': 'nan' is not a finite number"),
    ("inf feature", "a,b,label\n1,2,x\ninf,4,y\n", "row 3, column 'a': 'inf' is not a finite number"),
    ("single class", "a,b,label\n1,2,x\n3,4,x\n", "has a single class ('x')"),
    ("empty file", "", "file is empty"),
    ("no label column", "a,b\n1,2\n", "label column 'label' not found"),
    ("not a CSV", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01", "label column 'label' not found"),
    ("ragged rows", "a,b,label\n1,2,x\n1,2,3,4,5\n", "not a readable CSV file"),
]


@pytest.mark.parametrize("what, text, message", BAD_CSV, ids=[b[0] for b in BAD_CSV])
def test_bad_csv_names_file_row_or_column(tmp_path, what, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(DataError) as info:
        prepare(tmp_path, "bad", "csv", path=str(path), label="label")
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert not (tmp_path / "bad.npz").exists(), "nothing downstream may be written"


def test_atomic_write_removes_a_killed_writers_temp_file(tmp_path):
    from distillstudy.artifacts import write_text

    stale = tmp_path / ".out.txt.abc123.tmp"
    stale.write_text("half")
    write_text(tmp_path / "out.txt", "whole")
    assert (tmp_path / "out.txt").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
