"""Bring your own data and teacher: npz datasets of any example shape and offline
teacher logits (csv and npz), their rows followed through the split, every bad input
refused naming the file and what is wrong, and a study on them through real Snakemake."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_workspace, run, tiny_params
from distillstudy.engine import datasets
from distillstudy.errors import DataError, ParamsError
from distillstudy.params import check_params

SPLIT = dict(seed=3, val_fraction=0.2, test_fraction=0.25)


def images(n=60, classes=("cat", "dog", "emu"), seed=0):
    """n 4x4 'images' whose pixel (0, 0) is the row number, string labels, and teacher
    logits whose first column is the row number too: alignment is visible after a split."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 4)).astype(np.float32)
    x[:, 0, 0] = np.arange(n)
    y = np.array(classes)[np.arange(n) % len(classes)]
    logits = rng.normal(size=(n, len(classes))).astype(np.float32)
    logits[:, 0] = np.arange(n)
    return x, y, logits


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_images_and_offline_logits_follow_their_rows(tmp_path):
    x, y, logits = images()
    data = write_npz(tmp_path / "imgs.npz", x=x, y=y)
    teacher = write_npz(tmp_path / "t.npz", logits=logits)
    meta = datasets.prepare("imgs", "npz", tmp_path / "p.npz", tmp_path / "p.json", path=data,
                            teacher_logits=teacher, **SPLIT)
    arrays = np.load(tmp_path / "p.npz")
    assert meta["input_shape"] == [4, 4] and meta["n_features"] == 16
    assert meta["class_names"] == ["cat", "dog", "emu"]
    assert meta["teacher"]["kind"] == "offline logits" and len(meta["teacher"]["sha256"]) == 64
    for s in ("train", "val", "test"):
        rows = arrays[f"x_{s}"][:, 0].astype(int)  # the row numbers, in this split's order
        assert np.array_equal(arrays[f"teacher_logits_{s}"][:, 0].astype(int), rows)
        assert np.array_equal(arrays[f"y_{s}"], rows % 3)
    assert sum(len(arrays[f"y_{s}"]) for s in ("train", "val", "test")) == 60


def test_a_fixed_test_split_keeps_its_rows_and_logits_test(tmp_path):
    x, y, logits = images()
    x_test, y_test, logits_test = images(n=12, seed=1)
    data = write_npz(tmp_path / "imgs.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    teacher = write_npz(tmp_path / "t.npz", logits=logits, logits_test=logits_test)
    datasets.prepare("imgs", "npz", tmp_path / "p.npz", tmp_path / "p.json", path=data, teacher_logits=teacher,
                     **SPLIT)
    arrays = np.load(tmp_path / "p.npz")
    assert np.array_equal(arrays["x_test"], x_test.reshape(12, 16))
    assert np.array_equal(arrays["teacher_logits_test"], logits_test)
    assert len(arrays["y_train"]) + len(arrays["y_val"]) == 60


def test_csv_rows_carry_their_offline_logits(tmp_path):
    n = 30
    frame = pd.DataFrame({"row": np.arange(n), "f": np.linspace(0, 1, n), "label": np.arange(n) % 2})
    frame.to_csv(tmp_path / "t.csv", index=False)
    logits = np.zeros((n, 2), np.float32)
    logits[:, 0] = np.arange(n)
    teacher = write_npz(tmp_path / "l.npz", logits=logits)
    datasets.prepare("t", "csv", tmp_path / "p.npz", tmp_path / "p.json", path=str(tmp_path / "t.csv"),
                     label="label", teacher_logits=teacher, **SPLIT)
    arrays = np.load(tmp_path / "p.npz")
    for s in ("train", "val", "test"):
        assert np.array_equal(arrays[f"teacher_logits_{s}"][:, 0], arrays[f"x_{s}"][:, 0])


def _bad(case: str, tmp_path):
    x, y, logits = images()
    x_test, y_test, logits_test = images(n=12, seed=1)
    data, teacher = {"x": x, "y": y}, {"logits": logits}
    if case == "no y":
        del data["y"]
    elif case == "non-finite x":
        x[7, 1, 1] = np.nan
    elif case == "y length":
        data["y"] = y[:-1]
    elif case == "x_test alone":
        data["x_test"] = x_test
    elif case == "unknown test label":
        data.update(x_test=x_test, y_test=np.where(y_test == "cat", "cow", y_test))
    elif case == "objects":
        data["x"] = np.array([[1, "a"]] * 60, dtype=object)
    elif case == "logits rows":
        teacher["logits"] = logits[:-2]
    elif case == "logits classes":
        teacher["logits"] = logits[:, :2]
    elif case == "non-finite logits":
        logits[5, 2] = np.inf
    elif case == "logits past float32":  # finite in float64, inf once stored as float32
        teacher["logits"] = logits.astype(np.float64)
        teacher["logits"][5, 2] = 1e39
    elif case == "no logits_test":
        data.update(x_test=x_test, y_test=y_test)
    elif case == "single class":
        data["y"] = np.full(60, "cat")
    return write_npz(tmp_path / "d.npz", **data), write_npz(tmp_path / "t.npz", **teacher)


BAD = [
    ("no y", "needs arrays `x` and `y`; missing y"),
    ("non-finite x", "`x` row 7 holds a non-finite value"),
    ("y length", "`y` has 59 labels for 60 rows of `x`"),
    ("x_test alone", "`x_test` and `y_test` go together"),
    ("unknown test label", "`y_test` has labels that `y` never uses: cow"),
    ("objects", "not a readable npz file without pickled objects"),
    ("logits rows", "`logits` must be shaped (60, 3)"),
    ("logits classes", "`logits` must be shaped (60, 3)"),
    ("non-finite logits", "`logits` row 5 holds a non-finite value"),
    ("logits past float32", "`logits` row 5, column 2: 1e+39 overflows float32"),
    ("no logits_test", "needs `logits_test` (12 rows x 3 classes)"),
    ("single class", "a single class ('cat')"),
]


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_bad_user_files_are_refused_naming_file_and_problem(case, message, tmp_path):
    data, teacher = _bad(case, tmp_path)
    with pytest.raises(DataError) as error:
        datasets.prepare("d", "npz", tmp_path / "p.npz", tmp_path / "p.json", path=data, teacher_logits=teacher,
                         **SPLIT)
    assert message in str(error.value)
    assert str(tmp_path) in str(error.value)
    assert not (tmp_path / "p.npz").exists()


def images_workspace(dest, params: dict, zoo: str | None = None, n: int = 90):
    """A study workspace with `n` 4x4 images in data/raw/imgs.npz and, when given, `zoo`
    as zoo/models.py (your factories); returns it."""
    ws = make_workspace(dest, params)
    x, y, _ = images(n=n)
    np.savez(ws / "data/raw/imgs.npz", x=x, y=y)
    if zoo is not None:
        (ws / "zoo").mkdir()
        (ws / "zoo/models.py").write_text(zoo)
    return ws


def prepare_images(folder, zoo: str) -> None:
    """90 4x4 images prepared as p.npz / p.json in `folder` (the cwd), zoo/models.py beside them."""
    x, y, _ = images(n=90)
    np.savez("imgs.npz", x=x, y=y)
    (folder / "zoo").mkdir()
    (folder / "zoo/models.py").write_text(zoo)
    datasets.prepare("imgs", "npz", "p.npz", "p.json", path="imgs.npz", seed=1, val_fraction=0.2,
                     test_fraction=0.25)


def npz_params(**teacher) -> dict:
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "imgs", "kind": "npz", "path": "data/raw/imgs.npz", **teacher}]
    params["designs"]["datasets"] = []
    params["distill"]["students"] = [{"family": "mlp", "sizes": [8]}]
    params["distill"].pop("tune")  # the tiny study tunes its sine cells; there is no sine here
    params["designs"]["sizes"] = [8]
    params["distill"]["objectives"] = {"kd": {"temperature": [2]}, "dkd": {"alpha": [1], "beta": [2],
                                                                         "temperature": [2]}}
    params["distill"]["alpha"] = [0.9]
    params["designs"]["alpha"] = [0.9]
    params["walkthrough"]["enabled"] = False
    return params


PARAM_ERRORS = [
    ({}, "missing.npz", "prepare.datasets[0].path: 'data/raw/missing.npz' does not exist"),
    ({"teacher": {"logits": "data/raw/t.npz"}}, "rows", "`logits` has 58 rows, the data 60"),
    ({"teacher": {"logits": "data/raw/t.npz"}}, "designs",
     "designs.datasets[0]: 'imgs' has an offline teacher (prepare.datasets[0].teacher.logits)"),
    ({"teacher": {"logits": "data/raw/t.npz", "factory": "zoo.py:f"}}, "",
     "teacher: give either logits (an offline teacher) or factory"),
    ({"teacher": {"logits": "data/raw/t.npz", "cache": True}}, "", "teacher.cache: unknown key"),
    ({}, "no x", "needs arrays x and y; missing x"),
]


@pytest.mark.parametrize("teacher,change,message", PARAM_ERRORS)
def test_params_naming_bad_user_files_stop_before_any_job(teacher, change, message, tmp_path):
    x, y, logits = images()
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    np.savez(raw / "imgs.npz", **({"y": y} if change == "no x" else {"x": x, "y": y}))
    np.savez(raw / "t.npz", logits=logits[:-2] if change == "rows" else logits)
    params = npz_params(**teacher)
    if change == "missing.npz":
        params["prepare"]["datasets"][0]["path"] = "data/raw/missing.npz"
    if change == "designs":
        params["designs"]["datasets"] = ["imgs"]
    with pytest.raises(ParamsError) as error:
        check_params(params, base=tmp_path)
    assert message in str(error.value)


@pytest.mark.slow
def test_a_study_of_npz_images_with_an_offline_teacher_runs_through_snakemake(tmp_path):
    params = npz_params(teacher={"logits": "data/raw/imgs_teacher.npz"})
    ws = make_workspace(tmp_path / "study", params)
    x, y, logits = images(n=90)
    logits = np.eye(3, dtype=np.float32)[np.arange(90) % 3] * 4  # a confident, correct teacher
    logits[::9] = np.roll(logits[::9], 1, axis=1)  # ... wrong on every 9th row
    np.savez(ws / "data/raw/imgs.npz", x=x, y=y)
    np.savez(ws / "data/raw/imgs_teacher.npz", logits=logits)
    run(["snakemake", "-c2"], ws)
    meta = json.loads((ws / "models/teachers/imgs.json").read_text())
    assert meta["architecture"] == "offline logits" and meta["source"]["path"] == "data/raw/imgs_teacher.npz"
    prepared = np.load(ws / "data/prepared/imgs.npz")
    expected = float((prepared["teacher_logits_test"].argmax(1) == prepared["y_test"]).mean())
    results = pd.read_csv(ws / "reports/results.csv")
    teacher = results[(results.model == "teacher") & (results.split == "test") & (results.metric == "accuracy")]
    assert teacher.value.tolist() == [pytest.approx(expected)]
    models = set(results.model)
    assert {"baseline", "distilled", "dkd"} <= models
    assert (ws / "reports/index.html").is_file()
    assert "Teacher (offline logits from data/raw/imgs_teacher.npz, not trained here): test accuracy" in \
        (ws / "reports/index.html").read_text()
    # Another teacher file re-runs the study from the prepare stage.
    logits[1::9] = np.roll(logits[1::9], 1, axis=1)
    np.savez(ws / "data/raw/imgs_teacher.npz", logits=logits)
    out = run(["snakemake", "-c2"], ws)
    assert "(Rule: prepare)" in out.stdout + out.stderr


def test_offline_logits_need_rows_to_align_with():
    params = tiny_params()
    params["prepare"]["datasets"][0]["teacher"] = {"logits": "x.npz"}
    with pytest.raises(ParamsError, match=r"teacher.logits: .* only csv and npz datasets take them, not kind 'sine'"):
        check_params(params)


def test_an_npz_dataset_with_offline_logits_passes_the_params_checks(tmp_path):
    x, y, logits = images()
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    np.savez(raw / "imgs.npz", x=x, y=y)
    np.savez(raw / "t.npz", logits=logits)
    check_params(npz_params(teacher={"logits": "data/raw/t.npz"}), base=tmp_path)


def overflow_file(case: str, big: float, tmp_path) -> tuple[str, dict]:
    """A csv or npz dataset with one value `big` (finite in float64) among ordinary ones:
    a csv's row 9 (1-based, the header is row 1), column 'b'; an npz x's row 7, pixel (2, 3)."""
    if case == "csv":
        rows = [f"{i / 10},{i % 5},{'pqr'[i % 3]}" for i in range(30)]
        rows[7] = f"0.7,{big!r},{'pqr'[7 % 3]}"
        (tmp_path / "t.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
        return "csv", {"path": str(tmp_path / "t.csv"), "label": "label"}
    x, y, _ = images()
    x = x.astype(np.float64)
    x[7, 2, 3] = big
    if case == "npz x_test":  # the same rows as a fixed test split: its own array named
        return "npz", {"path": write_npz(tmp_path / "d.npz", x=images(seed=1)[0], y=y, x_test=x, y_test=y)}
    return "npz", {"path": write_npz(tmp_path / "d.npz", x=x, y=y)}


OVERFLOW = [
    ("csv", 1e39, "t.csv: row 9, column 'b': '1e+39' overflows float32"),
    ("csv", -3.5e38, "t.csv: row 9, column 'b': '-3.5e+38' overflows float32"),
    ("npz", 1e39, "d.npz: `x` row 7, index (2, 3): 1e+39 overflows float32"),
    ("npz x_test", -1e300, "d.npz: `x_test` row 7, index (2, 3): -1e+300 overflows float32"),
]


@pytest.mark.parametrize("case,big,message", OVERFLOW, ids=[f"{c} {b:g}" for c, b, _ in OVERFLOW])
def test_values_past_float32_are_refused_before_anything_is_written(case, big, message, tmp_path):
    """Features are stored as float32: a value finite in float64 but past float32's range
    (3.4e38) would be stored as inf, so it is refused naming file, row and column."""
    kind, options = overflow_file(case, big, tmp_path)
    with pytest.raises(DataError) as error:
        datasets.prepare("d", kind, tmp_path / "p.npz", tmp_path / "p.json", **options, **SPLIT)
    assert message in str(error.value)
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("case", ["csv", "npz"])
def test_values_inside_float32_are_stored_finite(case, tmp_path):
    """The largest float32 magnitudes pass, and every stored array (mean and std too) is finite."""
    kind, options = overflow_file(case, -3.0e38, tmp_path)
    datasets.prepare("d", kind, tmp_path / "p.npz", tmp_path / "p.json", **options, **SPLIT)
    with np.load(tmp_path / "p.npz") as stored:
        for key in stored.files:
            if stored[key].dtype.kind == "f":
                assert np.isfinite(stored[key]).all(), key
        assert min(stored[f"x_{s}"].min() for s in ("train", "val", "test")) == np.float32(-3.0e38)
