"""Each Snakemake rule run alone, through real Snakemake, on tiny inputs.

The stages run in order in one workspace; each call allows exactly one rule,
so a test fails if its rule needs another rule to run or leaves outputs missing.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_workspace, run

pytestmark = pytest.mark.slow


def run_rule(ws, rule: str, *targets: str) -> set[str]:
    proc = run(["snakemake", "-c2", *targets, "--allowed-rules", rule], ws)
    executed = set(re.findall(r"^localrule (\w+):", proc.stdout + proc.stderr, flags=re.M))
    assert executed == {rule}, f"expected only {rule} to run, saw {executed}"
    return executed


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("rules") / "study")


def test_prepare_rule(ws):
    run_rule(ws, "prepare", "data/prepared/sine.npz", "data/prepared/digits.npz")
    meta = json.loads((ws / "data/prepared/sine.json").read_text())
    assert meta["kind"] == "sine" and meta["n_train"] + meta["n_val"] == 120 and meta["n_test"] == 400
    assert len(meta["sha256"]) == 64


def test_teacher_rule(ws):
    run_rule(ws, "teacher", "models/teachers/sine.logits.npz", "models/teachers/digits.logits.npz")
    logits = np.load(ws / "models/teachers/digits.logits.npz")
    data = np.load(ws / "data/prepared/digits.npz")
    for split in ("train", "val", "test"):
        assert logits[f"logits_{split}"].shape == (len(data[f"y_{split}"]), 10)
    record = json.loads((ws / "models/teachers/digits.json").read_text())
    assert 0 < record["metrics"]["train"]["mean_max_prob"] <= 1
    # Weights are plain tensors: loadable without unpickling arbitrary objects.
    state = torch.load(ws / "models/teachers/digits.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_transfer_rule(ws):
    run_rule(ws, "transfer", "models/transfer/digits/transfer-augmented.npz", "models/transfer/digits/labels-0.3.npz")
    data = np.load(ws / "data/prepared/digits.npz")
    n = len(data["y_train"])
    augmented = np.load(ws / "models/transfer/digits/transfer-augmented.npz")
    assert augmented["x"].shape == (2 * n, 64)  # the training split + transfer.copies = 1 copy
    np.testing.assert_array_equal(augmented["y"], np.concatenate([data["y_train"], data["y_train"]]))
    subset = np.load(ws / "models/transfer/digits/labels-0.3.npz")
    assert len(subset["y"]) == round(0.3 * n) and set(subset["y"]) == set(data["y_train"])
    record = json.loads((ws / "models/transfer/digits/labels-0.3.json").read_text())
    assert record["variant"] == "labels-0.3" and record["dataset"] == "digits"


def test_distill_rule_on_a_design_variant(ws):
    """A control cell learns the augmented copies' hard labels with the grid's seeds."""
    cell_path = "models/students/digits/transfer-augmented/h8/control.logits.npz"
    run_rule(ws, "distill", cell_path)
    record = json.loads(str(np.load(ws / cell_path)["record"]))
    assert record["model"] == "control" and record["alpha"] == 0.0 and record["variant"] == "transfer-augmented"
    assert record["transfer_set"] == "models/transfer/digits/transfer-augmented.npz"
    assert (ws / "logs/distill/digits/transfer-augmented/h8/control.log").exists()


def test_distill_rule(ws):
    run_rule(ws, "distill", "models/students/digits/h8/T4.logits.npz", "models/students/digits/h8/baseline.logits.npz")
    cell = np.load(ws / "models/students/digits/h8/T4.logits.npz")
    record = json.loads(str(cell["record"]))
    assert record["temperature"] == 4.0 and record["alpha"] == 0.9 and len(record["seeds"]) == 2
    assert cell["logits_test"].shape[0] == 2
    base = json.loads(str(np.load(ws / "models/students/digits/h8/baseline.logits.npz")["record"]))
    assert base["alpha"] == 0.0 and base["seeds"] == record["seeds"], "baseline must share seeds (pairing)"
    torch.load(ws / "models/students/digits/h8/T4.pt", weights_only=True)


def test_evaluate_rule(ws):
    # evaluate needs every cell: make them (distill only), then run evaluate alone.
    run(["snakemake", "-c2", "reports/results.csv", "--until", "distill"], ws)
    run_rule(ws, "evaluate", "reports/results.csv")
    results = pd.read_csv(ws / "reports/results.csv", dtype=str, keep_default_na=False)
    assert list(results.columns) == ["dataset", "model", "student_size", "temperature", "alpha", "seed",
                                     "split", "metric", "value"]
    assert set(results["model"]) == {"teacher", "baseline", "distilled", "logit_mse"}
    assert set(results.loc[results.model == "distilled", "temperature"]) == {"1", "4"}
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    assert set(metrics) == {"sine", "digits"} and "h8" in metrics["digits"]
    # reliability bins of every model and seed on test (15 bins, as ece_bins)
    cal = pd.read_csv(ws / "reports/calibration.csv", dtype={"temperature": str}, keep_default_na=False)
    assert set(cal["split"]) == {"test"} and set(cal["model"]) == set(results["model"])
    per_model = cal.groupby(["dataset", "model", "student_size", "temperature", "seed"])
    assert (per_model.size() == 15).all()
    assert per_model["count"].sum().groupby("dataset").nunique().eq(1).all()  # every model: the whole test split
    designs = pd.read_csv(ws / "reports/designs.csv", dtype=str, keep_default_na=False)
    assert set(designs["dataset"]) == {"digits"}
    assert set(designs["axis"]) == {"transfer", "epochs", "teacher_width", "ensemble", "label_fraction"}
    levels = designs.groupby("axis")["level"].unique().map(list).to_dict()
    assert levels["transfer"] == ["early_stopped", "in_sample", "cross_fitted", "augmented"]
    assert levels["epochs"] == ["3", "5"] and levels["label_fraction"] == ["1", "0.3"]
    assert set(designs.loc[designs.model == "control", "level"]) == {"augmented"}


def test_walkthrough_rule(ws):
    run_rule(ws, "walkthrough", "reports/walkthrough.csv")
    frame = pd.read_csv(ws / "reports/walkthrough.csv")
    assert list(frame.columns) == ["n_train", "model", "split", "log_loss"]
    assert len(frame) == 2 * 3 * 2
    assert (ws / "reports/walkthrough/test_log_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_report_rule(ws):
    run_rule(ws, "report", "reports/index.html")
    html = (ws / "reports/index.html").read_text()
    assert "tiny study" in html and "digits" in html and "data:image/png;base64," in html
    assert (ws / "reports/plots/acc_vs_temperature.csv").exists()
    figures = sorted(p.relative_to(ws / "reports/figures").as_posix()
                     for p in (ws / "reports/figures").glob("*/*.png"))
    assert len(figures) == 2 * 6 + 5 and any(f.endswith("/reliability.png") for f in figures)
    # one figure per study-design axis, for the dataset the axes ran on (digits)
    assert sorted(f.split("/")[1] for f in figures if "/design_" in f) == [
        "design_ensemble.png", "design_epochs.png", "design_label_fraction.png", "design_teacher_width.png",
        "design_transfer.png"]
    assert 'id="designs"' in html


def test_snakemake_report(ws):
    """`snakemake --report` collects every figure with its caption (after the run above)."""
    run(["snakemake", "--report", "reports/snakemake-report.html"], ws)
    html = (ws / "reports/snakemake-report.html").read_text()
    for figure in ("gain_heatmap", "accuracy_vs_t", "nll_vs_t", "best_t", "fidelity", "reliability",
                   "design_transfer", "design_label_fraction"):
        assert f"{figure}.png" in html
    assert "test_log_loss.png" in html
    # captions rendered per figure from workflow/report/figures.rst
    assert "Hinton et al. (2015)" in html and "Reliability diagrams on the test split" in html
