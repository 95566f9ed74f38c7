"""Statistics of the language-model studies: validation selection and paired test gains.

reports/lm_results.csv is long: one row per (dataset, student, cell, replicate, split,
metric). A student row's `student` is its name ("gpt-16"), its `cell` one of the LM cells
(`baseline`, `fkl_T1_data_mix0.5`, `rkl_T1_student0.5`, `jsd_beta0.5_T1_teacher`, ...) with
the parts spelled out in `objective`, `source` (data, teacher, student), `setting` (the
hyper-parameters: "T1", "beta0.5_T1", "lam0.1", "" for tvd), `alpha` and
`on_policy_fraction`. Replicate r of every cell of one (dataset, student) shares its seed,
so cells are compared with the baseline *paired by replicate*. Reference rows: student
`teacher` (cell `teacher`) and, on synthetic languages, `oracle` (the true distribution).

Selection never sees the test split: per (dataset, student, objective, source) the cell with
the best mean validation `select_on` is chosen, and only then its test gain is computed,

    gain(r) = baseline(r) - cell(r)    for a lower-is-better metric (NLL, KL, ...)
    gain(r) = cell(r) - baseline(r)    otherwise

so a positive gain is always an improvement; the mean over replicates gets the Student-t
interval of `stats.paired_diff_ci` (n - 1 degrees of freedom).

    >>> df = load_lm_results("reports/lm_results.csv")
    >>> selected_gains(df, metric="kl_truth")       # the exact KL to the truth, synthetic data
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from distillstudy.analysis.stats import excludes_zero, paired_diff_ci, size_column
from distillstudy.students import size_order

COLUMNS = ["dataset", "student", "family", "student_size", "n_params", "cell", "objective", "source",
           "on_policy_fraction", "alpha", "setting", "replicate", "seed", "split", "metric", "value"]
TEXT_COLUMNS = ("dataset", "student", "family", "cell", "objective", "source", "setting", "split", "metric")
FLOAT_COLUMNS = ("n_params", "on_policy_fraction", "alpha", "value")
INT_COLUMNS = ("replicate", "seed")

BASELINE = "baseline"
TEACHER, ORACLE = "teacher", "oracle"
REFERENCE_STUDENTS = (TEACHER, ORACLE)
#: Where the training prefixes come from, in the tables' row order.
SOURCES = ("data", "teacher", "student")
#: The token objectives in the tables' column order: token_objectives.NAMES (not imported:
#: that module imports torch, which a report needs nowhere else; tests check they agree).
OBJECTIVE_ORDER = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl")
LOWER_IS_BETTER = frozenset({"nll", "perplexity", "kl_teacher", "kl_truth", "sample_teacher_nll",
                             "sample_true_nll"})
HIGHER_IS_BETTER = frozenset({"agreement", "distinct_2", "sample_entropy"})
#: The metrics in the order of `cell_means` and `reference_rows` columns (others follow, sorted).
METRIC_ORDER = ("nll", "perplexity", "agreement", "kl_teacher", "kl_truth", "sample_teacher_nll",
                "sample_true_nll", "distinct_2", "sample_entropy")
GAIN_COLUMNS = ["dataset", "student", "student_size", "objective", "source", "cell", "n_pairs", "gain", "lo", "hi",
                "baseline_mean", "cell_mean", "family", "setting", "alpha", "on_policy_fraction", "n_candidates",
                "val_select", "significant"]
CELL_META = ["family", "student_size", "n_params", "objective", "source", "setting", "alpha", "on_policy_fraction"]


# --------------------------------------------------------------------------- loading


def _blank(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or str(v).strip() in ("", "nan")


def _numbers(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    """`column` as floats (blank -> NaN); a non-blank entry that is not a number is refused,
    naming its row (the file's line when `where` is a file)."""
    raw = df[column].astype(object)
    out = pd.to_numeric(raw.map(lambda v: np.nan if _blank(v) else v), errors="coerce").astype(float)
    bad = out.isna() & ~raw.map(_blank)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{where}: row {i + 1} (line {i + 2}), column {column!r}: {raw.iloc[i]!r} is not a number")
    return out


def normalise_lm_results(df: pd.DataFrame, where: str = "LM results table") -> pd.DataFrame:
    """A typed copy of an LM results table: TEXT_COLUMNS str ("" when blank), FLOAT_COLUMNS
    float, replicate and seed Int64, student_size `stats.size_column` (NA for the teacher
    and oracle). A missing column is refused, naming every one; `where` names the table
    in errors. Applying it twice changes nothing."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where} lacks columns {missing} (it needs {COLUMNS})")
    out = df[COLUMNS].copy()
    for c in TEXT_COLUMNS:
        out[c] = out[c].astype(object).map(lambda v: "" if _blank(v) else str(v).strip()).astype(object)
    for c in FLOAT_COLUMNS:
        out[c] = _numbers(out, c, where)
    for c in INT_COLUMNS:
        out[c] = _numbers(out, c, where).round().astype("Int64")
    out["student_size"] = size_column(out["student_size"])
    student = ~out["student"].isin(REFERENCE_STUDENTS)
    if (student & out["replicate"].isna()).any():
        i = int(np.flatnonzero((student & out["replicate"].isna()).to_numpy())[0])
        raise ValueError(f"{where}: row {i + 1} (student {out['student'].iloc[i]!r}, cell {out['cell'].iloc[i]!r}) "
                         f"has no replicate: student rows are paired by it")
    return out


def load_lm_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read lm_results.csv as text first (so names like "NA" survive), then type it with
    `normalise_lm_results`; errors name the file."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    return normalise_lm_results(raw, where=str(path))


# --------------------------------------------------------------------------- ordering


def lower_is_better(metric: str) -> bool:
    """Whether a smaller `metric` is better; a metric of neither list is refused (its gain
    would have no sign)."""
    if metric in LOWER_IS_BETTER:
        return True
    if metric in HIGHER_IS_BETTER:
        return False
    raise ValueError(f"unknown LM metric {metric!r}: expected one of "
                     f"{sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER)}")


def objective_key(objective: str) -> tuple:
    """Sort key of objectives: OBJECTIVE_ORDER, then any other name alphabetically."""
    return (OBJECTIVE_ORDER.index(objective), "") if objective in OBJECTIVE_ORDER else (len(OBJECTIVE_ORDER), objective)


def source_key(source: str) -> tuple:
    return (SOURCES.index(source), "") if source in SOURCES else (len(SOURCES), source)


def metric_key(metric: str) -> tuple:
    return (METRIC_ORDER.index(metric), "") if metric in METRIC_ORDER else (len(METRIC_ORDER), metric)


def students(df: pd.DataFrame, dataset: str) -> list[str]:
    """The trained students of `dataset` (teacher and oracle excluded): by family, then size."""
    rows = df[(df["dataset"] == dataset) & ~df["student"].isin(REFERENCE_STUDENTS)]
    first = rows.drop_duplicates("student")
    return [r.student for r in sorted(first.itertuples(index=False),
                                      key=lambda r: (r.family, size_order(r.student_size) if not pd.isna(r.student_size)
                                                     else (2, 0, ""), r.student))]


def _check_unique(df: pd.DataFrame) -> None:
    keys = ["dataset", "student", "cell", "replicate", "split", "metric"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        raise ValueError(f"duplicate LM result rows for {df.loc[dup, keys].iloc[0].to_dict()}")


def _tie_key(x: float) -> float:
    """Means over different replicates may differ by an ulp: compare at 1e-12."""
    return round(float(x), 12)


# --------------------------------------------------------------------------- selection and gains


def _select(cells: list[str], val_means: pd.Series, lower: bool) -> str | None:
    """The cell of `cells` (sorted) with the best validation mean; ties: the first."""
    ranked = [c for c in sorted(cells) if c in val_means.index and not np.isnan(val_means[c])]
    if not ranked:
        return None
    sign = 1.0 if lower else -1.0
    return min(ranked, key=lambda c: _tie_key(sign * val_means[c]))


def selected_gains(df: pd.DataFrame, metric: str = "nll", select_on: str = "nll",
                   confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, student, objective, source): the cell (setting, alpha, on-policy
    fraction) with the best mean *validation* `select_on` (ties: the first cell name in
    sorted order) and its *test* `metric` gain over the baseline, paired by replicate
    (module docstring: positive = better), with the `confidence` Student-t interval.

    Students without test `metric` rows (kl_truth on text data) are left out; a group whose
    cells have no validation `select_on` is refused (selection never falls back to test).

    Columns: dataset, student, student_size, objective, source, cell, n_pairs, gain, lo, hi,
    baseline_mean, cell_mean (both over the paired replicates), then family, setting, alpha,
    on_policy_fraction, n_candidates (cells with a validation mean), val_select (the chosen
    cell's validation mean), significant (the CI excludes zero). Rows: datasets sorted,
    `students` order, objective_key, source_key.
    """
    lower_metric, lower_select = lower_is_better(metric), lower_is_better(select_on)
    df = normalise_lm_results(df)
    trained = df[~df["student"].isin(REFERENCE_STUDENTS)]
    _check_unique(trained)
    rows = []
    for dataset in sorted(trained["dataset"].unique()):
        for student in students(trained, dataset):
            g = trained[(trained["dataset"] == dataset) & (trained["student"] == student)]
            test = g[(g["split"] == "test") & (g["metric"] == metric)]
            if test.empty:
                continue
            base = test[test["cell"] == BASELINE].set_index("replicate")["value"].rename("baseline")
            val = g[(g["split"] == "val") & (g["metric"] == select_on)].groupby("cell")["value"].mean()
            cells = g[g["cell"] != BASELINE].drop_duplicates("cell")
            groups = sorted(cells.groupby(["objective", "source"]),
                            key=lambda kv: (objective_key(kv[0][0]), source_key(kv[0][1])))
            for (objective, source), options in groups:
                names = list(options["cell"])
                best = _select(names, val, lower_select)
                if best is None:
                    raise ValueError(f"{dataset}, student {student}: no validation {select_on} for any cell of "
                                     f"{objective} on {source} prefixes ({sorted(names)}); selection never falls "
                                     f"back to the test split")
                chosen = test[test["cell"] == best].set_index("replicate")["value"].rename("cell")
                paired = pd.concat([base, chosen], axis=1, join="inner").dropna()
                diffs = paired["baseline"] - paired["cell"] if lower_metric else paired["cell"] - paired["baseline"]
                ci = paired_diff_ci(diffs.to_numpy(dtype=float), confidence)
                meta = options[options["cell"] == best].iloc[0]
                rows.append({"dataset": dataset, "student": student, "student_size": meta["student_size"],
                             "objective": objective, "source": source, "cell": best, "n_pairs": ci["n"],
                             "gain": ci["mean"], "lo": ci["lo"], "hi": ci["hi"],
                             "baseline_mean": float(paired["baseline"].mean()) if len(paired) else np.nan,
                             "cell_mean": float(paired["cell"].mean()) if len(paired) else np.nan,
                             "family": meta["family"], "setting": meta["setting"], "alpha": meta["alpha"],
                             "on_policy_fraction": meta["on_policy_fraction"],
                             "n_candidates": int(sum(not np.isnan(val.get(c, np.nan)) for c in names)),
                             "val_select": float(val[best]), "significant": excludes_zero(ci["lo"], ci["hi"])})
    out = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    out["student_size"] = size_column(out["student_size"])
    out["n_pairs"] = out["n_pairs"].astype(int)
    out["significant"] = out["significant"].astype(bool)
    return out


# --------------------------------------------------------------------------- means


def _wide(sel: pd.DataFrame, keys: list[str], meta: list[str]) -> pd.DataFrame:
    """Mean of every metric per `keys` (one column per metric, metric_key order), the first
    non-blank value of each `meta` column, and n_replicates."""
    if sel.empty:
        return pd.DataFrame(columns=keys + meta + ["n_replicates"])
    means = sel.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean", sort=False)
    means = means[sorted(means.columns, key=metric_key)]
    means.columns.name = None
    first = sel.groupby(keys, sort=False)[meta].first()
    count = sel.groupby(keys, sort=False)["replicate"].nunique().rename("n_replicates")
    return pd.concat([first, count, means], axis=1).reset_index()


def cell_means(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per (dataset, student, cell) of `split`, the mean over replicates of every metric
    (a column each; NaN where a cell lacks it), with the cell's CELL_META and n_replicates.
    Rows: datasets sorted, trained students (`students` order) then teacher and oracle,
    each student's baseline first, then its cells by objective, source and name."""
    df = normalise_lm_results(df)
    out = _wide(df[df["split"] == split], ["dataset", "student", "cell"], CELL_META)
    if out.empty:
        return out
    order = {}
    for dataset in out["dataset"].unique():
        names = students(df, dataset) + list(REFERENCE_STUDENTS)
        order.update({(dataset, s): i for i, s in enumerate(names)})
    key = out.apply(lambda r: (r["dataset"], order.get((r["dataset"], r["student"]), len(order)),
                               r["cell"] != BASELINE, objective_key(r["objective"]), source_key(r["source"]),
                               r["cell"]), axis=1)
    return out.iloc[sorted(range(len(out)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def reference_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The teacher's and (synthetic data) the oracle's test metrics per dataset: columns
    dataset, student (teacher, oracle), n_params, n_replicates, then one mean per metric.
    The oracle's NLL on the test sequences is the language's entropy-rate estimate."""
    df = normalise_lm_results(df)
    ref = df[df["student"].isin(REFERENCE_STUDENTS) & (df["split"] == "test")]
    out = _wide(ref, ["dataset", "student"], ["n_params"])
    if out.empty:
        return out
    out = out.assign(_s=out["student"].map(REFERENCE_STUDENTS.index)).sort_values(["dataset", "_s"], kind="mergesort")
    return out.drop(columns="_s").reset_index(drop=True)
