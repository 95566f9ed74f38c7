"""Which objective? Selection on validation only, paired test gains and differences that
agree with scipy, and Holm's correction that agrees with statsmodels, on planted effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from distillstudy.analysis import objective_stats as ob
from distillstudy.analysis import stats

SEEDS = range(5)
#: (model, objective, setting, temperature, hyper-parameters) of the objectives' settings
SETTINGS = {
    "kd": [("distilled", "T1", "1", {}), ("distilled", "T4", "4", {})],
    "logit_mse": [("logit_mse", "", "", {})],
    "dkd": [("dkd", "alpha1_beta2_T4", "4", {"dkd_alpha": 1, "beta": 2}),
            ("dkd", "alpha1_beta8_T4", "4", {"dkd_alpha": 1, "beta": 8})],
    "dist": [("dist", "beta1_gamma1_T4", "4", {"beta": 1, "gamma": 1})],
    "ls_kd": [("ls_kd", "T2", "2", {})],
    "nkd": [("nkd", "gamma1.5_T1", "1", {"gamma": 1.5})],
}
#: Planted (val, test) gains per (setting, alpha); everything absent gets 0. dkd beta 8 at
#: alpha 0.9 is large; kd T4 at 0.5 moderate; nkd hurts; ls_kd and logit_mse have none.
PLANTED = {("alpha1_beta8_T4", 0.9): (0.06, 0.05), ("alpha1_beta2_T4", 0.5): (0.03, 0.03),
           ("T4", 0.5): (0.02, 0.02), ("T1", 0.9): (0.01, 0.01), ("beta1_gamma1_T4", 0.5): (0.045, 0.045),
           ("gamma1.5_T1", 0.5): (-0.03, -0.03)}
#: Zero-mean, symmetric per-seed noise: a cell with no planted gain has a mean difference of 0.
NOISE = np.array([0.004, -0.004, 0.002, -0.002, 0.0])


def row(model, objective, setting, T, alpha, seed, split, metric, value, size=32, dataset="d", **hyper):
    return {"dataset": dataset, "model": model, "objective": objective, "setting": setting, "student_size": size,
            "temperature": T, "alpha": alpha, "beta": hyper.get("beta", ""), "gamma": hyper.get("gamma", ""),
            "dkd_alpha": hyper.get("dkd_alpha", ""), "seed": seed, "split": split, "metric": metric, "value": value}


def planted(size=32, dataset="d", alphas=(0.5, 0.9), planted=PLANTED, objectives=tuple(SETTINGS)) -> list[dict]:
    rows = []
    for seed in SEEDS:
        base = 0.70 + 0.03 * seed  # a large seed effect: mispairing would blow up every interval
        for split in ("val", "test"):
            rows.append(row("baseline", "", "", "", 0.0, seed, split, "accuracy", base, size, dataset))
            rows.append(row("baseline", "", "", "", 0.0, seed, split, "nll", 1.0, size, dataset))
        k = 0
        for objective in objectives:
            for model, setting, T, hyper in SETTINGS[objective]:
                for alpha in alphas:
                    k += 1
                    val, test = planted.get((setting, alpha), (0.0, 0.0))
                    e = NOISE[(seed + k) % len(NOISE)] * (1 + 0.1 * k)  # mean 0 over seeds, unlike per cell
                    for split, gain in (("val", val), ("test", test)):
                        acc = base + gain + e
                        rows.append(row(model, objective, setting, T, alpha, seed, split, "accuracy", acc, size,
                                        dataset, **hyper))
                        rows.append(row(model, objective, setting, T, alpha, seed, split, "nll", 1.0 - acc, size,
                                        dataset, **hyper))
    return rows


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=stats.COLUMNS)


def test_order_is_the_objectives_module_order():
    from distillstudy import objectives  # imports torch: here only, not in the report

    assert ob.ORDER == objectives.NAMES
    assert ob.objective_order(["nkd", "kd", "zzz", "dkd", ""]) == ["kd", "dkd", "nkd", "zzz"]


def test_a_planted_large_gain_is_selected_and_significant_and_matches_scipy():
    df = frame(planted())
    sel = ob.select_objectives(df)
    assert list(sel["objective"]) == list(ob.ORDER)
    dkd = sel[sel["objective"] == "dkd"].iloc[0]
    assert (dkd["setting"], dkd["alpha"], dkd["temperature"], dkd["model"]) == ("alpha1_beta8_T4", 0.9, "4", "dkd")
    assert dkd["n_candidates"] == 4 and dkd["n"] == 5
    assert bool(dkd["significant"]) and bool(dkd["holm_significant"])
    # from raw per-seed values: scipy's paired t-test gives the same interval and p-value
    cell = df[(df["setting"] == "alpha1_beta8_T4") & (df["alpha"] == 0.9) & (df["split"] == "test")
              & (df["metric"] == "accuracy")].sort_values("seed")["value"].to_numpy()
    base = df[(df["model"] == "baseline") & (df["split"] == "test") & (df["metric"] == "accuracy")
              ].sort_values("seed")["value"].to_numpy()
    res = st.ttest_rel(cell, base)
    assert (dkd["gain_lo"], dkd["gain_hi"]) == pytest.approx(tuple(res.confidence_interval(0.95)), rel=1e-10)
    assert dkd["p_value"] == pytest.approx(res.pvalue, rel=1e-10)
    assert dkd["gain_mean"] == pytest.approx(0.05 + NOISE.mean(), abs=1e-12)
    assert dkd["test_accuracy"] == pytest.approx(cell.mean()) and dkd["baseline_test_accuracy"] == pytest.approx(
        base.mean())


def test_a_planted_zero_effect_is_not_significant_and_a_harm_is_negative():
    sel = ob.select_objectives(frame(planted())).set_index("objective")
    for zero in ("ls_kd", "logit_mse"):
        r = sel.loc[zero]
        assert r["gain_mean"] == pytest.approx(0.0, abs=1e-12)
        assert not r["significant"] and not r["holm_significant"] and r["gain_lo"] < 0 < r["gain_hi"]
        assert r["p_value"] == pytest.approx(1.0)
    nkd = sel.loc["nkd"]
    assert nkd["setting"] == "gamma1.5_T1" and nkd["alpha"] == 0.9  # 0 beats -3 pp on validation
    kd = sel.loc["kd"]
    assert (kd["setting"], kd["alpha"]) == ("T4", 0.5)


def test_the_test_split_never_influences_the_selection():
    rows = planted()
    sel = ob.select_objectives(frame(rows))
    rng = np.random.default_rng(0)
    corrupted = [dict(r, value=rng.uniform(0, 1)) if r["split"] == "test" else r for r in rows]
    again = ob.select_objectives(frame(corrupted))
    keys = ["dataset", "student_size", "objective", "model", "setting", "temperature", "alpha", "n_candidates",
            "val_accuracy", "val_nll"]
    pd.testing.assert_frame_equal(sel[keys], again[keys])
    # a test split that would pick every other setting changes nothing either
    flipped = [dict(r, value=2 - r["value"]) if r["split"] == "test" else r for r in rows]
    pd.testing.assert_frame_equal(sel[keys], ob.select_objectives(frame(flipped))[keys])
    # and without any test rows the same settings are chosen (their gains are then n/a)
    no_test = ob.select_objectives(frame([r for r in rows if r["split"] != "test"]))
    pd.testing.assert_frame_equal(sel[keys], no_test[keys])
    assert no_test["gain_mean"].isna().all() and (no_test["n"] == 0).all()


def test_tie_breaks_nll_then_setting_numbers_then_alpha():
    flat = {}
    rows = planted(planted=flat, objectives=("dkd",))
    sel = ob.select_objectives(frame(rows)).iloc[0]
    # equal accuracy and nll everywhere: smaller setting numbers (beta 2), then smaller alpha
    assert (sel["setting"], sel["alpha"]) == ("alpha1_beta2_T4", 0.5)
    # lower validation nll wins before the setting order
    for r in rows:
        if r["setting"] == "alpha1_beta8_T4" and r["alpha"] == 0.9 and r["split"] == "val" and r["metric"] == "nll":
            r["value"] -= 0.1
    sel = ob.select_objectives(frame(rows)).iloc[0]
    assert (sel["setting"], sel["alpha"]) == ("alpha1_beta8_T4", 0.9)


def test_kd_selection_is_best_temperature_with_several_alphas_and_other_objectives():
    for gains in (PLANTED, {("T1", 0.9): (0.04, 0.0)}, {("T4", 0.9): (0.01, 0.02), ("T1", 0.5): (0.01, 0.03)}):
        df = frame(planted(planted=gains) + planted(size=64, planted=gains))
        sel = ob.select_objectives(df)
        kd = sel[sel["objective"] == "kd"].reset_index(drop=True)
        bt = stats.best_temperature(df)
        assert list(kd["temperature"]) == list(bt["temperature"]) and list(kd["alpha"]) == list(bt["alpha"])
        for c in ("gain_mean", "gain_lo", "gain_hi", "val_accuracy"):
            assert kd[c].tolist() == pytest.approx(bt[c].tolist(), rel=1e-12)


def test_selection_refuses_without_validation():
    rows = [r for r in planted(objectives=("kd", "dkd")) if not (r["objective"] == "dkd" and r["split"] == "val")]
    with pytest.raises(ValueError, match="validation"):
        ob.select_objectives(frame(rows))


def test_comparisons_pair_by_seed_and_match_scipy():
    df = frame(planted())
    sel = ob.select_objectives(df)
    cmp = ob.compare_objectives(df, sel)
    assert set(cmp["best"]) == {"dkd"}  # highest validation accuracy of the selected cells
    assert list(cmp["other"]) == ["kd", "logit_mse", "dist", "ls_kd", "nkd"]

    def test_values(setting, alpha):
        m = (df["setting"] == setting) & (df["alpha"] == alpha) & (df["split"] == "test") & (
            df["metric"] == "accuracy")
        return df[m].sort_values("seed")["value"].to_numpy()

    best = test_values("alpha1_beta8_T4", 0.9)
    for r in cmp.itertuples(index=False):
        o = sel[sel["objective"] == r.other].iloc[0]
        res = st.ttest_rel(best, test_values(o["setting"], o["alpha"]))
        assert (r.diff_lo, r.diff_hi) == pytest.approx(tuple(res.confidence_interval(0.95)), rel=1e-9)
        assert r.p_value == pytest.approx(res.pvalue, rel=1e-9) and r.n == 5
        assert r.told_apart == (res.confidence_interval(0.95).low > 0)
    sep = ob.separability(cmp).iloc[0]
    assert sep["best"] == "dkd" and sep["verdict"] in ("all", "some")
    assert "nkd" in sep["apart"] and "ls_kd" in sep["apart"]


def test_objectives_that_cannot_be_told_apart_are_said_to_be_so():
    gains = {("alpha1_beta8_T4", 0.9): (0.05, 0.05), ("beta1_gamma1_T4", 0.5): (0.049, 0.05)}
    df = frame(planted(planted=gains, objectives=("dkd", "dist")))
    cmp = ob.compare_objectives(df)
    assert len(cmp) == 1 and cmp.iloc[0]["other"] == "dist"
    r = cmp.iloc[0]
    assert not r["told_apart"] and r["diff_lo"] < 0 < r["diff_hi"]
    sep = ob.separability(cmp).iloc[0]
    assert sep["verdict"] == "none" and sep["apart"] == () and sep["not_apart"] == ("dist",)


def _with_p(p: float, n: int = 4) -> np.ndarray:
    """n differences whose two-sided one-sample t-test p-value is `p`."""
    v = np.arange(n) - (n - 1) / 2
    v = v / v.std(ddof=1)
    return st.t.isf(p / 2, n - 1) / math.sqrt(n) + v


def _check_holm(diffs: list) -> int:
    """ob.holm against statsmodels and scipy; returns how many comparisons had a p below
    their own rank's level after Holm had stopped (the case the frozen level is for)."""
    m = len(diffs)
    p = np.array([st.ttest_1samp(d, 0).pvalue for d in diffs])
    h = ob.holm(diffs, p, 0.95)
    reject, p_adj, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert h["p_holm"].to_numpy() == pytest.approx(p_adj, rel=1e-12)
    assert h["holm_significant"].tolist() == reject.tolist()
    assert [stats.excludes_zero(lo, hi) for lo, hi in zip(h["holm_lo"], h["holm_hi"])] == reject.tolist()
    # each interval is scipy's t interval at the stated level, the step-down level of its rank
    order = np.argsort(p, kind="stable")
    stop = next((k for k, i in enumerate(order, 1) if not reject[i]), m + 1)
    late = 0
    for k, i in enumerate(order, 1):
        level = 1 - 0.05 / (m - min(k, stop) + 1)
        assert h.loc[i, "holm_confidence"] == pytest.approx(level)
        ci = st.ttest_1samp(diffs[i], 0).confidence_interval(level)
        assert (h.loc[i, "holm_lo"], h.loc[i, "holm_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        if k > stop and p[i] < 0.05 / (m - k + 1):
            late += 1
            assert not h.loc[i, "holm_significant"] and not stats.excludes_zero(h.loc[i, "holm_lo"], h.loc[i, "holm_hi"])
    return late


def test_holm_agrees_with_statsmodels_and_its_intervals_with_its_decisions():
    # thresholds 0.05/3, 0.05/2, 0.05: Holm rejects the first, stops at the second, and the
    # third (0.04 < 0.05) is not rejected although its own rank's level would pass it
    assert _check_holm([_with_p(0.04), _with_p(0.01), _with_p(0.03)]) == 1
    assert _check_holm([_with_p(0.001), _with_p(0.002), _with_p(0.02)]) == 0  # all rejected
    rng = np.random.default_rng(7)
    for _ in range(15):  # multipletests runs gc.collect() on every call (statsmodels 0.15): a few families
        m = int(rng.integers(2, 8))
        _check_holm([rng.normal(rng.choice([0.0, 0.5, 1.0, 2.0]), 1.0, size=int(rng.integers(3, 9)))
                     for _ in range(m)])


def test_holm_leaves_out_comparisons_without_a_p_value():
    diffs = [np.array([1.0, 1.2, 0.9]), np.array([0.5]), np.array([0.2, 0.2, 0.2]), np.array([0.1, -0.1, 0.3])]
    p = [ob.p_value(d) for d in diffs]
    assert math.isnan(p[1]) and math.isnan(p[2])
    h = ob.holm(diffs, p)
    _, p_adj, _, _ = multipletests([p[0], p[3]], method="holm")
    assert h.loc[[0, 3], "p_holm"].tolist() == pytest.approx(p_adj.tolist())
    assert h.loc[[1, 2], "p_holm"].isna().all() and not h.loc[[1, 2], "holm_significant"].any()


def test_holm_family_is_one_dataset_of_one_student_family():
    df = frame(planted(dataset="a") + planted(size=64, dataset="a") + planted(dataset="b"))
    sel = ob.select_objectives(df)
    for ds, g in sel.groupby("dataset"):
        _, p_adj, _, _ = multipletests(g["p_value"].dropna(), method="holm")
        assert g["p_holm"].dropna().tolist() == pytest.approx(p_adj.tolist())
    assert (sel["dataset"] == "a").sum() == 12 and (sel["dataset"] == "b").sum() == 6
    cmp = ob.compare_objectives(df, sel)
    a = cmp[cmp["dataset"] == "a"]
    _, p_adj, _, _ = multipletests(a["p_value"], method="holm")
    assert a["p_holm"].tolist() == pytest.approx(p_adj.tolist())


def test_two_families_of_one_size_are_selected_compared_and_corrected_apart():
    """mlp and cnn students of the same size, seeds and cells on one dataset; the gains are
    planted in the mlp only (the cnn's are exactly zero on average). Each family gets its own
    selection, comparisons and Holm family, and the effect is found in the mlp alone."""
    df = frame(planted() + [{**r, "family": "cnn"} for r in planted(planted={})])
    sel = ob.select_objectives(df)
    assert list(dict.fromkeys(sel["family"])) == ["cnn", "mlp"] and (sel["n"] == len(SEEDS)).all()
    by = sel.set_index(["family", "objective"])
    assert by.loc[("mlp", "dkd"), "setting"] == "alpha1_beta8_T4" and by.loc[("mlp", "dkd"), "significant"]
    assert by.loc[("mlp", "dkd"), "gain_mean"] == pytest.approx(0.05, abs=1e-3)
    assert (by.loc["cnn", "gain_mean"].abs() < 1e-3).all() and not by.loc["cnn", "significant"].any()
    for _, g in sel.groupby(ob.HOLM_FAMILY):  # one Holm family per (dataset, student family)
        _, p_adj, _, _ = multipletests(g["p_value"].dropna(), method="holm")
        assert g["p_holm"].dropna().tolist() == pytest.approx(p_adj.tolist())
    cmp = ob.compare_objectives(df, sel)
    sep = ob.separability(cmp).set_index("family")
    assert sep.loc["mlp", "best"] == "dkd" and sep.loc["mlp", "verdict"] != "none"
    assert len(cmp[cmp["family"] == "cnn"]) == len(cmp[cmp["family"] == "mlp"]) == len(SETTINGS) - 1
