"""Your own teacher module: a factory "<file>.py:<function>" trained here, or its weights
trained elsewhere loaded and not retrained; every bad factory refused naming the factory,
its file and what is wrong; and a study with a factory teacher through real Snakemake."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run
from distillstudy.engine import factories
from distillstudy.errors import ParamsError
from distillstudy.stages import teacher as teacher_stage
from test_user_data import images, images_workspace, npz_params, prepare_images

ZOO = textwrap.dedent('''
    import math
    from torch import nn


    def mlp(input_shape, n_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(),
                             nn.Dropout(0.1), nn.Linear(16, n_classes))


    def conv(input_shape, n_classes):
        side = input_shape[-1]
        return nn.Sequential(nn.Unflatten(1, (1, input_shape[0])), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * side * side, n_classes))


    def wrong_shape(input_shape, n_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes + 1))


    def flat_only(input_shape, n_classes):
        return nn.Linear(math.prod(input_shape), n_classes)  # fails on (batch, 4, 4) inputs


    def one_argument(input_shape):
        return nn.Identity()


    def not_a_module(input_shape, n_classes):
        return 3


    def raises(input_shape, n_classes):
        raise RuntimeError("out of ideas")
''')

KNOBS = dict(max_epochs=3, patience=2, batch_size=16, lr=0.01, weight_decay=0.0, cnn_channels=4, mlp_width=8,
             dropout=0.0)


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """npz images (4x4, three classes) prepared in tmp_path, zoo/models.py beside them; cwd there."""
    monkeypatch.chdir(tmp_path)
    prepare_images(tmp_path, ZOO)
    return tmp_path


def train(factory, weights=None, out="t"):
    return teacher_stage.run(data="p.npz", meta="p.json", global_seed=5, factory=factory, weights=weights,
                             out_model=f"{out}.pt", out_logits=f"{out}.logits.npz", out_meta=f"{out}.json", **KNOBS)


def test_a_factory_teacher_trains_here_on_examples_of_the_data_s_shape(prepared):
    record = train("zoo/models.py:conv")
    assert record["architecture"] == "zoo/models.py:conv"
    assert record["fit"]["selection"] == "early stopping on validation NLL"
    assert record["source"]["factory_sha256"] == factories.file_sha256("zoo/models.py")
    assert record["n_params"] == 4 * 9 + 4 + 4 * 16 * 3 + 3
    again = train("zoo/models.py:conv", out="again")
    assert open("t.logits.npz", "rb").read() == open("again.logits.npz", "rb").read()  # seeded, reproducible


def test_weights_trained_elsewhere_are_loaded_not_retrained(prepared):
    torch.manual_seed(123)
    net = factories.load_factory("zoo/models.py:mlp", ".", "teacher", "test")((4, 4), 3)
    torch.save(net.state_dict(), "mlp.pt")
    record = train("zoo/models.py:mlp", weights="mlp.pt")
    assert "not retrained" in record["fit"]["selection"] and record["source"]["inputs"] == "raw"
    arrays = np.load("p.npz")
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(arrays["x_test"]).reshape(-1, 4, 4)).numpy()
    np.testing.assert_allclose(np.load("t.logits.npz")["logits_test"], expected, rtol=1e-6, atol=1e-6)


BAD = [
    ("zoo/missing.py:mlp", None, "factory file 'zoo/missing.py' does not exist"),
    ("zoo/models.py:nothing", None, "zoo/models.py has no function 'nothing'"),
    ("zoo/models.py", None, "is not a factory '<file>.py:<function>'"),
    ("zoo/models.py:one_argument", None, "must take (input_shape, n_classes), a teacher factory"),
    ("zoo/models.py:not_a_module", None, "the factory returned int, not a torch.nn.Module"),
    ("zoo/models.py:raises", None, "the factory raised RuntimeError: out of ideas"),
    ("zoo/models.py:wrong_shape", None, "to (2, 4); it must give logits shaped (batch, n_classes) = (2, 3)"),
    ("zoo/models.py:flat_only", None, "the module fails on a batch shaped (2, 4, 4)"),
    ("zoo/models.py:mlp", "missing.pt", "weights file 'missing.pt' does not exist"),
    ("zoo/models.py:mlp", "conv.pt", "conv.pt does not fit the factory's module"),
    ("zoo/models.py:mlp", "junk.pt", "junk.pt is not a state_dict torch.load(weights_only=True) can read"),
]


@pytest.mark.parametrize("factory,weights,message", BAD, ids=[f"{f}|{w}" for f, w, _ in BAD])
def test_bad_factories_are_refused_naming_factory_file_and_problem(prepared, factory, weights, message):
    torch.manual_seed(0)
    torch.save(factories.load_factory("zoo/models.py:conv", ".", "teacher", "t")((4, 4), 3).state_dict(), "conv.pt")
    (prepared / "junk.pt").write_text("not torch")
    with pytest.raises(ParamsError) as error:
        train(factory, weights)
    assert message in str(error.value)
    assert "teacher[imgs]" in str(error.value)
    assert not (prepared / "t.logits.npz").exists()


@pytest.mark.slow
def test_a_study_with_a_factory_teacher_runs_through_snakemake(tmp_path):
    params = npz_params(teacher={"factory": "zoo/models.py:conv"})
    ws = images_workspace(tmp_path / "study", params, ZOO)
    run(["snakemake", "-c2"], ws)
    meta = json.loads((ws / "models/teachers/imgs.json").read_text())
    assert meta["architecture"] == "zoo/models.py:conv"
    assert "Teacher (your module zoo/models.py:conv, trained here): test accuracy" in (ws / "reports/index.html").read_text()
    # Editing the factory's file re-runs the teacher and what follows it.
    (ws / "zoo/models.py").write_text(ZOO.replace("nn.Conv2d(1, 4, 3", "nn.Conv2d(1, 4, 3, bias=False"))
    out = run(["snakemake", "-c2"], ws)
    text = out.stdout + out.stderr
    assert "(Rule: teacher)" in text and "(Rule: prepare)" not in text


@pytest.mark.slow
def test_a_study_with_a_factory_teacher_s_weights_runs_through_snakemake(tmp_path):
    """Weights trained elsewhere: loaded, not retrained, the students learn from exactly that
    module's logits; new weights re-run the teacher."""
    params = npz_params(teacher={"factory": "zoo/models.py:mlp", "weights": "data/raw/mlp.pt"})
    ws = images_workspace(tmp_path / "study", params, ZOO)
    torch.manual_seed(7)
    net = factories.load_factory("zoo/models.py:mlp", ws, "teacher", "test")((4, 4), 3)
    torch.save(net.state_dict(), ws / "data/raw/mlp.pt")
    run(["snakemake", "-c2"], ws)
    meta = json.loads((ws / "models/teachers/imgs.json").read_text())
    assert "not retrained" in meta["fit"]["selection"] and meta["source"]["weights"] == "data/raw/mlp.pt"
    prepared = np.load(ws / "data/prepared/imgs.npz")
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(prepared["x_train"]).reshape(-1, 4, 4)).numpy()
    np.testing.assert_allclose(np.load(ws / "models/teachers/imgs.logits.npz")["logits_train"], expected,
                               rtol=1e-6, atol=1e-6)
    assert "with the weights data/raw/mlp.pt, not retrained" in (ws / "reports/index.html").read_text()
    torch.manual_seed(8)
    torch.save(factories.load_factory("zoo/models.py:mlp", ws, "teacher", "test")((4, 4), 3).state_dict(),
               ws / "data/raw/mlp.pt")
    out = run(["snakemake", "-c2"], ws)
    assert "(Rule: teacher)" in out.stdout + out.stderr


def test_params_refuse_a_missing_factory_file_and_designs_on_a_factory_teacher(tmp_path):
    from distillstudy.params import check_params

    x, y, _ = images()
    (tmp_path / "data/raw").mkdir(parents=True)
    np.savez(tmp_path / "data/raw/imgs.npz", x=x, y=y)
    params = npz_params(teacher={"factory": "zoo/models.py:conv"})
    with pytest.raises(ParamsError, match=r"prepare.datasets\[0\].teacher.factory: 'zoo/models.py' does not exist"):
        check_params(params, base=tmp_path)
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo/models.py").write_text(ZOO)
    check_params(params, base=tmp_path)
    params["designs"]["datasets"] = ["imgs"]
    check_params(params, base=tmp_path)  # trained here: the designs rebuild it from the factory
    params["prepare"]["datasets"][0]["teacher"] = {"weights": "zoo/w.pt", "factory": "zoo/models.py:conv"}
    (tmp_path / "zoo/w.pt").write_bytes(b"")
    with pytest.raises(ParamsError, match="has a factory teacher with weights trained elsewhere .* a second change"):
        check_params(params, base=tmp_path)


@pytest.mark.slow
def test_the_study_designs_rebuild_a_factory_teacher(tmp_path):
    """Cross-fitted fold teachers and ensemble members built by your factory (stacked), the
    width axis left out (a factory has no width knob), the reference teacher's seed and init."""
    params = npz_params(teacher={"factory": "zoo/models.py:mlp"})
    params["designs"].update({"datasets": ["imgs"], "transfer": ["cross_fitted", "augmented"], "epochs": [],
                              "teacher_width": [0.5], "ensemble": [2], "label_fraction": [],
                              "resample_datasets": ["imgs"]})
    params["transfer"]["folds"] = 3
    ws = images_workspace(tmp_path / "study", params, ZOO)
    run(["snakemake", "-c2"], ws)
    sets = sorted(p.name for p in (ws / "models/transfer/imgs").glob("*.json"))
    assert sets == ["ensemble-2.json", "resample-1.json", "resample-2.json", "transfer-augmented.json",
                    "transfer-cross_fitted.json"]  # the variance design refits your teacher too
    for name in ("ensemble-2", "transfer-cross_fitted", "resample-1"):
        meta = json.loads((ws / f"models/transfer/imgs/{name}.json").read_text())
        trained = [t for t in meta["teachers"] if t["trained_here"]]
        assert trained and all(t["architecture"] == "zoo/models.py:mlp" for t in trained), meta["teachers"]
    designs = pd.read_csv(ws / "reports/designs.csv")
    assert {"transfer", "ensemble"} <= set(designs.axis) and "teacher_width" not in set(designs.axis)


def test_the_report_says_where_a_dataset_s_teacher_came_from():
    from distillstudy.render.page import teacher_kind

    assert teacher_kind(None) == ""
    assert teacher_kind({"logits": "data/raw/t.npz"}) == "offline logits from data/raw/t.npz, not trained here"
    assert teacher_kind({"factory": "zoo/m.py:f"}) == "your module zoo/m.py:f, trained here"
    assert teacher_kind({"factory": "zoo/m.py:f", "weights": "w.pt"}) == \
        "your module zoo/m.py:f with the weights w.pt, not retrained"
