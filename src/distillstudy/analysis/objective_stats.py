"""Which objective? Each objective's hyper-parameters and mixing weight chosen on
validation, its test gain over the baseline, and the objectives compared with each other.

    >>> sel = select_objectives(df)        # one row per (dataset, family, student_size, objective)
    >>> cmp = compare_objectives(df, sel)  # the validation-best objective against each other one
    >>> separability(cmp)                  # per (dataset, family, student_size): which can be told apart

A student is (dataset, family, student_size): two families that share a size are
different students (stats.PAIR), selected and compared apart.

Selection (`select_objectives`), per (dataset, family, student_size, objective): among the
objective's cells (setting, alpha), the highest mean *validation* accuracy over seeds;
ties (means equal to 1e-12): lower mean validation NLL, then the setting's numbers in
ascending order (dkd_alpha, beta, gamma, temperature: the order `setting` spells them),
then the lower mixing weight alpha, then the setting's name. For kd this is exactly
`stats.best_temperature`'s rule. The test split plays no part in any choice.

Gain: the selected cell's test accuracy minus the baseline's, paired by seed,
with the Student-t interval of `stats.paired_diff_ci`, and the two-sided paired t-test
p-value (scipy.stats.ttest_1samp of the differences against 0).

Comparison (`compare_objectives`), per (dataset, family, student_size): the objective with the
highest validation accuracy among the selected ones (ties: lower validation NLL, then
ORDER) against each other objective: d(seed) = test accuracy(best) - test accuracy(other),
over the seeds both have (same seed = same initialisation and batch order), with its
t interval and p-value. Two objectives "can be told apart" when that interval excludes 0.

Many comparisons: a table of sizes x objectives makes many claims at once. `holm` gives,
within each Holm family, Holm's step-down adjusted p-values (statsmodels' multipletests,
method "holm") and Holm-consistent intervals (see `holm`). A Holm family is everything one
table of the report claims (HOLM_FAMILY: one dataset's students of one student family):
all its per-objective gains over the baseline, and separately all its best-versus-other
comparisons, across every student size.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st
from statsmodels.stats.multitest import multipletests

from distillstudy.analysis import stats
from distillstudy.grid import HYPER_ABBREV, HYPER_COLUMN, OBJECTIVES, number_value

#: The objectives in the report's column order (the vocabulary's, as distillstudy.objectives.NAMES).
ORDER = OBJECTIVES
#: One row of the objectives table: one student (as stats.PAIR, less the seed).
GROUP = ["dataset", "family", "student_size"]
#: A Holm family: every claim of one table of the report (one dataset's students of one family).
HOLM_FAMILY = ["dataset", "family"]
#: The numbers a setting is made of, in the order its name spells them.
SETTING_NUMBERS = [HYPER_COLUMN[key] for key in HYPER_ABBREV]
HOLM_COLUMNS = ["p_holm", "holm_confidence", "holm_lo", "holm_hi", "holm_significant"]
SELECTION_COLUMNS = GROUP + [
    "objective", "model", "setting", "temperature", "alpha", "n_candidates", "val_accuracy", "val_nll",
    "test_accuracy", "baseline_test_accuracy", "n", "gain_mean", "gain_sd", "gain_lo", "gain_hi", "significant",
    "p_value"] + HOLM_COLUMNS
COMPARISON_COLUMNS = GROUP + [
    "best", "other", "n", "diff_mean", "diff_sd", "diff_lo", "diff_hi", "told_apart", "p_value"] + HOLM_COLUMNS


def objective_order(names) -> list[str]:
    """ORDER's objectives among `names`, then any others alphabetically."""
    names = set(names) - {""}
    return [o for o in ORDER if o in names] + sorted(names - set(ORDER))


def p_value(diffs) -> float:
    """Two-sided p-value of the paired t-test that the mean difference is 0
    (scipy.stats.ttest_1samp). NaN with fewer than two differences, or when they are
    equal to rounding (sd <= 1e-12 max |d|: the t statistic is then undefined, or an
    artefact of float rounding that scipy warns about)."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if d.size < 2 or not d.std(ddof=1) > 1e-12 * np.abs(d).max():
        return float("nan")
    return float(_st.ttest_1samp(d, 0.0).pvalue)


def holm(diffs: list, p_values, confidence: float = 0.95) -> pd.DataFrame:
    """Holm's correction over ONE family of paired comparisons, at family-wise level
    a = 1 - confidence. `diffs[i]` are comparison i's per-seed differences, `p_values[i]`
    its p-value. Returns, aligned with the input, p_holm (statsmodels' Holm-adjusted
    p-value), holm_significant (Holm rejects at level a), and holm_lo, holm_hi: the
    paired t interval at confidence holm_confidence = 1 - a / (m - min(k, k*) + 1),
    where m counts the comparisons with a p-value, k is the comparison's rank by
    p-value (ties in input order) and k* the first rank Holm does not reject.

    That level is the one at which Holm's step-down tests rank k (a / (m - k + 1)),
    frozen at the step where it stops; so each interval excludes 0 exactly when Holm
    rejects (the t interval at 1 - g excludes 0 iff p < g). Limits: they carry Holm's
    decisions, not a joint coverage guarantee: all intervals cover together with
    probability >= 1 - a only at Bonferroni's level 1 - a / m, the level of the first
    rank; later ranks get narrower ones. A comparison without a p-value (under two seeds,
    or identical differences) is left out of the family: NaN, not significant.
    """
    p = np.asarray(p_values, dtype=float)
    cols = {"p_holm": [np.nan] * len(p), "holm_confidence": [np.nan] * len(p), "holm_lo": [np.nan] * len(p),
            "holm_hi": [np.nan] * len(p), "holm_significant": [False] * len(p)}
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size:
        a = 1.0 - confidence
        reject, p_adj, _, _ = multipletests(p[idx], alpha=a, method="holm")
        m = idx.size
        ranks = np.argsort(p[idx], kind="stable")  # positions in idx, smallest p first
        stop = next((k for k, j in enumerate(ranks, 1) if not reject[j]), m + 1)
        for k, j in enumerate(ranks, 1):
            level = 1.0 - a / (m - min(k, stop) + 1)
            ci = stats.paired_diff_ci(diffs[idx[j]], level)
            for c, v in zip(cols, (float(p_adj[j]), level, ci["lo"], ci["hi"], bool(reject[j]))):
                cols[c][idx[j]] = v
    return pd.DataFrame(cols, index=range(len(p)))


def _with_holm(frame: pd.DataFrame, diffs: list, confidence: float) -> pd.DataFrame:
    """`frame` (one row per comparison, a p_value column) with HOLM_COLUMNS, one family
    per HOLM_FAMILY group."""
    frame = frame.reset_index(drop=True)
    parts = [holm([diffs[i] for i in g.index], g["p_value"].to_numpy(), confidence).set_axis(g.index)
             for _, g in frame.groupby(HOLM_FAMILY, sort=False)]
    columns = pd.concat(parts) if parts else holm([], [], confidence)
    return frame.join(columns)


def _key(x: float) -> float:
    """Means from different seeds may differ by an ulp: compared at 1e-12 (as stats.best_temperature)."""
    return math.inf if math.isnan(x) else round(float(x), 12)


def _candidates(df: pd.DataFrame) -> pd.DataFrame:
    """Every student cell with its mean validation accuracy and NLL (NaN when absent)."""
    students = df[df["objective"] != ""]
    keys = GROUP + ["objective", "model", "setting", "temperature", "alpha"]
    val = students[students["split"] == "val"]
    acc = val[val["metric"] == "accuracy"].groupby(keys, dropna=False)["value"].mean().rename("val_accuracy")
    nll = val[val["metric"] == "nll"].groupby(keys, dropna=False)["value"].mean().rename("val_nll")
    hyper = students.groupby(keys, dropna=False)[SETTING_NUMBERS[:-1]].first()
    cells = students[keys].drop_duplicates().set_index(keys)
    return cells.join([acc, nll, hyper]).reset_index()


def _rank_key(r) -> tuple:
    numbers = tuple(-math.inf if math.isnan(v) else v for v in
                    (r.dkd_alpha, r.beta, r.gamma, number_value(r.temperature)))
    return (-_key(r.val_accuracy), _key(r.val_nll), numbers,
            math.inf if math.isnan(r.alpha) else r.alpha, r.setting)


def select_objectives(results_df: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family, student_size, objective) the cell chosen on validation (the
    rule in the module docstring) and its paired test-accuracy gain over the baseline:
    columns SELECTION_COLUMNS, rows in (dataset, family, student_size, ORDER) order. Holm
    columns: one Holm family per HOLM_FAMILY (all its sizes' and objectives' gains).

    Raises ValueError when an objective's students have no validation accuracy
    (selection never falls back to the test split)."""
    df = stats.normalise_results(results_df)
    cand = _candidates(df)
    blind = cand.groupby(GROUP + ["objective"], dropna=False)["val_accuracy"].count()
    if (blind == 0).any():
        ds, family, size, objective = blind[blind == 0].index[0]
        raise ValueError(f"no validation accuracy for {objective} students ({ds}, {family} size {size}): cannot select "
                         f"its setting (selection never falls back to the test split)")
    cand = cand[cand["val_accuracy"].notna()]
    diffs = stats.paired_diffs(df, "accuracy", "test", models=sorted(set(cand["model"])))
    rows, row_diffs = [], []
    for (ds, family, size), g in cand.groupby(GROUP, sort=True):
        for objective in objective_order(g["objective"]):
            c = g[g["objective"] == objective]
            best = min(c.itertuples(index=False), key=_rank_key)
            d = diffs[(diffs["dataset"] == ds) & (diffs["family"] == family) & (diffs["student_size"] == size)
                      & (diffs["model"] == best.model)
                      & (diffs["setting"] == best.setting)
                      & ((diffs["alpha"] == best.alpha) | (diffs["alpha"].isna() & math.isnan(best.alpha)))]
            ci = stats.paired_diff_ci(d["diff"].to_numpy(), confidence)
            rows.append({"dataset": ds, "family": family, "student_size": size, "objective": objective,
                         "model": best.model,
                         "setting": best.setting, "temperature": best.temperature, "alpha": best.alpha,
                         "n_candidates": len(c), "val_accuracy": best.val_accuracy, "val_nll": best.val_nll,
                         "test_accuracy": float(d["value"].mean()) if len(d) else np.nan,
                         "baseline_test_accuracy": float(d["baseline"].mean()) if len(d) else np.nan,
                         "n": ci["n"], "gain_mean": ci["mean"], "gain_sd": ci["sd"], "gain_lo": ci["lo"],
                         "gain_hi": ci["hi"], "significant": stats.excludes_zero(ci["lo"], ci["hi"]),
                         "p_value": p_value(d["diff"])})
            row_diffs.append(d["diff"].to_numpy())
    return _table(rows, row_diffs, SELECTION_COLUMNS, "significant", confidence)


def _table(rows: list[dict], row_diffs: list, columns: list[str], flag: str, confidence: float) -> pd.DataFrame:
    """The rows as a frame of `columns`, Holm's columns computed from their differences."""
    out = pd.DataFrame(rows, columns=columns[:-len(HOLM_COLUMNS)])
    out = _with_holm(out, row_diffs, confidence)[columns]
    out["student_size"] = stats.size_column(out["student_size"])
    out[flag] = out[flag].astype(bool)
    out["n"] = out["n"].astype(int)
    return out


def _test_by_seed(df: pd.DataFrame, r) -> pd.Series:
    """Test accuracy per seed of the selected cell `r` (a row of select_objectives)."""
    m = ((df["dataset"] == r.dataset) & (df["family"] == r.family) & (df["student_size"] == r.student_size)
         & (df["model"] == r.model)
         & (df["setting"] == r.setting) & (df["split"] == "test") & (df["metric"] == "accuracy"))
    m &= df["alpha"].isna() if math.isnan(r.alpha) else df["alpha"] == r.alpha
    return df[m].set_index("seed")["value"]


def compare_objectives(results_df: pd.DataFrame, selection: pd.DataFrame | None = None, *,
                       confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family, student_size), the validation-best selected objective against
    each other selected objective on test, paired by seed (module docstring): columns
    COMPARISON_COLUMNS, `other` in ORDER. Holm columns: one Holm family per HOLM_FAMILY
    (all its sizes' comparisons). `selection` defaults to select_objectives(results_df)."""
    df = stats.normalise_results(results_df)
    sel = select_objectives(df, confidence=confidence) if selection is None else selection
    order = {o: i for i, o in enumerate(objective_order(sel["objective"]))}
    rows, row_diffs = [], []
    for (ds, family, size), g in sel.groupby(GROUP, sort=True):
        ranked = sorted(g.itertuples(index=False),
                        key=lambda r: (-_key(r.val_accuracy), _key(r.val_nll), order[r.objective]))
        best = ranked[0]
        mine = _test_by_seed(df, best)
        for other in sorted(ranked[1:], key=lambda r: order[r.objective]):
            theirs = _test_by_seed(df, other)
            d = (mine - theirs.reindex(mine.index)).dropna().sort_index()
            ci = stats.paired_diff_ci(d.to_numpy(), confidence)
            rows.append({"dataset": ds, "family": family, "student_size": size, "best": best.objective,
                         "other": other.objective,
                         "n": ci["n"], "diff_mean": ci["mean"], "diff_sd": ci["sd"], "diff_lo": ci["lo"],
                         "diff_hi": ci["hi"], "told_apart": stats.excludes_zero(ci["lo"], ci["hi"]),
                         "p_value": p_value(d)})
            row_diffs.append(d.to_numpy())
    return _table(rows, row_diffs, COMPARISON_COLUMNS, "told_apart", confidence)


def separability(comparisons: pd.DataFrame, *, adjusted: bool = False) -> pd.DataFrame:
    """Per (dataset, family, student_size): the validation-best objective, the objectives it can
    be told apart from (the paired CI of their test difference excludes 0; with
    `adjusted`, Holm's interval) and those it cannot, and `verdict`: "all", "some" or
    "none" of the others told apart. A size with a single objective has no row."""
    flag = "holm_significant" if adjusted else "told_apart"
    rows = []
    for (ds, family, size), g in comparisons.groupby(GROUP, sort=True):
        apart = tuple(g.loc[g[flag], "other"])
        not_apart = tuple(g.loc[~g[flag], "other"])
        verdict = "none" if not apart else ("all" if not not_apart else "some")
        rows.append({"dataset": ds, "family": family, "student_size": size, "best": g["best"].iloc[0], "apart": apart,
                     "not_apart": not_apart, "verdict": verdict})
    out = pd.DataFrame(rows, columns=GROUP + ["best", "apart", "not_apart", "verdict"])
    out["student_size"] = stats.size_column(out["student_size"])
    return out
