"""Paired statistics: hand-computed intervals, agreement with scipy, selection on
validation only, and pairing by seed regardless of row order."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from distillstudy.analysis import scoring
from distillstudy.analysis import stats

COLS = stats.COLUMNS


def row(model, size, T, alpha, seed, split, metric, value, dataset="d"):
    return {"dataset": dataset, "model": model, "student_size": size, "temperature": T, "alpha": alpha,
            "seed": seed, "split": split, "metric": metric, "value": value}


def frame(rows):
    return pd.DataFrame(rows, columns=COLS)


# --------------------------------------------------------------------------- paired_diff_ci


def test_ci_hand_computed_significant():
    # diffs 1, 2, 3, 4: mean 2.5; sd = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3) = 1.2909944;
    # se = sd / sqrt(4) = 0.6454972; t_{0.975, 3} = 3.1824463; half-width = 2.0542603
    ci = stats.paired_diff_ci([1, 2, 3, 4])
    assert ci["n"] == 4
    assert ci["mean"] == pytest.approx(2.5)
    assert ci["sd"] == pytest.approx(1.2909944, abs=1e-7)
    assert ci["lo"] == pytest.approx(2.5 - 2.0542603, abs=1e-7)  # 0.4457397
    assert ci["hi"] == pytest.approx(2.5 + 2.0542603, abs=1e-7)  # 4.5542603
    assert stats.excludes_zero(ci["lo"], ci["hi"])


def test_ci_hand_computed_not_significant():
    # diffs 0.02, 0.01, 0.03: mean 0.02, sd 0.01, se = 0.01 / sqrt(3) = 0.0057735;
    # t_{0.975, 2} = 4.3026527; half-width = 0.0248414 -> CI [-0.0048414, 0.0448414] contains 0
    ci = stats.paired_diff_ci(np.array([0.02, 0.01, 0.03]))
    assert ci["sd"] == pytest.approx(0.01)
    assert ci["lo"] == pytest.approx(-0.0048414, abs=1e-7)
    assert ci["hi"] == pytest.approx(0.0448414, abs=1e-7)
    assert not stats.excludes_zero(ci["lo"], ci["hi"])


def test_ci_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(0.8, 0.05, 7)
    b = a - rng.normal(0.01, 0.02, 7)
    ci = stats.paired_diff_ci(a - b, 0.9)
    res = st.ttest_rel(a, b)
    lo, hi = res.confidence_interval(0.9)
    assert (ci["lo"], ci["hi"]) == pytest.approx((lo, hi), rel=1e-10)
    d = a - b
    lo2, hi2 = st.t.interval(0.9, len(d) - 1, loc=d.mean(), scale=st.sem(d))
    assert (ci["lo"], ci["hi"]) == pytest.approx((lo2, hi2), rel=1e-10)


def test_ci_degenerate_and_bootstrap():
    one = stats.paired_diff_ci([0.3])
    assert one["n"] == 1 and one["mean"] == 0.3
    assert math.isnan(one["lo"]) and math.isnan(one["hi"]) and math.isnan(one["sd"])
    assert stats.paired_diff_ci([])["n"] == 0
    assert not stats.excludes_zero(float("nan"), float("nan"))
    d = np.random.default_rng(0).normal(1.0, 1.0, 20)
    b1 = stats.paired_diff_ci(d, bootstrap=True)
    b2 = stats.paired_diff_ci(d, bootstrap=True)
    assert b1 == b2  # fixed generator seed
    t = stats.paired_diff_ci(d)
    assert b1["lo"] != t["lo"] and b1["lo"] < b1["mean"] < b1["hi"]
    # below n = 10 the bootstrap flag falls back to the t interval
    assert stats.paired_diff_ci(d[:5], bootstrap=True) == stats.paired_diff_ci(d[:5])


# --------------------------------------------------------------------------- paired gains


def _pairing_rows():
    """Baseline values differ a lot between seeds; diffs are small and constant-ish,
    so any mispairing blows up the CI."""
    base = {0: 0.50, 1: 0.70, 2: 0.90}
    gain = {0: 0.010, 1: 0.020, 2: 0.015}
    rows = []
    for s in base:
        rows.append(row("baseline", 16, "", 0.0, s, "test", "accuracy", base[s]))
        rows.append(row("distilled", 16, "2", 0.5, s, "test", "accuracy", base[s] + gain[s]))
        rows.append(row("logit_mse", 16, "", 0.5, s, "test", "accuracy", base[s] - 0.01))
        rows.append(row("teacher", "", "", "", s, "test", "accuracy", 0.95)) if s == 0 else None
    return rows


def test_paired_gains_pairs_by_seed_and_ignores_row_order():
    df = frame(_pairing_rows())
    g = stats.paired_gains(df, "accuracy", "test")
    d = g[g["model"] == "distilled"].iloc[0]
    exp = stats.paired_diff_ci([0.010, 0.020, 0.015])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(exp["mean"]) and d["lo"] == pytest.approx(exp["lo"])
    assert d["hi"] == pytest.approx(exp["hi"]) and bool(d["significant"])
    lm = g[g["model"] == "logit_mse"].iloc[0]
    assert lm["mean"] == pytest.approx(-0.01) and lm["sd"] == pytest.approx(0, abs=1e-12)
    for k in range(5):
        shuffled = df.sample(frac=1.0, random_state=k).reset_index(drop=True)
        g2 = stats.paired_gains(shuffled, "accuracy", "test")
        pd.testing.assert_frame_equal(g, g2)


def test_paired_gains_sign_convention_for_nll():
    rows = []
    for s in range(3):
        rows.append(row("baseline", 8, "", 0.0, s, "test", "nll", 1.0 + s))
        rows.append(row("distilled", 8, "4", 0.9, s, "test", "nll", 0.8 + s + 0.01 * s))
    g = stats.paired_gains(frame(rows), "nll", "test")
    assert g.iloc[0]["mean"] < 0  # distilled - baseline: lower nll => negative


def test_paired_gains_only_common_seeds_and_duplicates_rejected():
    rows = _pairing_rows() + [row("distilled", 16, "2", 0.5, 7, "test", "accuracy", 0.99)]  # no baseline seed 7
    g = stats.paired_gains(frame(rows), "accuracy", "test")
    assert int(g[g["model"] == "distilled"].iloc[0]["n"]) == 3
    dup = _pairing_rows() + [row("baseline", 16, "", 0.0, 0, "test", "accuracy", 0.1)]
    with pytest.raises(ValueError, match="duplicate"):
        stats.paired_gains(frame(dup), "accuracy", "test")


def test_load_results_keeps_temperature_strings(tmp_path):
    rows = [row("teacher", "", "", "", 0, "train", "mean_max_prob", 0.97, dataset="NA")]
    for s in range(2):
        rows.append(row("baseline", 32, "", 0, s, "test", "accuracy", 0.5, dataset="NA"))
        for T in ("2.5", "16", "2"):
            rows.append(row("distilled", 32, T, 0.5, s, "test", "accuracy", 0.6, dataset="NA"))
    p = tmp_path / "results.csv"
    frame(rows).to_csv(p, index=False)
    df = stats.load_results(p)
    assert set(df["dataset"]) == {"NA"}
    assert set(df.loc[df["model"] == "distilled", "temperature"]) == {"2.5", "16", "2"}
    assert df.loc[df["model"] == "teacher", "student_size"].isna().all()
    g = stats.paired_gains(df, "accuracy", "test")
    assert list(g["temperature"]) == ["2", "2.5", "16"]  # numeric order, strings kept


# --------------------------------------------------------------------------- best temperature


def _selection_rows(val, test, nll=None, baseline_test=0.70, size=32, dataset="d"):
    """val/test: {T: accuracy}; three seeds with a small seed effect."""
    rows = []
    for s in range(3):
        e = 0.001 * s
        rows.append(row("baseline", size, "", 0.0, s, "test", "accuracy", baseline_test + e, dataset))
        rows.append(row("baseline", size, "", 0.0, s, "val", "accuracy", baseline_test + e, dataset))
        for T in val:
            rows.append(row("distilled", size, T, 0.5, s, "val", "accuracy", val[T] + e, dataset))
            rows.append(row("distilled", size, T, 0.5, s, "test", "accuracy", test[T] + e + 0.002 * (s == 1), dataset))
            rows.append(row("distilled", size, T, 0.5, s, "val", "nll", (nll or {}).get(T, 0.5), dataset))
    return rows


def test_best_temperature_selects_on_validation_not_test():
    # validation prefers T=1, test would prefer T=4: the answer must be T=1
    rows = _selection_rows(val={"1": 0.80, "4": 0.70}, test={"1": 0.72, "4": 0.90})
    bt = stats.best_temperature(frame(rows))
    assert len(bt) == 1
    r = bt.iloc[0]
    assert r["temperature"] == "1"
    assert r["val_accuracy"] == pytest.approx(0.801)
    assert r["n_candidates"] == 2
    # its *test* gain: diffs 0.02, 0.022, 0.02 over baseline
    exp = stats.paired_diff_ci([0.02, 0.022, 0.02])
    assert r["gain_mean"] == pytest.approx(exp["mean"])
    assert r["gain_lo"] == pytest.approx(exp["lo"]) and r["gain_hi"] == pytest.approx(exp["hi"])
    assert r["test_accuracy"] == pytest.approx(0.72 + 0.001 + 0.002 / 3)
    best = stats.best_configuration(frame(rows))
    assert best.iloc[0]["temperature"] == "1"


def test_best_temperature_tie_breaks():
    # equal validation accuracy -> lower validation nll wins (T=4)
    rows = _selection_rows(val={"1": 0.8, "4": 0.8}, test={"1": 0.9, "4": 0.7}, nll={"1": 0.6, "4": 0.4})
    assert stats.best_temperature(frame(rows)).iloc[0]["temperature"] == "4"
    # equal accuracy and nll -> lower T, compared numerically ("2" < "16")
    rows = _selection_rows(val={"16": 0.8, "2": 0.8}, test={"16": 0.9, "2": 0.7})
    assert stats.best_temperature(frame(rows)).iloc[0]["temperature"] == "2"


def test_best_temperature_refuses_without_validation():
    rows = [r for r in _selection_rows(val={"1": 0.8}, test={"1": 0.7}) if r["split"] != "val"]
    with pytest.raises(ValueError, match="validation"):
        stats.best_temperature(frame(rows))


def test_best_configuration_across_sizes():
    rows = (_selection_rows(val={"1": 0.80, "2": 0.82}, test={"1": 0.8, "2": 0.8}, size=16)
            + _selection_rows(val={"1": 0.85, "2": 0.84}, test={"1": 0.8, "2": 0.8}, size=64))
    bt = stats.best_temperature(frame(rows))
    assert list(bt["student_size"]) == [16, 64]
    assert list(bt["temperature"]) == ["2", "1"]
    best = stats.best_configuration(frame(rows)).iloc[0]
    assert (int(best["student_size"]), best["temperature"]) == (64, "1")


def test_teacher_summary():
    rows = [row("teacher", "", "", "", 0, "train", "mean_max_prob", 0.995),
            row("teacher", "", "", "", 0, "test", "accuracy", 0.91),
            row("baseline", 8, "", 0.0, 0, "test", "accuracy", 0.8)]
    t = stats.teacher_summary(frame(rows)).iloc[0]
    assert t["train_mean_max_prob"] == pytest.approx(0.995) and t["test_accuracy"] == pytest.approx(0.91)
    assert math.isnan(t["test_nll"])


# --------------------------------------------------------------------------- additions: scipy, selection, calibration


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_paired_gains_table_matches_scipy_ttest_rel(confidence):
    """From raw per-seed values through the table: the cell's CI is scipy's paired t interval."""
    rng = np.random.default_rng(11)
    base = rng.normal(0.7, 0.05, 6)
    cell = base + rng.normal(0.01, 0.01, 6)
    rows = [row("baseline", 32, "", 0.0, s, "test", "accuracy", base[s]) for s in range(6)]
    rows += [row("distilled", 32, "4", 0.9, s, "test", "accuracy", cell[s]) for s in range(6)]
    g = stats.paired_gains(frame(rows[::-1]), "accuracy", "test", confidence=confidence).iloc[0]
    lo, hi = st.ttest_rel(cell, base).confidence_interval(confidence)
    assert (g["lo"], g["hi"]) == pytest.approx((lo, hi), rel=1e-10)
    assert g["mean"] == pytest.approx(np.mean(cell - base), rel=1e-12)
    assert bool(g["significant"]) == (lo > 0 or hi < 0)


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    d = np.random.default_rng(5).normal(0.5, 1.0, 30)
    ours = stats.paired_diff_ci(d, 0.95, bootstrap=True, n_boot=20_000)
    ref = st.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=20_000, method="percentile",
                       random_state=np.random.default_rng(1)).confidence_interval
    se = d.std(ddof=1) / math.sqrt(len(d))
    # different resamples: the ends agree to Monte-Carlo error, a few hundredths of a standard error
    assert ours["lo"] == pytest.approx(ref.low, abs=0.05 * se)
    assert ours["hi"] == pytest.approx(ref.high, abs=0.05 * se)


def test_best_configuration_selects_on_validation_when_test_disagrees_across_sizes():
    # size 16 wins on validation (0.90 vs 0.85) but size 64 would win on test (0.95 vs 0.75)
    rows = (_selection_rows(val={"2": 0.90, "8": 0.70}, test={"2": 0.75, "8": 0.99}, size=16)
            + _selection_rows(val={"2": 0.80, "8": 0.85}, test={"2": 0.70, "8": 0.95}, size=64))
    bt = stats.best_temperature(frame(rows))
    assert list(bt["temperature"]) == ["2", "8"]  # per size, by validation: not T=8 for size 16
    best = stats.best_configuration(frame(rows)).iloc[0]
    assert (int(best["student_size"]), best["temperature"]) == (16, "2")
    assert best["test_accuracy"] == pytest.approx(0.75 + 0.001 + 0.002 / 3)


def test_metrics_json_summary_selects_on_validation():
    """evaluate.summarise (what `dvc metrics show` prints) also picks T on validation."""

    rows = _selection_rows(val={"1": 0.80, "4": 0.70}, test={"1": 0.72, "4": 0.90})
    rows += [row("teacher", "", "", "", 0, s, m, v) for s, m, v in
             (("test", "accuracy", 0.95), ("train", "mean_max_prob", 0.99))]
    df = frame(rows).astype({"student_size": str, "temperature": str})  # as evaluate.run types it
    summary = scoring.summarise(df)["d"]["h32"]
    assert summary["best_temperature_on_val"] == "1"
    assert summary["best_test_accuracy"] == pytest.approx(0.72 + 0.001 + 0.002 / 3)


def test_pooled_reliability_hand_computed():
    def cal(seed, b, count, conf, acc, model="baseline"):
        return {"dataset": "d", "model": model, "student_size": 8, "temperature": "", "alpha": 0.0, "seed": seed,
                "split": "test", "bin": b, "bin_lower": b / 2, "bin_upper": (b + 1) / 2, "count": count,
                "mean_confidence": conf, "accuracy": acc}
    # two bins, two seeds: bin 0 pools 2 + 6 predictions, bin 1 pools 8 + 4
    rows = [cal(0, 0, 2, 0.40, 0.5), cal(0, 1, 8, 0.90, 1.0), cal(1, 0, 6, 0.48, 0.5), cal(1, 1, 4, 0.75, 0.5),
            cal(0, 0, 0, np.nan, np.nan, model="distilled")]
    c = pd.DataFrame(rows, columns=stats.CALIBRATION_COLUMNS)
    p = stats.pooled_reliability(c, "d", "baseline", 8, "", 0.0)
    assert list(p["count"]) == [8, 12]
    assert p["mean_confidence"].tolist() == pytest.approx([(0.8 + 2.88) / 8, (7.2 + 3.0) / 12])
    assert p["accuracy"].tolist() == pytest.approx([0.5, (8 + 2) / 12])
    ece = (8 * abs(0.5 - 0.46) + 12 * abs(10 / 12 - 0.85)) / 20
    assert p.attrs["ece"] == pytest.approx(ece) and p.attrs["n_seeds"] == 2 and p.attrs["n"] == 20
    assert stats.pooled_reliability(c, "d", "teacher").empty


# --------------------------------------------------------------------------- the objectives contract (issue 13)

OLD_COLUMNS = ["dataset", "model", "student_size", "temperature", "alpha", "seed", "split", "metric", "value"]


def test_old_tables_are_read_as_the_kd_grid_they_describe(tmp_path):
    """A results.csv written before the objectives columns: objective from the model,
    a distilled row's setting "T" + its temperature, beta/gamma/dkd_alpha NaN."""
    rows = [row("teacher", "", "", "", 0, "test", "accuracy", 0.9), row("baseline", 8, "", 0.0, 0, "test", "accuracy", 0.7),
            row("distilled", 8, "2.0", 0.5, 0, "test", "accuracy", 0.75),
            row("logit_mse", 8, "", 0.5, 0, "test", "accuracy", 0.72)]
    p = tmp_path / "old.csv"
    pd.DataFrame(rows)[OLD_COLUMNS].to_csv(p, index=False)
    df = stats.load_results(p)
    assert list(df.columns) == stats.COLUMNS
    assert list(df["objective"]) == ["", "", "kd", "logit_mse"]
    assert list(df["setting"]) == ["", "", "T2", ""]
    assert df[["beta", "gamma", "dkd_alpha"]].isna().all().all()
    # the same rows as a frame with the new columns left empty (what tests' `frame` builds)
    pd.testing.assert_frame_equal(stats.normalise_results(frame(rows)), df)
    with pytest.raises(ValueError, match="lacks columns"):
        stats.normalise_results(pd.DataFrame(rows).drop(columns="alpha"))


def test_new_columns_are_kept_and_a_cell_is_keyed_by_setting():
    """Two dkd settings at the same temperature and alpha are two cells, not a duplicate."""
    rows = []
    for s in range(3):
        rows.append(row("baseline", 8, "", 0.0, s, "test", "accuracy", 0.7 + 0.1 * s))
        for beta, gain in ((2, 0.01), (8, 0.03)):
            r = row("dkd", 8, "4", 0.5, s, "test", "accuracy", 0.7 + 0.1 * s + gain)
            rows.append({**r, "objective": "dkd", "setting": f"alpha1_beta{beta}_T4", "beta": beta, "gamma": "",
                         "dkd_alpha": 1})
    df = stats.normalise_results(frame(rows))
    assert set(df.loc[df["model"] == "dkd", "beta"]) == {2.0, 8.0} and df["gamma"].isna().all()
    g = stats.paired_gains(df, "accuracy", "test")
    assert list(g["setting"]) == ["alpha1_beta2_T4", "alpha1_beta8_T4"]
    assert g["mean"].tolist() == pytest.approx([0.01, 0.03])
    assert set(stats.STUDENT_MODELS) == {"distilled", "logit_mse", "dkd", "dist", "ls_kd", "nkd"}


def test_best_temperature_with_several_alphas_and_other_objectives_present():
    rows = []
    for s in range(3):
        e = 0.001 * s
        for split in ("val", "test"):
            rows.append(row("baseline", 32, "", 0.0, s, split, "accuracy", 0.7 + e))
            for T, alpha, val, test in (("1", 0.5, 0.75, 0.80), ("1", 0.9, 0.78, 0.71), ("4", 0.5, 0.77, 0.90),
                                        ("4", 0.9, 0.74, 0.95)):
                rows.append(row("distilled", 32, T, alpha, s, split, "accuracy", (val if split == "val" else test) + e))
            # another objective, better on validation than any kd cell: not kd's business
            rows.append({**row("nkd", 32, "4", 0.9, s, split, "accuracy", 0.99), "objective": "nkd",
                         "setting": "gamma1.5_T4", "gamma": 1.5})
    bt = stats.best_temperature(frame(rows)).iloc[0]
    assert (bt["temperature"], bt["alpha"], bt["n_candidates"]) == ("1", 0.9, 4)
    assert bt["gain_mean"] == pytest.approx(0.01)


def test_metrics_json_lists_each_objective_chosen_on_validation():
    rows = _selection_rows(val={"1": 0.80, "4": 0.70}, test={"1": 0.72, "4": 0.90})
    for s in range(3):
        for split, acc in (("val", 0.9), ("test", 0.6)):
            rows.append({**row("logit_mse", 32, "", 0.5, s, split, "accuracy", acc + 0.001 * s), "objective": "logit_mse"})
    summary = scoring.summarise(frame(rows))["d"]["h32"]["objectives"]
    assert list(summary) == ["kd", "logit_mse"]
    assert summary["kd"]["setting"] == "T1" and summary["kd"]["alpha"] == 0.5
    assert summary["kd"]["test_gain"] == pytest.approx(0.02 + 0.002 / 3)
    assert summary["logit_mse"] == {"setting": "", "alpha": 0.5, "test_gain": pytest.approx(-0.1),
                                    "test_gain_ci95": [pytest.approx(-0.1), pytest.approx(-0.1)]}


def test_calibration_old_and_new_tables_and_reliability_keyed_by_setting(tmp_path):
    def cal(model, setting, seed, count, extra=None):
        return {"dataset": "d", "model": model, "student_size": 8, "temperature": "4", "alpha": 0.5, "seed": seed,
                "split": "test", "bin": 0, "bin_lower": 0.0, "bin_upper": 1.0, "count": count,
                "mean_confidence": 0.8, "accuracy": 0.5, "objective": model, "setting": setting, **(extra or {})}
    new = pd.DataFrame([cal("dkd", "alpha1_beta2_T4", 0, 10), cal("dkd", "alpha1_beta8_T4", 0, 30)],
                       columns=stats.CALIBRATION_COLUMNS)
    new.to_csv(tmp_path / "new.csv", index=False)
    c = stats.load_calibration(tmp_path / "new.csv")
    assert list(c.columns) == stats.CALIBRATION_COLUMNS
    assert stats.pooled_reliability(c, "d", "dkd", 8, "4", 0.5).attrs["n"] == 40  # no setting: both pooled
    assert stats.pooled_reliability(c, "d", "dkd", 8, "4", 0.5, setting="alpha1_beta8_T4").attrs["n"] == 30
    old = pd.DataFrame([cal("distilled", "", 0, 5)]).drop(columns=["objective", "setting"])
    old.to_csv(tmp_path / "old.csv", index=False)
    o = stats.load_calibration(tmp_path / "old.csv")
    assert (o["objective"].iloc[0], o["setting"].iloc[0]) == ("kd", "T4") and math.isnan(o["beta"].iloc[0])
    assert o["family"].iloc[0] == "mlp" and c["family"].tolist() == ["mlp", "mlp"]  # neither table had one
    assert stats.pooled_reliability(o, "d", "distilled", 8, "4", 0.5, setting="T4").attrs["n"] == 5


# --------------------------------------------------------------------------- student families


def test_old_tables_read_as_mlp_students_and_the_teacher_without_family(tmp_path):
    rows = [row("teacher", "", "", "", 0, "test", "accuracy", 0.9),
            row("baseline", 8, "", 0.0, 0, "test", "accuracy", 0.7),
            row("distilled", 8, "2", 0.5, 0, "test", "accuracy", 0.75)]
    pd.DataFrame(rows).drop(columns="family", errors="ignore").to_csv(tmp_path / "old.csv", index=False)
    df = stats.load_results(tmp_path / "old.csv")
    assert list(df["family"]) == ["", stats.LEGACY_FAMILY, stats.LEGACY_FAMILY] == ["", "mlp", "mlp"]
    assert list(df.columns) == stats.COLUMNS and df.columns[1] == "family"


def test_a_results_table_without_family_gives_the_statistics_it_gave_before(tmp_path):
    """An older results.csv (no `family`) and the same rows written with family "mlp":
    every statistic the report computes is the same, and the family column reads "mlp"."""
    from synthetic import synthetic_results
    from distillstudy.analysis import objective_stats
    new = synthetic_results("toy")
    assert set(new["family"]) == {"", "mlp"}
    new.to_csv(tmp_path / "new.csv", index=False)
    new.drop(columns="family").to_csv(tmp_path / "old.csv", index=False)
    old_df, new_df = stats.load_results(tmp_path / "old.csv"), stats.load_results(tmp_path / "new.csv")
    pd.testing.assert_frame_equal(old_df, new_df)
    for f in (lambda d: stats.paired_gains(d, "accuracy", "test"), stats.best_temperature, stats.best_configuration,
              objective_stats.select_objectives, lambda d: stats.cell_summary(d, "nll", "test")):
        a, b = f(old_df), f(new_df)
        pd.testing.assert_frame_equal(a, b)
        assert set(a["family"]) <= {"", "mlp"}
    # the numbers are today's: kd's planted +2 pp at T = 4, size 16, alpha 0.5
    g = stats.paired_gains(old_df, "accuracy", "test", models=("distilled",))
    kd = g[(g["student_size"] == 16) & (g["temperature"] == "4") & (g["alpha"] == 0.5)].iloc[0]
    assert kd["mean"] == pytest.approx(0.02, abs=0.004) and kd["n"] == 3
    assert scoring.summarise(old_df) == scoring.summarise(new_df)
    assert set(scoring.summarise(old_df)["toy"]) == {"teacher", "h16", "h64"}


def test_two_families_sharing_sizes_are_paired_and_selected_apart():
    """mlp and cnn students of the same sizes and seeds on one dataset; the objectives'
    gains are planted in the cnn only (kd T = 4 at alpha 0.5: +2 pp at size 16, +1 pp
    at 64), and the cnn is 2 pp more accurate overall. Each family is paired with its
    own baseline and the effect is found in the cnn alone."""
    from synthetic import two_family_results
    from distillstudy.analysis import objective_stats
    df = stats.normalise_results(two_family_results("toy"))
    g = stats.paired_gains(df, "accuracy", "test", models=("distilled",))
    assert (g["n"] == 3).all()  # each cell paired with its own family's 3 seeds, never with 6
    assert len(g) == 2 * 2 * 2 * 2  # families x sizes x temperatures x alphas
    kd = g[(g["temperature"] == "4") & (g["alpha"] == 0.5)].set_index(["family", "student_size"])
    assert kd.loc[("cnn", 16), "mean"] == pytest.approx(0.02, abs=0.004) and kd.loc[("cnn", 16), "significant"]
    assert kd.loc[("cnn", 64), "mean"] == pytest.approx(0.01, abs=0.004)
    assert abs(kd.loc[("mlp", 16), "mean"]) < 0.004 and abs(kd.loc[("mlp", 64), "mean"]) < 0.004
    # the cnn's baseline is its own (2 pp above the mlp's), not a mix of the two
    assert kd.loc[("cnn", 16), "baseline_mean"] - kd.loc[("mlp", 16), "baseline_mean"] == pytest.approx(0.02, abs=0.01)

    bt = stats.best_temperature(df).set_index(["family", "student_size"])
    assert list(bt.index) == [("cnn", 16), ("cnn", 64), ("mlp", 16), ("mlp", 64)]
    assert (bt.loc["cnn", "temperature"] == "4").all() and bt.loc["cnn", "significant"].all()
    assert (bt.loc["mlp", "gain_mean"].abs() < 0.004).all()
    assert list(stats.best_configuration(df)["family"]) == ["cnn", "mlp"]

    sel = objective_stats.select_objectives(df).set_index(["family", "student_size", "objective"])
    assert sel.loc[("cnn", 16, "dkd"), "gain_mean"] == pytest.approx(0.03, abs=0.004)
    assert sel.loc[("cnn", 16, "dkd"), "significant"]
    assert (sel.loc["mlp", "gain_mean"].abs() < 0.004).all()
    # Holm: one family of claims per (dataset, student family), as each panel of the report
    assert set(sel.reset_index().groupby(objective_stats.HOLM_FAMILY).size()) == {2 * 6}

    summary = scoring.summarise(df)["toy"]
    assert set(summary) == {"teacher", "h16", "h64", "cnn-16", "cnn-64"}
    assert summary["cnn-16"]["best_gain"] == pytest.approx(bt.loc[("cnn", 16), "gain_mean"])
    assert abs(summary["h16"]["best_gain"]) < 0.004

    # without the family column the two would be one student with two baselines per seed
    with pytest.raises(ValueError, match="duplicate baseline"):
        stats.paired_gains(df.drop(columns="family"), "accuracy", "test")


def test_sorting_puts_the_teacher_first_then_families_alphabetically():
    from synthetic import two_family_results
    raw = two_family_results("toy").sample(frac=1.0, random_state=0).astype({"student_size": str,
                                                                               "temperature": str})
    out = scoring.sort_results(raw)
    assert list(dict.fromkeys(out["family"])) == ["", "cnn", "mlp"]
    assert (out.loc[out["family"] == "", "model"] == "teacher").all()
    cells = stats.cell_summary(raw, "accuracy", "test")
    assert list(dict.fromkeys(cells["family"])) == ["", "cnn", "mlp"]


def test_pooled_reliability_keeps_two_families_of_one_size_apart():
    def cal(family, count):
        return {"dataset": "d", "family": family, "model": "baseline", "student_size": 16, "temperature": "",
                "alpha": 0.0, "seed": 0, "split": "test", "bin": 0, "bin_lower": 0.0, "bin_upper": 1.0,
                "count": count, "mean_confidence": 0.8, "accuracy": 0.5}
    c = pd.DataFrame([cal("mlp", 10), cal("cnn", 30)], columns=stats.CALIBRATION_COLUMNS)
    assert stats.pooled_reliability(c, "d", "baseline", 16, family="cnn").attrs["n"] == 30
    assert stats.pooled_reliability(c, "d", "baseline", 16, family="mlp").attrs["n"] == 10
    assert stats.pooled_reliability(c, "d", "baseline", 16).attrs["n"] == 40  # None: any family
