"""Student families (params.yaml's distill.students): the built-in mlp of any depth and cnn,
and your own factory, trained with all seeds of a cell stacked; the mlp's results unchanged
by the shorthand distill.sizes; every bad family refused before any job, naming the family,
the dataset and what is wrong; and a study with three families through real Snakemake."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, make_workspace, run
from distillstudy import grid
from distillstudy import students
from distillstudy.artifacts import load_npz, read_record, save_npz
from distillstudy.engine import seeds
from distillstudy.engine.factories import check_students
from distillstudy.errors import ParamsError
from distillstudy.params import check_params
from distillstudy.stages import distill
from test_user_data import images, images_workspace, npz_params, prepare_images

ZOO = textwrap.dedent('''
    import math
    from torch import nn


    def tiny(input_shape, n_classes, size):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), size), nn.Tanh(),
                             nn.Linear(size, n_classes))


    def ignores_classes(input_shape, n_classes, size):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))


    def two_arguments(input_shape, n_classes):
        return nn.Identity()


    def raises(input_shape, n_classes, size):
        raise ValueError("no such size")


    def not_a_module(input_shape, n_classes, size):
        return "a string"
''')

CELL = dict(n_seeds=3, global_seed=11, epochs=3, batch_size=16, lr=0.01, weight_decay=0.0)


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """npz 4x4 images prepared in tmp_path with random teacher logits; zoo/models.py beside them."""
    monkeypatch.chdir(tmp_path)
    prepare_images(tmp_path, ZOO)
    arrays = load_npz("p.npz")
    rng = np.random.default_rng(0)
    save_npz("t.npz", {f"logits_{s}": rng.normal(size=(len(arrays[f"y_{s}"]), 3)).astype(np.float32)
                       for s in grid.SPLITS})
    return tmp_path


def train(family, size, out, depth=None, cell="kd_T2_mix0.9"):
    return distill.run(data="p.npz", teacher_logits="t.npz", dataset="imgs", size=size, cell=cell, family=family,
                       depth=depth, out_model=f"{out}.pt", out_logits=f"{out}.logits.npz", **CELL)


def test_a_cnn_family_trains_stacked_and_reruns_bit_identically(prepared):
    first = train("cnn", 4, "a")
    again = train("cnn", 4, "b")
    assert Path("a.logits.npz").read_bytes() == Path("b.logits.npz").read_bytes()
    assert Path("a.pt").read_bytes() == Path("b.pt").read_bytes()
    assert first == again
    assert first["family"] == "cnn" and first["student_size"] == 4 and first["input_shape"] == [4, 4]
    # conv(1->4, 3x3) + conv(4->8, 3x3) + linear(8->3), with biases
    assert first["n_params"] == (1 * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 3 + 3)
    logits = load_npz("a.logits.npz")["logits_test"]
    assert logits.shape[0] == 3 and np.isfinite(logits).all()
    assert not np.array_equal(logits[0], logits[1]), "the seeds must start from different weights"
    assert "vmap" in first["runtime"]["engine"]


def test_your_factory_is_a_family_with_its_file_s_hash_recorded(prepared):
    record = train("zoo/models.py:tiny", 5, "f")
    assert record["family"] == "tiny" and record["family_spec"] == "zoo/models.py:tiny"
    assert record["factory_sha256"] == __import__("hashlib").sha256(Path("zoo/models.py").read_bytes()).hexdigest()
    assert record["n_params"] == 16 * 5 + 5 + 5 * 3 + 3
    assert record["seeds"] == seeds.student_seeds(11, "imgs", 5, 3, family="tiny")


def test_a_deeper_mlp_keeps_the_closed_form_path_and_its_own_seeds(prepared):
    deep = train("mlp", 6, "d", depth=3)
    plain = train("mlp", 6, "p")
    assert deep["family"] == "mlp3" and deep["layer_sizes"] == [16, 6, 6, 6, 3]
    assert plain["family"] == "mlp" and plain["layer_sizes"] == [16, 6, 6, 3]
    assert "closed-form" in deep["runtime"]["engine"]
    # Today's mlp keeps the seeds it had before families existed (its results are unchanged);
    # another family of the same size draws its own.
    assert plain["seeds"] == [seeds.derive_seed(11, "student", "imgs", 6, r) for r in range(3)]
    assert not set(deep["seeds"]) & set(plain["seeds"])


def test_the_shorthand_sizes_is_the_mlp_family():
    short = {"sizes": [16, 64], "alpha": 0.9}
    long = {"students": [{"family": "mlp", "depth": 2, "sizes": [16, 64]}], "alpha": 0.9}
    assert students.distill_students(short) == students.distill_students(long)
    assert [students.student_name("mlp", s) for s in (16, 64)] == ["h16", "h64"]
    assert students.parse_student("cnn-8") == ("cnn", 8) and students.parse_student("h16") == ("mlp", 16)


def families_params(*families) -> dict:
    params = npz_params(teacher={"logits": "data/raw/t.npz"})
    params["distill"]["students"] = [{"family": "mlp", "sizes": [8]}, *families]
    return params


def workspace_files(base: Path, x_shape=(60, 4, 4)):
    x, y, logits = images()
    (base / "data/raw").mkdir(parents=True, exist_ok=True)
    np.savez(base / "data/raw/imgs.npz", x=np.zeros(x_shape, np.float32) + x.reshape(60, -1)[:, :1].reshape(
        (60,) + (1,) * (len(x_shape) - 1)), y=y)
    np.savez(base / "data/raw/t.npz", logits=logits)
    (base / "zoo").mkdir(exist_ok=True)
    (base / "zoo/models.py").write_text(ZOO)


BAD = [
    ({"family": "zoo/missing.py:tiny", "sizes": [2]}, "distill.students[1].family: factory file 'zoo/missing.py'"),
    ({"family": "zoo/models.py:nothing", "sizes": [2]}, "student family 'nothing': zoo/models.py has no function"),
    ({"family": "zoo/models.py:two_arguments", "sizes": [2]},
     "zoo/models.py:two_arguments(input_shape, n_classes) must take (input_shape, n_classes, size)"),
    ({"family": "zoo/models.py:ignores_classes", "sizes": [2]},
     "student family 'ignores_classes' (zoo/models.py:ignores_classes), size 2, dataset 'imgs': the module maps "
     "a batch shaped (2, 4, 4) to (2, 3); it must give logits shaped (batch, n_classes) = (2, 7)"),
    ({"family": "zoo/models.py:raises", "sizes": [2]}, "dataset 'imgs': the factory raised ValueError: no such size"),
    ({"family": "zoo/models.py:not_a_module", "sizes": [2]}, "the factory returned str, not a torch.nn.Module"),
    ({"family": "cnn", "sizes": [2], "depth": 2}, "distill.students[1].depth: only the mlp family has a depth"),
    ({"family": "cnn", "sizes": [2, 2]}, "distill.students[1].sizes[1]: 2 duplicates 2"),
    ({"family": "mlp", "sizes": [4]}, "distill.students[1].family: 'mlp' is named 'mlp' in paths and tables"),
    ({"family": "cnn", "sizes": [2], "datasets": ["pics"]}, "distill.students[1].datasets[0]: 'pics' is not a dataset"),
    ({"family": "zoo/models.py", "sizes": [2]}, "distill.students[1].family"),
]


@pytest.mark.parametrize("family,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_families_are_refused_before_any_job_naming_family_dataset_and_problem(family, message, tmp_path):
    workspace_files(tmp_path)
    params = families_params(family)
    with pytest.raises(ParamsError) as error:
        check_params(params, base=tmp_path)
        check_students(params, base=tmp_path)
    assert message in str(error.value)


def test_a_cnn_refuses_inputs_it_cannot_convolve_and_every_dataset_needs_a_student(tmp_path):
    workspace_files(tmp_path, x_shape=(60, 2, 2, 2, 2))
    with pytest.raises(ParamsError, match=r"the cnn family takes inputs shaped .*dataset 'imgs' has \(2, 2, 2, 2\)"):
        check_params(families_params({"family": "cnn", "sizes": [2]}), base=tmp_path)
    params = families_params()
    params["distill"]["students"][0]["datasets"] = ["imgs"]
    params["prepare"]["datasets"].append({"name": "sine", "kind": "sine", "n_train": 50, "n_test": 50})
    with pytest.raises(ParamsError, match="no family is trained on dataset 'sine'"):
        check_params(params, base=tmp_path)
    both = copy.deepcopy(params)
    both["distill"]["sizes"] = [8]
    with pytest.raises(ParamsError, match="give distill.students .* not both"):
        check_params(both, base=tmp_path)


@pytest.mark.slow
def test_three_families_on_npz_images_run_through_snakemake(tmp_path):
    """An offline teacher on 4x4 images taught to the mlp, the cnn and your factory; editing
    your factory's file re-runs its cells only."""
    params = families_params({"family": "cnn", "sizes": [2]}, {"family": "zoo/models.py:tiny", "sizes": [3]})
    ws = images_workspace(tmp_path / "study", params, ZOO)
    np.savez(ws / "data/raw/t.npz", logits=images(n=90)[2])
    run(["snakemake", "-c2"], ws)
    for student in ("h8", "cnn-2", "tiny-3"):
        record = read_record(load_npz(ws / f"models/students/imgs/{student}/baseline.logits.npz"))
        assert students.student_name(record["family"], record["student_size"]) == student
    results = pd.read_csv(ws / "reports/results.csv", keep_default_na=False)
    trained = results[results.model != "teacher"]
    assert set(zip(trained.family, trained.student_size.astype(int))) == {("mlp", 8), ("cnn", 2), ("tiny", 3)}
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    assert {"h8", "cnn-2", "tiny-3"} <= set(metrics["imgs"])
    html = (ws / "reports/index.html").read_text()
    assert "imgs · cnn students" in html and "imgs · tiny students" in html
    cells = {p: p.stat().st_mtime_ns for p in (ws / "models/students/imgs").glob("*/*.logits.npz")}
    (ws / "zoo/models.py").write_text(ZOO.replace("nn.Tanh()", "nn.ReLU()"))
    out = run(["snakemake", "-c2"], ws)
    text = out.stdout + out.stderr
    assert text.count("(Rule: distill)") == len(grid.study_cells(params)), text[-3000:]
    rerun = {p.parent.name for p, mtime in cells.items() if p.stat().st_mtime_ns != mtime}
    assert rerun == {"tiny-3"}


@pytest.mark.slow
def test_the_readme_s_worked_example_runs_as_written(tmp_path):
    """README, Bring your own study: examples/images_npz.py, then snakemake with
    examples/byo.yaml, on the repository's params.yaml: an offline scikit-learn teacher on
    8x8 images taught to the mlp, the cnn and examples/zoo.py:tiny_cnn."""
    ws = make_workspace(tmp_path / "study", ROOT / "params.yaml")
    shutil.copytree(ROOT / "examples", ws / "examples")
    run([sys.executable, "examples/images_npz.py"], ws)
    run(["snakemake", "-c2", "--configfile", "examples/byo.yaml"], ws, timeout=900)
    results = pd.read_csv(ws / "reports/results.csv", keep_default_na=False)
    trained = results[results.model != "teacher"]
    assert set(trained.family) == {"mlp", "cnn", "tiny_cnn"} and set(trained.dataset) == {"imgs"}
    prepared = np.load(ws / "data/prepared/imgs.npz")
    teacher = results[(results.model == "teacher") & (results.split == "test") & (results.metric == "accuracy")]
    expected = float((prepared["teacher_logits_test"].argmax(1) == prepared["y_test"]).mean())
    assert teacher.value.astype(float).tolist() == [pytest.approx(expected)] and expected > 0.9
    html = (ws / "reports/index.html").read_text()
    for family in ("mlp", "cnn", "tiny_cnn"):
        assert f"imgs · {family} students" in html
    assert "offline logits from data/raw/imgs_teacher.npz" in html
    assert "The study designs (transfer protocols, teacher width, ensembles, label fractions, epochs) do not apply" in html
