"""The variance design (issue "Fair baselines", item 2): R bootstrap resamples of the
training split, the teacher refitted on each, the students' variance across them per seed,
the ratio soft / hard with a CI over seeds, and bias² + variance against the truth on sine."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from synthetic import SINE_KNOBS, sine_with_teacher
from conftest import tiny_params
from distillstudy import grid
from distillstudy.analysis import variance
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.errors import ParamsError
from distillstudy.params import check_params
from distillstudy.render import variance as render_variance
from distillstudy.stages import transfer
from distillstudy.stages.transfer_sets import bootstrap_points

SEEDS = [11, 22, 33]


def _binary_logits(p1: np.ndarray) -> np.ndarray:
    """(..., 2) logits whose softmax is (1 - p1, p1)."""
    return np.stack([np.log1p(-p1), np.log(p1)], axis=-1)


def test_seed_scores_decompose_the_error_exactly_and_match_numpy():
    rng = np.random.default_rng(0)
    n, r = 50, 6
    truth = rng.uniform(0.1, 0.9, n)
    q = np.clip(truth + 0.05 + rng.normal(0, 0.1, (r, n)), 0.01, 0.99)  # biased by +0.05, noisy
    y = rng.integers(0, 2, n)
    data = {"y_test": y, "y_val": y}
    logits = _binary_logits(q)
    s = variance.seed_scores(logits, logits, data, truth)
    assert s["bias2"] + s["variance"] == pytest.approx(s["mse"], rel=1e-12)
    assert s["variance"] == pytest.approx(q.var(axis=0).mean(), rel=1e-10)
    assert s["bias2"] == pytest.approx(((q.mean(axis=0) - truth) ** 2).mean(), rel=1e-10)
    p_true = np.where(y == 1, q, 1 - q)
    assert s["var_p_true"] == pytest.approx(p_true.var(axis=0).mean(), rel=1e-10)
    assert s["var_log_loss"] == pytest.approx((-np.log(p_true)).var(axis=0).mean(), rel=1e-10)
    assert s["n_resamples"] == r
    assert "bias2" not in variance.seed_scores(logits, logits, data, None)


def _frame(ratios: list[float], *, val_bonus: dict | None = None) -> pd.DataFrame:
    """A variance.csv of one (dataset, size): the baseline with variance 0.01 per seed and
    KD at T = 1 and T = 4, T = 4's variance ratio[i] x the baseline's for seed i."""
    rows = []
    for i, seed in enumerate(SEEDS):
        for model, t, var in (("baseline", "", 0.01), ("distilled", "1", 0.02), ("distilled", "4", 0.01 * ratios[i])):
            base = {"dataset": "toy", "family": "mlp", "student_size": 8, "model": model, "temperature": t,
                    "alpha": "0" if model == "baseline" else "0.9", "seed": seed}
            val = 0.5 + (val_bonus or {}).get(t, 0.0)
            for metric, value in (("var_p_true", var), ("var_log_loss", 2 * var), ("test_accuracy", 0.6 + 0.01 * i),
                                  ("val_accuracy", val), ("val_nll", 1.0), ("n_resamples", 4)):
                rows.append({**base, "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=variance.COLUMNS)


def test_the_ratio_is_the_geometric_mean_over_seeds_with_a_t_interval_on_the_logs():
    ratios = [0.5, 0.6, 0.7]
    out = variance.summary(_frame(ratios, val_bonus={"4": 0.1})).iloc[0]
    assert out["temperature"] == "4"  # chosen on validation
    logs = np.log(ratios)
    half = st.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    assert out["ratio"] == pytest.approx(math.exp(logs.mean()))
    assert (out["ratio_lo"], out["ratio_hi"]) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert out["ratio_hi"] < 1 and render_variance.verdict(out["ratio_lo"], out["ratio_hi"]) == "lower"
    assert out["n_seeds"] == 3 and out["n_resamples"] == 4


def test_the_temperature_is_chosen_on_validation_never_on_test():
    frame = _frame([0.5, 0.6, 0.7], val_bonus={"1": 0.1})
    assert variance.summary(frame).iloc[0]["temperature"] == "1"
    corrupted = frame.copy()
    test = corrupted["metric"].isin(["test_accuracy", "var_p_true"])
    corrupted.loc[test & (corrupted["temperature"] == "4"), "value"] = 99.0
    assert variance.summary(corrupted).iloc[0]["temperature"] == "1"


@pytest.mark.parametrize("ratios, word", [([0.5, 0.6, 0.7], "lower"), ([2.0, 2.2, 2.4], "higher"),
                                          ([0.5, 1.5, 1.0], "cannot tell")])
def test_the_sentence_claims_no_more_than_the_interval(ratios, word):
    row = variance.summary(_frame(ratios, val_bonus={"4": 0.1})).iloc[0]
    text = render_variance.sentence("toy", row, "hidden width")
    assert word in text
    assert ("as the seed's explanation predicts" in text) == (word == "lower")


def _cell(path, *, r: int, cell: str, logits_test: np.ndarray, seeds=SEEDS):
    spec = grid.parse_cell(cell)
    record = {"dataset": "toy", "family": "mlp", "student_size": 8, "cell": cell, "variant": f"resample-{r}",
              "seeds": seeds, **{k: spec[k] for k in ("model", "alpha", "temperature")}}
    save_npz(path, {"logits_test": logits_test.astype(np.float32), "logits_val": logits_test.astype(np.float32),
                    "record": np.array(json.dumps(record))})
    return str(path)


def test_build_pairs_each_seed_s_resamples_and_recovers_a_planted_variance(tmp_path):
    """Hard students' p(y = 1) spread with sd 0.1 across resamples, distilled ones with sd 0.05:
    the ratio of variances is 1/4, up to sampling noise of 400 points."""
    rng = np.random.default_rng(1)
    n, resamples = 400, 6
    y = np.ones(n, dtype=np.int64)
    data = {"y_test": y, "y_val": y}
    paths = []
    for r in range(1, resamples + 1):
        for cell, sd in (("baseline", 0.1), ("kd_T4_mix0.9", 0.05)):
            q = np.clip(0.5 + rng.normal(0, sd, (len(SEEDS), n)), 0.01, 0.99)
            paths.append(_cell(tmp_path / f"{cell}-{r}.npz", r=r, cell=cell, logits_test=_binary_logits(q)))
    frame = variance.build({"toy": (data, None)}, [load_npz(p) for p in paths])
    assert set(frame["seed"]) == set(SEEDS) and set(frame["model"]) == {"baseline", "distilled"}
    out = variance.summary(frame).iloc[0]
    assert out["ratio"] == pytest.approx(0.25, rel=0.15)
    assert out["ratio_lo"] < 0.25 < out["ratio_hi"] < 1


def test_build_refuses_unpaired_seeds_and_a_single_resample(tmp_path):
    y = np.ones(4, dtype=np.int64)
    logits = _binary_logits(np.full((3, 4), 0.6))
    a = _cell(tmp_path / "a.npz", r=1, cell="baseline", logits_test=logits)
    b = _cell(tmp_path / "b.npz", r=2, cell="baseline", logits_test=logits, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="other seeds"):
        variance.build({"toy": ({"y_test": y, "y_val": y}, None)}, [load_npz(a), load_npz(b)])
    with pytest.raises(ValueError, match="a variance needs at least 2"):
        variance.build({"toy": ({"y_test": y, "y_val": y}, None)}, [load_npz(a)])


def test_resample_variants_are_named_and_checked():
    params = tiny_params()
    params["designs"]["resamples"] = 3
    names = grid.dataset_variants(params, {"name": "digits", "kind": "digits"})
    assert [v for v in names if v.startswith("resample")] == ["resample-1", "resample-2", "resample-3"]
    assert grid.parse_variant("resample-2") == {"axis": grid.RESAMPLES, "level": "2", "value": 2}
    assert grid.variant_cells("resample-1", ["kd_T4_mix0.9"]) == ["baseline", "kd_T4_mix0.9"]
    assert "teacher.patience" in grid.variant_settings("resample-1")  # the teacher is refitted
    params["designs"]["resamples"] = 1
    with pytest.raises(ParamsError, match="designs.resamples: 1 cannot give a variance"):
        check_params(params)


def test_the_transfer_stage_resamples_with_replacement_and_refits_the_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sine_with_teacher()
    knobs = SINE_KNOBS
    outs = []
    for out in ("a", "b"):
        transfer.run(data="s.npz", meta="s.json", teacher_model="t.pt", teacher_logits="t.npz", dataset="sine",
                     variant="resample-2", global_seed=3, folds=None, copies=None, noise=None, shift=None,
                     pixel_shift=None, out_set=f"{out}.npz", out_model=f"{out}.pt", out_meta=f"{out}.json", **knobs)
        outs.append((tmp_path / f"{out}.npz").read_bytes())
    assert outs[0] == outs[1]  # byte-identical rerun
    arrays, tset = load_npz("s.npz"), load_npz("a.npz")
    n = len(arrays["y_train"])
    np.testing.assert_array_equal(tset["x"], arrays["x_train"][tset["source"]])
    np.testing.assert_array_equal(tset["y"], arrays["y_train"][tset["source"]])
    assert len(tset["source"]) == n and len(np.unique(tset["source"])) < n  # with replacement
    record = json.loads(str(tset["record"]))
    assert record["teachers"][0]["n_train_points"] == n and record["teachers"][0]["trained_here"]
    assert not np.array_equal(tset["logits_test"], load_npz("t.npz")["logits_test"])  # its own teacher
    np.testing.assert_array_equal(bootstrap_points(n, record["subset"]["seed"]), tset["source"])
