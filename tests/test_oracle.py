"""The oracle teacher on sine (issue "Fair baselines", item 3): the true log p(y | x) as
the teacher's logits, a transfer protocol for sine data only, and the report's share of
the oracle's gain that the trained teacher delivers (design sections and walkthrough)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthetic import SINE_KNOBS, sine_with_teacher
from conftest import tiny_params
from distillstudy import grid
from distillstudy.artifacts import load_npz
from distillstudy.engine import datasets
from distillstudy.render.designs import oracle_share
from distillstudy.render.walkthrough import oracle_sentence
from distillstudy.stages import transfer


def test_oracle_logits_are_the_true_conditional_distribution():
    x = np.linspace(-20, 20, 101).reshape(-1, 1)
    logits = datasets.sine_oracle_logits(x)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p[:, 1], 0.4 * np.sin(x.ravel()) + 0.5, rtol=1e-12)


def test_the_oracle_is_a_variant_of_sine_datasets_only():
    params = tiny_params()
    params["designs"]["transfer"] = ["oracle"]
    sine = {"name": "sine", "kind": "sine", "n_train": 50, "n_test": 50}
    params["designs"]["datasets"] = ["sine", "digits"]
    assert "transfer-oracle" in grid.dataset_variants(params, sine)
    assert "transfer-oracle" not in grid.dataset_variants(params, {"name": "digits", "kind": "digits"})
    assert grid.variant_settings("transfer-oracle") == ()


def test_the_transfer_stage_writes_the_oracle_on_every_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sine_with_teacher()
    knobs = SINE_KNOBS
    transfer.run(data="s.npz", meta="s.json", teacher_model="t.pt", teacher_logits="t.npz", dataset="sine",
                 variant="transfer-oracle", global_seed=3, folds=None, copies=None, noise=None, shift=None,
                 pixel_shift=None, out_set="o.npz", out_model="o.pt", out_meta="o.json",
                 **{k: None for k in knobs})
    arrays, out = load_npz("s.npz"), load_npz("o.npz")
    for split, key in (("train", "logits"), ("val", "logits_val"), ("test", "logits_test")):
        p = 1 / (1 + np.exp(-(out[key][:, 1] - out[key][:, 0])))
        np.testing.assert_allclose(p, 0.4 * np.sin(arrays[f"x_{split}"][:, 0].astype(np.float64)) + 0.5, atol=1e-6)
    np.testing.assert_array_equal(out["x"], arrays["x_train"])
    # what evaluate's designs table reads of it (analysis.designs.set_teacher)
    from distillstudy.analysis.designs import set_teacher
    teacher_of_set = set_teacher(out, {"seed": 1, "n_params": 9, "logits_train": None}, len(arrays["y_train"]))
    assert teacher_of_set["n_params"] == 0 and teacher_of_set["seed"] is None
    with pytest.raises(ValueError, match="the oracle teacher needs the true p"):
        datasets.prepare("d", "digits", "d.npz", "d.json", seed=3, val_fraction=0.25, test_fraction=0.25)
        transfer.run(data="d.npz", meta="d.json", teacher_model="t.pt", teacher_logits="t.npz", dataset="d",
                     variant="transfer-oracle", global_seed=3, folds=None, copies=None, noise=None, shift=None,
                     pixel_shift=None, out_set="x.npz", out_model="x.pt", out_meta="x.json",
                     **{k: None for k in knobs})


def _row(level, mean, lo, hi):
    return {"level": level, "gain_mean": mean, "gain_lo": lo, "gain_hi": hi, "gain_significant": lo > 0 or hi < 0}


def test_the_share_of_the_oracle_s_gain_is_the_ratio_of_gains_only_when_the_oracle_gains():
    rows = pd.DataFrame([_row("early_stopped", 0.01, -0.002, 0.022), _row("oracle", 0.04, 0.02, 0.06)])
    assert "delivers 25% of the oracle teacher's gain" in oracle_share(rows)
    rows = pd.DataFrame([_row("early_stopped", 0.01, -0.002, 0.022), _row("oracle", 0.01, -0.01, 0.03)])
    assert "is not estimated" in oracle_share(rows)
    assert oracle_share(pd.DataFrame([_row("early_stopped", 0.01, 0.0, 0.02)])) is None


def test_the_walkthrough_s_oracle_share_per_n():
    test = pd.DataFrame({"student": [3.0, 1.0], "distilled": [1.0, 0.9], "oracle_distilled": [0.5, 1.2]},
                        index=pd.Index([10, 45], name="n_train"))
    text = oracle_sentence(test)
    assert "n = 10: 80%" in text and "n = 45: n/a (no oracle gain)" in text
