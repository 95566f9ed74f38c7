"""Each Snakemake rule run alone, through real Snakemake, on the tiny study.

Each rule gets a copy of the session's finished tiny study (`finished`, mtimes kept)
with the outputs of some of its jobs deleted, and Snakemake may run exactly that rule
(`--allowed-rules`): a test fails if its rule needs another rule to run or leaves an
output missing, and what the rule writes again must equal the full run's, byte for byte.
The copies are independent, so the runs (mostly single-threaded) go 3 at a time, in the
`ran` fixture; each test checks its rule's run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import copy_workspace, tool_env
from distillstudy.stages import walkthrough

pytestmark = pytest.mark.slow
CONFIG = ["--configfile", "tests/params.tiny.yaml"]  # as `finished` was run (last: it takes a list)


def remove(ws: Path, *paths: str) -> dict[str, bytes]:
    """Delete files or folders of the copy; return the full run's bytes of every file removed."""
    before = {}
    for name in paths:
        path = ws / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            before[str(f.relative_to(ws))] = f.read_bytes()
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return before


DKD = "dkd_alpha1_beta8_T4_mix0.5"
LM_CELL = "fkl_T1_student0.5"
CONTROL = "digits/transfer-augmented/h8/control"
# name: (rule, targets, what to delete first)
RUNS = {
    "prepare": ("prepare", ["data/prepared/sine.npz", "data/prepared/digits.npz"],
                [f"data/prepared/{d}.{ext}" for d in ("sine", "digits") for ext in ("npz", "json")]),
    "teacher": ("teacher", ["models/teachers/sine.logits.npz", "models/teachers/digits.logits.npz"],
                [f"models/teachers/{d}.{ext}" for d in ("sine", "digits") for ext in ("pt", "logits.npz", "json")]),
    "distill_lm": ("distill_lm", [f"models/students/hmm/gpt-8/{LM_CELL}.lm.npz"],
                   [f"models/students/hmm/gpt-8/{LM_CELL}.lm.{ext}" for ext in ("pt", "npz")]),
    "transfer": ("transfer", ["models/transfer/digits/transfer-augmented.npz", "models/transfer/digits/labels-0.3.npz"],
                 [f"models/transfer/digits/{s}.{ext}" for s in ("transfer-augmented", "labels-0.3")
                  for ext in ("npz", "pt", "json")]),
    "distill_variant": ("distill", [f"models/students/{CONTROL}.logits.npz"],
                        [f"models/students/{CONTROL}.logits.npz", f"models/students/{CONTROL}.pt",
                         f"logs/distill/{CONTROL}.log"]),
    "distill": ("distill", [f"models/students/digits/h8/{c}.logits.npz" for c in ("kd_T4_mix0.9", "baseline", DKD)],
                [f"models/students/digits/h8/{c}.{ext}" for c in ("kd_T4_mix0.9", "baseline", DKD)
                 for ext in ("pt", "logits.npz")]),
    "evaluate": ("evaluate", ["reports/results.csv"],
                 ["reports/results.csv", "reports/metrics.json", "reports/calibration.csv", "reports/designs.csv"]),
    "walkthrough": ("walkthrough", ["reports/walkthrough.csv", "reports/walkthrough_variance.csv"],
                    ["reports/walkthrough.csv", "reports/walkthrough", "reports/walkthrough_variance.csv"]),
    "report": ("report", ["reports/index.html"], ["reports/index.html", "reports/figures", "reports/plots"]),
}


@pytest.fixture(scope="module")
def ran(finished, tmp_path_factory) -> dict:
    """Every entry of RUNS (and `snakemake --report`), each in its own copy, 3 at a time."""
    base = tmp_path_factory.mktemp("rules")
    jobs = {}
    for name, (rule, targets, paths) in RUNS.items():
        ws = copy_workspace(finished, base / name)
        jobs[name] = (ws, remove(ws, *paths), ["snakemake", "-c2", *targets, "--allowed-rules", rule, *CONFIG])
    ws = copy_workspace(finished, base / "snakemake-report")
    jobs["snakemake-report"] = (ws, {}, ["snakemake", *CONFIG, "--report", "reports/snakemake-report.html"])

    def go(name):
        ws, before, cmd = jobs[name]
        proc = subprocess.run(cmd, cwd=ws, env=tool_env(), capture_output=True, text=True, timeout=600)
        return name, {"ws": ws, "before": before, "cmd": cmd, "proc": proc}

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(go, jobs))


def run_rule(ran: dict, name: str) -> tuple[Path, dict[str, bytes]]:
    """The copy where RUNS[name]'s rule ran alone, and the full run's bytes of what it re-made."""
    r = ran[name]
    out = r["proc"].stdout + r["proc"].stderr
    assert r["proc"].returncode == 0, f"{' '.join(r['cmd'])} exited {r['proc'].returncode}\n{out[-4000:]}"
    if name in RUNS:
        rule = RUNS[name][0]
        executed = set(re.findall(r"^localrule (\w+):", out, flags=re.M))
        assert executed == {rule}, f"expected only {rule} to run, saw {executed}"
    return r["ws"], r["before"]


def assert_same_bytes(ws: Path, before: dict[str, bytes]) -> None:
    changed = [name for name, data in before.items() if (ws / name).read_bytes() != data]
    assert not changed, f"differ from the full run: {changed}"


def test_language_model_rule(ran):
    """One on-policy cell of the tiny study's synthetic language, re-made alone: the full run's
    bytes (weights and scores)."""
    ws, before = run_rule(ran, "distill_lm")
    assert_same_bytes(ws, before)


def test_prepare_rule(ran):
    ws, before = run_rule(ran, "prepare")
    meta = json.loads((ws / "data/prepared/sine.json").read_text())
    assert meta["kind"] == "sine" and meta["n_train"] + meta["n_val"] == 120 and meta["n_test"] == 400
    assert len(meta["sha256"]) == 64
    assert_same_bytes(ws, before)


def test_teacher_rule(ran):
    ws, before = run_rule(ran, "teacher")
    logits = np.load(ws / "models/teachers/digits.logits.npz")
    data = np.load(ws / "data/prepared/digits.npz")
    for split in ("train", "val", "test"):
        assert logits[f"logits_{split}"].shape == (len(data[f"y_{split}"]), 10)
    record = json.loads((ws / "models/teachers/digits.json").read_text())
    assert 0 < record["metrics"]["train"]["mean_max_prob"] <= 1
    # Weights are plain tensors: loadable without unpickling arbitrary objects.
    state = torch.load(ws / "models/teachers/digits.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert_same_bytes(ws, before)


def test_transfer_rule(ran):
    ws, before = run_rule(ran, "transfer")
    data = np.load(ws / "data/prepared/digits.npz")
    n = len(data["y_train"])
    augmented = np.load(ws / "models/transfer/digits/transfer-augmented.npz")
    assert augmented["x"].shape == (2 * n, 64)  # the training split + transfer.copies = 1 copy
    np.testing.assert_array_equal(augmented["y"], np.concatenate([data["y_train"], data["y_train"]]))
    subset = np.load(ws / "models/transfer/digits/labels-0.3.npz")
    assert len(subset["y"]) == round(0.3 * n) and set(subset["y"]) == set(data["y_train"])
    record = json.loads((ws / "models/transfer/digits/labels-0.3.json").read_text())
    assert record["variant"] == "labels-0.3" and record["dataset"] == "digits"
    assert_same_bytes(ws, before)


def test_distill_rule_on_a_design_variant(ran):
    """A control cell learns the augmented copies' hard labels with the grid's seeds."""
    ws, before = run_rule(ran, "distill_variant")
    cell = CONTROL
    record = json.loads(str(np.load(ws / f"models/students/{cell}.logits.npz")["record"]))
    assert record["model"] == "control" and record["alpha"] == 0.0 and record["variant"] == "transfer-augmented"
    assert record["transfer_set"] == "models/transfer/digits/transfer-augmented.npz"
    assert (ws / f"logs/distill/{cell}.log").exists()
    before.pop(f"logs/distill/{cell}.log")  # a log, not an artifact
    assert_same_bytes(ws, before)


def test_distill_rule(ran):
    ws, before = run_rule(ran, "distill")
    cell = np.load(ws / "models/students/digits/h8/kd_T4_mix0.9.logits.npz")
    record = json.loads(str(cell["record"]))
    assert record["temperature"] == 4.0 and record["alpha"] == 0.9 and len(record["seeds"]) == 2
    assert record["objective"] == "kd" and record["setting"] == "T4" and record["model"] == "distilled"
    dkd = json.loads(str(np.load(ws / f"models/students/digits/h8/{DKD}.logits.npz")["record"]))
    assert (dkd["objective"], dkd["alpha"], dkd["hyper"]) == ("dkd", 0.5, {"alpha": 1.0, "beta": 8.0, "temperature": 4.0})
    assert (dkd["dkd_alpha"], dkd["beta"], dkd["gamma"]) == (1.0, 8.0, None) and dkd["seeds"] == record["seeds"]
    assert cell["logits_test"].shape[0] == 2
    base = json.loads(str(np.load(ws / "models/students/digits/h8/baseline.logits.npz")["record"]))
    assert base["alpha"] == 0.0 and base["seeds"] == record["seeds"], "baseline must share seeds (pairing)"
    torch.load(ws / "models/students/digits/h8/kd_T4_mix0.9.pt", weights_only=True)
    assert_same_bytes(ws, before)


def test_evaluate_rule(ran):
    ws, before = run_rule(ran, "evaluate")
    results = pd.read_csv(ws / "reports/results.csv", dtype=str, keep_default_na=False)
    assert list(results.columns) == ["dataset", "family", "model", "objective", "setting", "student_size", "temperature",
                                     "alpha", "beta", "gamma", "dkd_alpha", "seed", "split", "metric", "value"]
    assert set(results["model"]) == {"teacher", "baseline", "distilled", "logit_mse", "dkd", "dist", "ls_kd", "nkd",
                                     "baseline_untuned"}
    # distill.tune tunes sine only: its cells record their choice, digits' do not
    chosen = results[results.metric == "lr"]
    assert set(chosen.dataset) == {"sine"} and set(chosen.value.astype(float)) <= {0.003, 0.01}
    assert set(results.loc[results.model == "baseline_untuned", "dataset"]) == {"sine"}
    dkd = results[results.model == "dkd"]
    assert set(zip(dkd.setting, dkd.dkd_alpha, dkd.beta, dkd.temperature)) == {("alpha1_beta8_T4", "1", "8", "4")}
    assert set(results.loc[results.model == "distilled", "temperature"]) == {"1", "4"}
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    assert set(metrics) == {"sine", "digits"} and "h8" in metrics["digits"]
    # reliability bins of every model and seed on test (15 bins, as ece_bins)
    cal = pd.read_csv(ws / "reports/calibration.csv", dtype={"temperature": str}, keep_default_na=False)
    # every model's reliability bins (an untuned twin is a comparison, not a reported model)
    assert set(cal["split"]) == {"test"} and set(cal["model"]) == set(results["model"]) - {"baseline_untuned"}
    per_model = cal.groupby(["dataset", "family", "model", "student_size", "setting", "alpha", "seed"])
    assert (per_model.size() == 15).all()
    assert per_model["count"].sum().groupby("dataset").nunique().eq(1).all()  # every model: the whole test split
    designs = pd.read_csv(ws / "reports/designs.csv", dtype=str, keep_default_na=False)
    assert set(designs["dataset"]) == {"digits"}
    assert set(designs["axis"]) == {"transfer", "epochs", "teacher_width", "ensemble", "label_fraction"}
    levels = designs.groupby("axis")["level"].unique().map(list).to_dict()
    assert levels["transfer"] == ["early_stopped", "in_sample", "cross_fitted", "augmented", "consistent", "patient"]
    assert levels["epochs"] == ["3", "5"] and levels["label_fraction"] == ["1", "0.3"]
    assert set(designs.loc[designs.model == "control", "level"]) == {"augmented", "consistent", "patient"}
    assert_same_bytes(ws, before)


def test_walkthrough_rule(ran):
    ws, before = run_rule(ran, "walkthrough")
    frame = pd.read_csv(ws / "reports/walkthrough.csv")
    assert list(frame.columns) == ["n_train", "model", "split", "log_loss"]
    assert len(frame) == 2 * 5 * 2  # n values x (student, teacher, distilled, oracle_distilled, truth) x splits
    assert (ws / "reports/walkthrough/test_log_loss.png").read_bytes()[:4] == b"\x89PNG"
    variance = pd.read_csv(ws / "reports/walkthrough_variance.csv")
    assert list(variance.columns) == walkthrough.VARIANCE_COLUMNS
    assert len(variance) == 2 * len(walkthrough.VARIANCE_MODELS)  # n values x decomposed models
    assert_same_bytes(ws, before)


def test_report_rule(ran):
    ws, _ = run_rule(ran, "report")
    html = (ws / "reports/index.html").read_text()
    assert "<h1>tiny study</h1>" in html and "data:image/png;base64," in html
    assert re.findall(r'<h2>Dataset: (\w+)</h2>', html) == ["digits", "sine"]
    assert (ws / "reports/plots/acc_vs_temperature.csv").exists()
    figures = sorted(p.relative_to(ws / "reports/figures").as_posix()
                     for p in (ws / "reports/figures").glob("*/*.png"))
    # per dataset its 7 study figures; digits' 5 design axes, its variance and generations
    assert len(figures) == 2 * 7 + 5 + 2 and any(f.endswith("/reliability.png") for f in figures)
    # one figure per study-design axis, the variance design and the generations, for the dataset
    # the axes ran on (digits)
    assert sorted(f.split("/")[1] for f in figures if "/design_" in f) == [
        "design_ensemble.png", "design_epochs.png", "design_generations.png", "design_label_fraction.png",
        "design_teacher_width.png", "design_transfer.png", "design_variance.png"]
    assert '<section id="designs">' in html
    # the tuned sine panel: the tuning note and the tuned-against-untuned baseline table
    sine = html[html.index("<h2>Dataset: sine</h2>"):]
    assert "Equal-effort tuning" in sine and "the same 2 candidates" in sine and "untuned baseline" in sine
    assert "Equal-effort tuning" not in html[html.index("<h2>Dataset: digits</h2>"):html.index("<h2>Dataset: sine</h2>")]


def test_snakemake_report(ran):
    """`snakemake --report` collects every figure with its caption (on the finished run)."""
    ws, _ = run_rule(ran, "snakemake-report")
    html = (ws / "reports/snakemake-report.html").read_text()
    for figure in ("gain_heatmap", "accuracy_vs_t", "nll_vs_t", "best_t", "fidelity", "reliability",
                   "design_transfer", "design_label_fraction"):
        assert f"{figure}.png" in html
    assert "test_log_loss.png" in html
    # captions rendered per figure from workflow/report/figures.rst
    assert "Hinton et al. (2015)" in html and "Reliability diagrams on the test split" in html
