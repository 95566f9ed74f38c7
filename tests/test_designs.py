"""Study designs through distill and evaluate on a hand-made transfer set: the control
cell trains on the set's copies with hard labels, variants keep the reference's seeds
(paired), and designs.csv holds every level of an axis, its teacher on the transfer
points, the reference baseline repeated where a level shares it, and the control."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from distillstudy.analysis import designs, metrics
from distillstudy.stages import distill, evaluate
from distillstudy.engine import seeds
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.engine.datasets import prepare

SEED = 11
COMMON = dict(n_seeds=2, global_seed=SEED, batch_size=64, lr=3e-3, weight_decay=0.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """digits, a fake reference teacher (noisy one-hot logits), the reference cells at
    size 4, and an 'augmented' variant whose set is the training split plus a jittered copy."""
    d = tmp_path_factory.mktemp("designs")
    data, meta = d / "digits.npz", d / "digits.json"
    prepare("digits", "digits", data, meta, seed=3, val_fraction=0.2, test_fraction=0.25)
    arrays = load_npz(data)
    rng = np.random.default_rng(0)

    def fake_logits(y):
        return (np.eye(10, dtype=np.float32)[y] * 4 + rng.normal(size=(len(y), 10))).astype(np.float32)

    teacher = {f"logits_{s}": fake_logits(arrays[f"y_{s}"]) for s in ("train", "val", "test")}
    save_npz(d / "teacher.logits.npz", teacher)
    (d / "teacher.json").write_text(json.dumps({"dataset": "digits", "seed": 5, "n_params": 123}))
    n = len(arrays["y_train"])
    x = np.concatenate([arrays["x_train"], arrays["x_train"] + rng.normal(size=arrays["x_train"].shape)
                        .astype(np.float32)])
    y = np.concatenate([arrays["y_train"], arrays["y_train"]])
    record = {"dataset": "digits", "variant": "transfer-augmented", "teachers": []}
    save_npz(d / "augmented.npz", {
        "x": x, "y": y, "source": np.concatenate([np.arange(n), np.arange(n)]),
        "logits": fake_logits(y), "logits_val": teacher["logits_val"], "logits_test": teacher["logits_test"],
        "fold": np.full(2 * n, -1), "train_mask": np.zeros((0, n), dtype=bool),
        "record": np.array(json.dumps(record, sort_keys=True))})
    cells, design_cells = [], []
    for cell in ("baseline", "kd_T2_mix0.9"):
        out = d / f"ref_{cell}"
        distill.run(data=str(data), teacher_logits=str(d / "teacher.logits.npz"), dataset="digits", size=4,
                    cell=cell, epochs=2, out_model=f"{out}.pt", out_logits=f"{out}.logits.npz", **COMMON)
        cells.append(f"{out}.logits.npz")
    for cell in ("control", "kd_T2_mix0.9"):
        out = d / f"aug_{cell}"
        distill.run(data=str(data), transfer=str(d / "augmented.npz"), variant="transfer-augmented",
                    dataset="digits", size=4, cell=cell, epochs=2, out_model=f"{out}.pt",
                    out_logits=f"{out}.logits.npz", **COMMON)
        design_cells.append(f"{out}.logits.npz")
    evaluate.run(data=[str(data)], teachers=[str(d / "teacher.logits.npz")], teacher_meta=[str(d / "teacher.json")],
                 cells=cells, design_cells=design_cells, transfer_sets=[str(d / "augmented.npz")], ece_bins=15,
                 out_results=str(d / "results.csv"), out_metrics=str(d / "metrics.json"),
                 out_designs=str(d / "designs.csv"))
    return {"dir": d, "arrays": arrays, "y_transfer": y, "set": load_npz(d / "augmented.npz")}


def test_control_and_variant_cells_are_recorded_and_paired(study):
    d = study["dir"]
    control = distill.read_record(load_npz(d / "aug_control.logits.npz"))
    assert control["model"] == "control" and control["alpha"] == 0.0 and control["temperature"] is None
    assert control["variant"] == "transfer-augmented" and control["n_transfer"] == len(study["y_transfer"])
    reference = distill.read_record(load_npz(d / "ref_kd_T2_mix0.9.logits.npz"))
    assert reference["variant"] == "reference" and reference["transfer_set"] is None
    # the same replicate seeds in every variant: gains are paired
    assert control["seeds"] == reference["seeds"] == seeds.student_seeds(SEED, "digits", 4, 2)


def test_designs_csv_holds_every_level_with_its_teacher(study):
    frame = pd.read_csv(study["dir"] / "designs.csv", dtype={"level": str, "student_size": str, "temperature": str},
                        keep_default_na=False)
    assert list(frame.columns) == designs.COLUMNS
    assert set(frame.axis) == {"transfer"}
    assert list(dict.fromkeys(frame.level)) == ["early_stopped", "augmented"]
    models = frame.groupby("level")["model"].apply(lambda s: sorted(set(s))).to_dict()
    assert models == {"early_stopped": ["baseline", "distilled", "teacher"],
                      "augmented": ["baseline", "control", "distilled", "teacher"]}

    def values(level, model, split, metric):
        sel = frame[(frame.level == level) & (frame.model == model) & (frame.split == split) & (frame.metric == metric)]
        return sel.sort_values("seed")["value"].to_numpy(dtype=float)

    # the augmented level shares the reference baseline: identical rows
    np.testing.assert_array_equal(values("augmented", "baseline", "test", "accuracy"),
                                  values("early_stopped", "baseline", "test", "accuracy"))
    # the teacher scored on the transfer points against their source labels
    expected = metrics.accuracy(study["set"]["logits"], study["y_transfer"])
    assert values("augmented", "teacher", "transfer", "accuracy") == pytest.approx([expected])
    ref_teacher = load_npz(study["dir"] / "teacher.logits.npz")
    assert values("early_stopped", "teacher", "transfer", "accuracy") == pytest.approx(
        [metrics.accuracy(ref_teacher["logits_train"], study["arrays"]["y_train"])])
    # student rows of a variant are its own cell's numbers
    cell = load_npz(study["dir"] / "aug_control.logits.npz")
    by_seed = dict(zip(distill.read_record(cell)["seeds"], cell["logits_test"]))
    expected = [metrics.accuracy(by_seed[s], study["arrays"]["y_test"]) for s in sorted(by_seed)]
    assert values("augmented", "control", "test", "accuracy") == pytest.approx(expected)


def test_no_design_cells_write_a_header_only(study, tmp_path):
    d = study["dir"]
    evaluate.run(data=[str(d / "digits.npz")], teachers=[str(d / "teacher.logits.npz")],
                 teacher_meta=[str(d / "teacher.json")], cells=[str(d / "ref_baseline.logits.npz")], ece_bins=15,
                 out_results=str(tmp_path / "r.csv"), out_metrics=str(tmp_path / "m.json"),
                 out_designs=str(tmp_path / "designs.csv"))
    assert (tmp_path / "designs.csv").read_text().strip() == ",".join(designs.COLUMNS)


def test_training_set_takes_exactly_one_source(study):
    with pytest.raises(ValueError, match="exactly one"):
        distill.training_set(study["arrays"], None, None)


def test_designs_copy_only_the_design_familys_reference_cells(study, tmp_path):
    """A second student family of the same size in the main grid (a "cnn" copy of the
    reference cells with other logits, listed after them): designs.csv is unchanged, its
    students all of the design cells' family (here records without one: mlp)."""
    d = study["dir"]
    rng = np.random.default_rng(5)
    cells = [str(d / f"ref_{cell}.logits.npz") for cell in ("baseline", "kd_T2_mix0.9")]
    cnn_cells = []
    for path in cells:
        cell = load_npz(path)
        record = {**distill.read_record(cell), "family": "cnn"}
        out = tmp_path / f"cnn_{len(cnn_cells)}.logits.npz"
        save_npz(out, {**{k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in cell.items()
                          if k.startswith("logits_")}, "record": np.array(json.dumps(record, sort_keys=True))})
        cnn_cells.append(str(out))
    design_cells = [str(d / f"aug_{cell}.logits.npz") for cell in ("control", "kd_T2_mix0.9")]
    evaluate.run(data=[str(d / "digits.npz")], teachers=[str(d / "teacher.logits.npz")],
                 teacher_meta=[str(d / "teacher.json")], cells=cells + cnn_cells, design_cells=design_cells,
                 transfer_sets=[str(d / "augmented.npz")], ece_bins=15, out_results=str(tmp_path / "results.csv"),
                 out_metrics=str(tmp_path / "metrics.json"), out_designs=str(tmp_path / "designs.csv"))
    assert (tmp_path / "designs.csv").read_bytes() == (d / "designs.csv").read_bytes()
    frame = pd.read_csv(tmp_path / "designs.csv", dtype=str, keep_default_na=False)
    assert set(frame.loc[frame.model == "teacher", "family"]) == {""}
    assert set(frame.loc[frame.model != "teacher", "family"]) == {"mlp"}
    results = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert set(results["family"]) == {"", "mlp", "cnn"}  # the main grid keeps both families
