"""Paired statistics for distillation studies.

Every student of a (dataset, student_size) with the same seed shares its
initialisation and data order across the hard-label baseline, the distilled
students and the logit-matching student, so each comparison is a *paired*
difference per seed:

    diff(seed) = value(cell, seed) - value(baseline, seed)

for every metric (for nll, ece, brier and kl_teacher a negative difference is
an improvement). The mean difference gets a Student-t confidence interval with
n - 1 degrees of freedom (or, optionally, a percentile bootstrap when n >= 10).

Model selection never looks at the test split: `best_temperature` picks the
temperature on the validation split and only then reports its test gain
(analysis.objective_stats does the same for every objective).

A cell is (dataset, family, student_size, model, setting, temperature, alpha): `family`
is the student family's label (students.family_label: "mlp", "cnn", ...; "" for the teacher),
so two families that share a size are different students, never paired or pooled; `setting`
names an objective's hyper-parameters ("T4" for kd, "alpha1_beta8_T4" for dkd),
`alpha` is the mixing weight of L = (1 - alpha) CE + alpha term.

    >>> df = load_results("reports/results.csv")
    >>> best_temperature(df)
"""

from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np
import pandas as pd

from distillstudy.grid import HYPER_ABBREV, OBJECTIVE_MODEL, format_number, number_value
from distillstudy.students import size_order
from scipy import stats as _st

COLUMNS = ["dataset", "family", "model", "objective", "setting", "student_size", "temperature", "alpha", "beta",
           "gamma", "dkd_alpha", "seed", "split", "metric", "value"]
#: Columns that older tables lack; `normalise_results` derives them (family LEGACY_FAMILY
#: for students, objective and setting from model and temperature, the rest NaN).
DERIVED = ("family", "objective", "setting", "beta", "gamma", "dkd_alpha")
#: A student row's family where a table has none: before families, every student was this mlp.
LEGACY_FAMILY = "mlp"
#: Keys that identify one experimental cell (one row of the grid, all seeds).
CELL = ["dataset", "family", "student_size", "model", "setting", "temperature", "alpha"]
#: Keys that pair a cell with its baseline: the same student (dataset, family, size) and seed.
PAIR = ["dataset", "family", "student_size", "seed"]
#: Student model label -> its objective ("distilled" is kd: the per-temperature code keys on it).
MODEL_OBJECTIVE = {model: objective for objective, model in OBJECTIVE_MODEL.items()}
STUDENT_MODELS = tuple(MODEL_OBJECTIVE)


# --------------------------------------------------------------------------- loading


def _text(v) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def size_column(sizes: pd.Series) -> pd.Series:
    """student_size typed: Int64 when every size is a number (files as before zoo students), else
    object of students.size_value's, ints and names ("resnet8x4"); blank and NaN -> NA. pandas
    sorts (on several keys) and groups such a column in students.size_order: numbers, then names."""
    sizes = sizes.astype(object).map(lambda v: pd.NA if _text(v).strip().lower() in ("", "nan") else v)
    numbers = pd.to_numeric(sizes, errors="coerce").astype("Float64").round().astype("Int64")
    names = sizes.notna() & numbers.isna()
    return numbers.astype(object).mask(names, sizes.map(_text).str.strip()) if names.any() else numbers


def normalise_results(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with the column types the statistics rely on.

    dataset/family/model/objective/setting/split/metric: str; temperature: canonical str
    ("" when empty); student_size: `size_column` (Int64 unless a size is a name); alpha,
    beta, gamma, dkd_alpha, value: float; seed: int.

    Tables without the DERIVED columns (or with them empty) are read as the kd-only,
    one-family grid they describe: an empty family of a student row becomes
    LEGACY_FAMILY (the teacher's stays ""), an empty objective MODEL_OBJECTIVE[model] ("" for
    teacher, baseline, control), an empty setting of a "distilled" row "T" + its
    temperature, and beta, gamma, dkd_alpha NaN.
    """
    missing = [c for c in COLUMNS if c not in df.columns and c not in DERIVED]
    if missing:
        raise ValueError(f"results table lacks columns {missing}")
    out = df.reindex(columns=COLUMNS).copy()
    for c in ("dataset", "family", "model", "objective", "setting", "split", "metric"):
        out[c] = out[c].astype(object).map(_text).astype(object)
    out["temperature"] = out["temperature"].astype(object).map(format_number).astype(object)
    out.loc[(out["family"] == "") & (out["model"] != "teacher"), "family"] = LEGACY_FAMILY
    blank = out["objective"] == ""
    out.loc[blank, "objective"] = out.loc[blank, "model"].map(lambda m: MODEL_OBJECTIVE.get(m, ""))
    kd = (out["setting"] == "") & (out["model"] == "distilled") & (out["temperature"] != "")
    out.loc[kd, "setting"] = HYPER_ABBREV["temperature"] + out.loc[kd, "temperature"]

    def _num(col):
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            s = s.astype(object).map(lambda v: np.nan if (isinstance(v, str) and v.strip() == "") else v)
        return pd.to_numeric(s, errors="raise")

    out["student_size"] = size_column(out["student_size"])
    for c in ("alpha", "beta", "gamma", "dkd_alpha"):
        out[c] = _num(c).astype(float)
    out["seed"] = _num("seed").astype("Int64")
    out["value"] = _num("value").astype(float)
    return out


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read results.csv with every column as text first (so "2.5" and names like
    "NA" survive untouched), then type it with `normalise_results`."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    return normalise_results(raw)


# --------------------------------------------------------------------------- intervals


def paired_diff_ci(diffs: Iterable[float], confidence: float = 0.95, *, bootstrap: bool = False,
                   n_boot: int = 10_000, rng_seed: int = 0) -> dict:
    """Mean of paired differences with a two-sided confidence interval.

    Student-t interval: mean +- t_{(1+c)/2, n-1} * sd / sqrt(n), sd with ddof=1.
    With `bootstrap=True` and n >= 10, a percentile bootstrap of the mean
    (`n_boot` resamples, `np.random.default_rng(rng_seed)`) is used instead.
    NaN entries are dropped. n == 1 gives lo = hi = sd = nan; n == 0 all nan.

    Returns dict(mean, lo, hi, n, sd).
    """
    d = np.asarray(list(diffs) if not isinstance(diffs, (np.ndarray, pd.Series)) else diffs, dtype=float).ravel()
    d = d[~np.isnan(d)]
    n = int(d.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "lo": nan, "hi": nan, "n": 0, "sd": nan}
    mean = float(d.mean())
    if n == 1:
        return {"mean": mean, "lo": nan, "hi": nan, "n": 1, "sd": nan}
    sd = float(d.std(ddof=1))
    if bootstrap and n >= 10:
        rng = np.random.default_rng(rng_seed)
        means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": n, "sd": sd}
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "sd": sd}


def excludes_zero(lo: float, hi: float) -> bool:
    """True when the interval [lo, hi] lies strictly on one side of zero (nan -> False)."""
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return False
    return bool(lo > 0 or hi < 0)


# --------------------------------------------------------------------------- tables


def _select(df: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    return df[(df["metric"] == metric) & (df["split"] == split)]


def _check_unique(df: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        example = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"duplicate {what} rows for {example}")


def _sort_cells(df: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    key = df.assign(_t=df["temperature"].map(number_value))
    # Families alphabetically in a dataset (the teacher's "" first): a one-family table keeps its order.
    order = ["dataset", "family", "student_size", "model", "_t", "setting", "alpha"] + (extra or [])
    order = [c for c in order if c in key.columns]
    return key.sort_values(order, kind="mergesort", na_position="first").drop(columns="_t").reset_index(drop=True)


def paired_diffs(results_df: pd.DataFrame, metric: str, split: str,
                 models: Iterable[str] = STUDENT_MODELS) -> pd.DataFrame:
    """Per-seed paired differences: one row per (cell, seed) that has a baseline
    with the same (dataset, family, student_size, seed).

    Columns: dataset, family, student_size, model, setting, temperature, alpha, seed, value,
    baseline, diff (= value - baseline).
    """
    df = normalise_results(results_df)
    sel = _select(df, metric, split)
    base = sel[sel["model"] == "baseline"]
    _check_unique(base, PAIR, "baseline")
    cells = sel[sel["model"].isin(list(models))]
    _check_unique(cells, CELL + ["seed"], "cell")
    merged = cells.merge(
        base[PAIR + ["value"]].rename(columns={"value": "baseline"}), on=PAIR, how="inner", validate="many_to_one")
    merged["diff"] = merged["value"] - merged["baseline"]
    cols = CELL + ["seed", "value", "baseline", "diff"]
    return _sort_cells(merged[cols], extra=["seed"])


def paired_gains(results_df: pd.DataFrame, metric: str, split: str, *, confidence: float = 0.95,
                 models: Iterable[str] = STUDENT_MODELS, bootstrap: bool = False) -> pd.DataFrame:
    """Mean paired difference (cell - baseline, same dataset, family, size and seed)
    per cell, with its confidence interval.

    Columns: CELL, n, mean, sd, lo, hi, significant (CI excludes zero), cell_mean,
    baseline_mean (both over the paired seeds). Sign: cell minus baseline for every metric, so for nll, ece,
    brier and kl_teacher negative is better.
    """
    diffs = paired_diffs(results_df, metric, split, models)
    rows = []
    for key, g in diffs.groupby(CELL, dropna=False, sort=False):
        ci = paired_diff_ci(g["diff"].to_numpy(), confidence, bootstrap=bootstrap)
        rows.append({**dict(zip(CELL, key)), "n": ci["n"], "mean": ci["mean"], "sd": ci["sd"],
                     "lo": ci["lo"], "hi": ci["hi"], "significant": excludes_zero(ci["lo"], ci["hi"]),
                     "cell_mean": float(g["value"].mean()), "baseline_mean": float(g["baseline"].mean())})
    cols = CELL + ["n", "mean", "sd", "lo", "hi", "significant", "cell_mean", "baseline_mean"]
    out = pd.DataFrame(rows, columns=cols)
    out["significant"] = out["significant"].astype(bool)
    out["student_size"] = size_column(out["student_size"])
    return _sort_cells(out)


def cell_summary(results_df: pd.DataFrame, metric: str, split: str, *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean over seeds with a t confidence interval for every cell (teacher and
    baseline included; not paired). Columns: CELL + n, mean, sd, lo, hi."""
    df = normalise_results(results_df)
    sel = _select(df, metric, split)
    rows = []
    for key, g in sel.groupby(CELL, dropna=False, sort=False):
        ci = paired_diff_ci(g["value"].to_numpy(), confidence)
        rows.append({**dict(zip(CELL, key)), **{k: ci[k] for k in ("n", "mean", "sd", "lo", "hi")}})
    out = pd.DataFrame(rows, columns=CELL + ["n", "mean", "sd", "lo", "hi"])
    out["student_size"] = size_column(out["student_size"])
    return _sort_cells(out)


def _tie_key(x: float) -> float:
    """Means computed from different seeds may differ by an ulp; compare at 1e-12."""
    return float("inf") if np.isnan(x) else round(float(x), 12)


def best_temperature(results_df: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family, student_size), the distilled cell (temperature, alpha) with the
    highest mean *validation* accuracy (ties: lower mean validation nll, then lower
    temperature, then lower alpha), and its paired *test* accuracy gain over the
    baseline. The test split plays no part in the choice.

    Columns: dataset, family, student_size, temperature, alpha, n_candidates,
    val_accuracy, val_nll, test_accuracy, baseline_test_accuracy, n, gain_mean,
    gain_sd, gain_lo, gain_hi, significant.
    """
    df = normalise_results(results_df)
    dist = df[df["model"] == "distilled"]
    val_acc = _select(dist, "accuracy", "val")
    if not dist.empty and val_acc.empty:
        raise ValueError("no validation accuracy for distilled students: cannot select a temperature "
                         "(selection never falls back to the test split)")
    va = val_acc.groupby(CELL, dropna=False)["value"].mean().rename("val_accuracy")
    vn = _select(dist, "nll", "val").groupby(CELL, dropna=False)["value"].mean().rename("val_nll")
    cand = pd.concat([va, vn], axis=1).reset_index()
    if "val_nll" not in cand:
        cand["val_nll"] = np.nan
    cand = cand[cand["val_accuracy"].notna()]
    gains = paired_gains(df, "accuracy", "test", confidence=confidence, models=("distilled",))
    cols = ["dataset", "family", "student_size", "temperature", "alpha", "n_candidates", "val_accuracy", "val_nll",
            "test_accuracy", "baseline_test_accuracy", "n", "gain_mean", "gain_sd", "gain_lo", "gain_hi",
            "significant"]
    rows = []
    for (ds, family, size), g in cand.groupby(["dataset", "family", "student_size"], dropna=False, sort=True):
        ranked = sorted(
            g.itertuples(index=False),
            key=lambda r: (-_tie_key(r.val_accuracy) if not np.isnan(r.val_accuracy) else float("inf"),
                           _tie_key(r.val_nll), number_value(r.temperature),
                           float("inf") if np.isnan(r.alpha) else r.alpha))
        best = ranked[0]
        m = gains[(gains["dataset"] == ds) & (gains["family"] == family) & (gains["student_size"] == size)
                  & (gains["temperature"] == best.temperature)
                  & ((gains["alpha"] == best.alpha) | (gains["alpha"].isna() & np.isnan(best.alpha)))]
        if len(m):
            r = m.iloc[0]
            gain = {"test_accuracy": r["cell_mean"], "baseline_test_accuracy": r["baseline_mean"], "n": int(r["n"]),
                    "gain_mean": r["mean"], "gain_sd": r["sd"], "gain_lo": r["lo"], "gain_hi": r["hi"],
                    "significant": bool(r["significant"])}
        else:
            gain = {"test_accuracy": np.nan, "baseline_test_accuracy": np.nan, "n": 0, "gain_mean": np.nan,
                    "gain_sd": np.nan, "gain_lo": np.nan, "gain_hi": np.nan, "significant": False}
        rows.append({"dataset": ds, "family": family, "student_size": size, "temperature": best.temperature,
                     "alpha": best.alpha, "n_candidates": len(g), "val_accuracy": best.val_accuracy, "val_nll": best.val_nll, **gain})
    out = pd.DataFrame(rows, columns=cols)
    out["student_size"] = size_column(out["student_size"])
    out["significant"] = out["significant"].astype(bool)
    return out.reset_index(drop=True)


def best_configuration(results_df: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family), the single best distilled configuration chosen on
    validation: among that family's rows of `best_temperature`, the highest validation
    accuracy (ties: lower validation nll, then smaller student); families are not ranked
    against each other. Same columns as best_temperature."""
    bt = best_temperature(results_df, confidence=confidence)
    rows = []
    for _, g in bt.groupby(["dataset", "family"], sort=True):
        ranked = sorted(g.itertuples(index=False),
                        key=lambda r: (-_tie_key(r.val_accuracy), _tie_key(r.val_nll), size_order(r.student_size)))
        rows.append(ranked[0]._asdict())
    out = pd.DataFrame(rows, columns=bt.columns)
    out["student_size"] = size_column(out["student_size"])
    return out.reset_index(drop=True)


def teacher_summary(results_df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: teacher test accuracy, test nll and train mean max-probability
    (a teacher near one-hot on its training points, >= 0.99, passes the student
    almost nothing beyond the hard labels)."""
    df = normalise_results(results_df)
    t = df[df["model"] == "teacher"]
    datasets = sorted(df["dataset"].unique())
    rows = []
    for ds in datasets:
        g = t[t["dataset"] == ds]

        def pick(metric, split):
            v = g[(g["metric"] == metric) & (g["split"] == split)]["value"]
            return float(v.mean()) if len(v) else float("nan")

        rows.append({"dataset": ds, "test_accuracy": pick("accuracy", "test"), "test_nll": pick("nll", "test"),
                     "train_mean_max_prob": pick("mean_max_prob", "train"),
                     "n_params": pick("n_params", "all")})
    return pd.DataFrame(rows, columns=["dataset", "test_accuracy", "test_nll", "train_mean_max_prob", "n_params"])


# --------------------------------------------------------------------------- calibration

CALIBRATION_COLUMNS = [*COLUMNS[:COLUMNS.index("split")], "split", "bin", "bin_lower", "bin_upper", "count",
                       "mean_confidence", "accuracy"]


def load_calibration(path: str | os.PathLike) -> pd.DataFrame:
    """Read calibration.csv (written by the evaluate stage) with the same typing
    rules as `load_results`: temperature a canonical string, student_size `size_column`;
    a table without the DERIVED columns gets them as `normalise_results` derives them."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    missing = [c for c in CALIBRATION_COLUMNS if c not in raw.columns and c not in DERIVED]
    if missing:
        raise ValueError(f"{path}: calibration table lacks columns {missing}")
    raw = raw.reindex(columns=CALIBRATION_COLUMNS, fill_value="")
    out = normalise_results(raw.assign(metric="", value="")).drop(columns=["metric", "value"])
    blank = lambda c: pd.to_numeric(raw[c].map(lambda v: np.nan if v.strip() == "" else v))  # noqa: E731
    for c in CALIBRATION_COLUMNS[CALIBRATION_COLUMNS.index("bin"):]:
        out[c] = blank(c).astype(int if c in ("bin", "count") else float)
    return out


def pooled_reliability(calibration_df: pd.DataFrame, dataset: str, model: str, student_size=None,
                       temperature: str = "", alpha=None, split: str = "test", setting: str | None = None,
                       family: str | None = None) -> pd.DataFrame:
    """Reliability bins of one cell pooled over its seeds: per bin the summed
    count and the count-weighted mean confidence and accuracy (nan for empty
    bins). Columns: bin, bin_lower, bin_upper, count, mean_confidence, accuracy;
    `attrs` carries n_seeds and ece (the expected calibration error of the pooled
    bins). Empty frame when the cell is absent. `setting` None matches any setting
    (enough for kd, whose setting is its temperature; name it for dkd, dist, nkd,
    whose settings can share a temperature). `family` None matches any family: name it
    whenever two families share the size, or their students would be pooled together."""
    c = calibration_df
    m = (c["dataset"] == dataset) & (c["model"] == model) & (c["split"] == split)
    if family is not None and "family" in c.columns:
        m &= c["family"] == family
    m &= c["student_size"].isna() if pd.isna(student_size) else c["student_size"] == student_size
    m &= c["temperature"] == (temperature or "")
    if setting is not None and "setting" in c.columns:
        m &= c["setting"] == setting
    if not pd.isna(alpha):
        m &= np.isclose(c["alpha"].astype(float), float(alpha))
    sub = c[m]
    cols = ["bin", "bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    sub = sub.assign(_conf=sub["mean_confidence"].fillna(0.0) * sub["count"],
                     _acc=sub["accuracy"].fillna(0.0) * sub["count"])
    g = sub.groupby("bin", sort=True).agg(bin_lower=("bin_lower", "first"), bin_upper=("bin_upper", "first"),
                                          count=("count", "sum"), _conf=("_conf", "sum"), _acc=("_acc", "sum"))
    with np.errstate(invalid="ignore", divide="ignore"):
        g["mean_confidence"] = np.where(g["count"] > 0, g["_conf"] / g["count"], np.nan)
        g["accuracy"] = np.where(g["count"] > 0, g["_acc"] / g["count"], np.nan)
    out = g.reset_index()[cols]
    total = int(out["count"].sum())
    gaps = (out["accuracy"] - out["mean_confidence"]).abs().fillna(0.0) * out["count"]
    out.attrs["n_seeds"] = int(sub["seed"].nunique())
    out.attrs["ece"] = float(gaps.sum() / total) if total else float("nan")
    out.attrs["n"] = total
    return out
