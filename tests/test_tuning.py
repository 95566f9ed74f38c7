"""Equal-effort tuning on validation (distill.tune, issue "Fair baselines", item 1): every
tuned cell picks lr, weight decay and epochs from the same grid on validation; the test
labels play no part; a tuned baseline keeps its untuned twin; the report's statistics of
tuned against untuned are paired by seed (checked against scipy)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from conftest import tiny_params
from distillstudy import grid
from distillstudy.analysis import scoring, tuning_stats
from distillstudy.artifacts import load_npz, read_record, save_npz
from distillstudy.engine import datasets, tuning
from distillstudy.stages import distill

TUNE = {"lr": [0.003, 0.03], "weight_decay": [0.0], "epochs": [2, 6]}
CELL = dict(dataset="digits", size=8, n_seeds=3, global_seed=5, epochs=2, batch_size=64, lr=0.003, weight_decay=0.0)


@pytest.fixture
def digits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets.prepare("digits", "digits", "d.npz", "d.json", seed=5, val_fraction=0.2, test_fraction=0.25)
    arrays = load_npz("d.npz")
    rng = np.random.default_rng(1)
    save_npz("t.npz", {f"logits_{s}": (3 * np.eye(10)[arrays[f"y_{s}"]] + rng.normal(size=(len(arrays[f"y_{s}"]), 10)))
                       .astype(np.float32) for s in grid.SPLITS})
    return arrays


def test_choose_takes_the_best_validation_accuracy_then_nll_then_the_cheaper_setting():
    c = [{"lr": 0.01, "weight_decay": 0.0, "epochs": 80, "val_accuracy": 0.9, "val_nll": 0.3},
         {"lr": 0.001, "weight_decay": 0.0, "epochs": 40, "val_accuracy": 0.9, "val_nll": 0.3},
         {"lr": 0.1, "weight_decay": 0.0, "epochs": 40, "val_accuracy": 0.95, "diverged": "nan"}]
    assert tuning.choose(c)["lr"] == 0.001  # tie: the smaller lr; the diverged one never
    c[0]["val_nll"] = 0.2
    assert tuning.choose(c)["lr"] == 0.01
    with pytest.raises(ValueError, match="every tuning candidate diverged"):
        tuning.choose([c[2]])


def test_a_tuned_cell_reports_its_validation_choice_and_keeps_the_untuned_twin(digits):
    record = distill.run(data="d.npz", teacher_logits="t.npz", cell="baseline", out_model="m.pt",
                         out_logits="tuned.npz", tune=TUNE, **CELL)
    tuned = load_npz("tuned.npz")
    candidates = record["tuning"]["candidates"]
    assert len(candidates) == 4 and {(c["lr"], c["epochs"]) for c in candidates} == {(0.003, 2), (0.003, 6),
                                                                                      (0.03, 2), (0.03, 6)}
    best = max(candidates, key=lambda c: (c["val_accuracy"], -c["val_nll"]))
    assert (record["lr"], record["epochs"]) == (best["lr"], best["epochs"])
    # the reported logits are the chosen candidate's: their validation accuracy is its own
    acc = (tuned["logits_val"].argmax(-1) == digits["y_val"]).mean()
    assert acc == pytest.approx(best["val_accuracy"], abs=1e-12)
    # the untuned twin is the plain run at (lr, epochs, weight decay), bit for bit
    distill.run(data="d.npz", teacher_logits="t.npz", cell="baseline", out_model="p.pt", out_logits="plain.npz", **CELL)
    plain = load_npz("plain.npz")
    for s in grid.SPLITS:
        np.testing.assert_array_equal(tuned[f"untuned_logits_{s}"], plain[f"logits_{s}"])
    # evaluate's rows: the chosen settings, and the twin as model baseline_untuned
    rows = pd.DataFrame(scoring.cell_rows(digits, load_npz("t.npz"), tuned, 15))
    settings = rows[rows.metric.isin(["lr", "epochs"])].drop_duplicates("metric").set_index("metric").value
    assert settings["lr"] == record["lr"] and settings["epochs"] == record["epochs"]
    assert set(rows.model) == {"baseline", "baseline_untuned"}


def test_the_test_labels_change_no_choice(digits):
    """Tuning reads the validation split only: with the test labels shuffled, every
    candidate's scores, the choice and the logits are the same."""
    distill.run(data="d.npz", teacher_logits="t.npz", cell="kd_T4_mix0.9", out_model="a.pt", out_logits="a.npz",
                tune=TUNE, **CELL)
    corrupted = dict(digits)
    corrupted["y_test"] = np.random.default_rng(0).permutation(digits["y_test"])
    save_npz("c.npz", corrupted)
    distill.run(data="c.npz", teacher_logits="t.npz", cell="kd_T4_mix0.9", out_model="b.pt", out_logits="b.npz",
                tune=TUNE, **CELL)
    a, b = load_npz("a.npz"), load_npz("b.npz")
    assert read_record(a)["tuning"] == read_record(b)["tuning"]
    for s in grid.SPLITS:
        np.testing.assert_array_equal(a[f"logits_{s}"], b[f"logits_{s}"])


def test_tuned_against_untuned_baseline_is_a_paired_t_interval():
    rng = np.random.default_rng(3)
    untuned = rng.uniform(0.5, 0.6, size=6)
    tuned = untuned + 0.05 + rng.normal(0, 0.01, size=6)
    rows = []
    for model, values in (("baseline", tuned), ("baseline_untuned", untuned)):
        for seed, v in enumerate(values):
            base = {"dataset": "d", "family": "mlp", "model": model, "objective": "", "setting": "",
                    "student_size": 16, "temperature": "", "alpha": 0.0, "beta": np.nan, "gamma": np.nan,
                    "dkd_alpha": np.nan, "seed": seed}
            rows.append({**base, "split": "test", "metric": "accuracy", "value": v})
            if model == "baseline":
                rows += [{**base, "split": "all", "metric": k, "value": val}
                         for k, val in (("lr", 0.01), ("weight_decay", 0.0), ("epochs", 80))]
    out = tuning_stats.baseline_tuning(pd.DataFrame(rows)).iloc[0]
    d = tuned - untuned
    lo, hi = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
    assert out.diff_mean == pytest.approx(d.mean()) and out.diff_lo == pytest.approx(lo) and out.diff_hi == pytest.approx(hi)
    assert out.significant and (out.lr, out.epochs) == (0.01, 80)


def test_the_designs_keep_an_untuned_reference_where_the_main_grid_is_tuned():
    params = tiny_params()
    params["distill"]["tune"] = copy.deepcopy(TUNE)
    digits = {"name": "digits", "kind": "digits"}
    assert grid.dataset_variants(params, digits)[0] == grid.UNTUNED
    assert grid.variant_cells(grid.UNTUNED, ["kd_T4_mix0.9"]) == ["baseline", "kd_T4_mix0.9"]
    assert not grid.tuned(params["distill"], "digits", "mlp", grid.UNTUNED)
    params["distill"]["tune"]["datasets"] = ["sine"]
    assert grid.UNTUNED not in grid.dataset_variants(params, digits)


def test_a_diverging_learning_rate_is_recorded_and_left_out(digits):
    """lr 1e30 overflows: all its epochs levels are recorded as diverged, the cell reports
    the best of the others; a cell where every candidate diverges fails naming them."""
    record = distill.run(data="d.npz", teacher_logits="t.npz", cell="baseline", out_model="m.pt", out_logits="x.npz",
                         tune={"lr": [0.003, 1e30], "weight_decay": [0.0], "epochs": [2, 6]}, **CELL)
    diverged = [c for c in record["tuning"]["candidates"] if c.get("diverged")]
    assert {(c["lr"], c["epochs"]) for c in diverged} == {(1e30, 2), (1e30, 6)} and record["lr"] == 0.003
    with pytest.raises(Exception, match="every tuning candidate diverged"):
        distill.run(data="d.npz", teacher_logits="t.npz", cell="baseline", out_model="m.pt", out_logits="y.npz",
                    tune={"lr": [1e30], "weight_decay": [0.0], "epochs": [2]}, **CELL)
