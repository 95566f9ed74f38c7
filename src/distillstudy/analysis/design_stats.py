"""Statistics of the study designs (reports/designs.csv), paired by seed.

designs.csv is the long results table of `stats` with two more key columns,
`axis` and `level` (see `distillstudy.grid`), whose students are all of the reference
family (the first of distill.students; a designs.csv without `family` is read, as
`stats.normalise_results` reads results.csv, as today's mlp): each axis changes ONE factor
of the reference (transfer set, epochs, teacher width, ensemble size, label
fraction) and every (dataset, axis) carries its reference level too, so one
axis is self-contained. Within one (dataset, axis, level) the rows are an
ordinary results table, and everything is computed with `stats`' own rules:

- the best temperature is chosen on the *validation* split exactly as
  `stats.best_temperature` does (highest mean validation accuracy; ties: lower
  validation NLL, lower T, lower alpha), and only its *test* accuracy is reported;
- gains are paired by seed (the replicate seeds of a (dataset, student_size) are
  the same for every level and model) with Student-t intervals
  (`stats.paired_diff_ci`); intervals are not corrected for multiple comparisons.

    >>> d = load_designs("reports/designs.csv")       # None when the file is absent
    >>> level_summary(d, params=params)               # one row per (dataset, axis, level, size)
    >>> ensemble_share(d)                             # the student's share of the ensemble's gain
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from distillstudy.analysis import stats
from distillstudy import grid

KEYS = ["dataset", "axis", "level"]
COLUMNS = KEYS + stats.COLUMNS[1:]
AXIS_ORDER = list(grid.AXES)
AXIS_TITLES = {
    "transfer": "Transfer set: which targets the student learns from",
    "epochs": "Training length of the students",
    "teacher_width": "Teacher size (capacity gap)",
    "ensemble": "Ensemble teacher",
    "label_fraction": "Fewer labels (learning curve)",
}
SHARE_FORMULA = ("share = (test accuracy of the best-on-validation student distilled from the ensemble − test "
                 "accuracy of the best-on-validation student distilled from the single reference teacher) / "
                 "(ensemble teacher's test accuracy − single teacher's test accuracy)")

SUMMARY_COLUMNS = [
    "dataset", "axis", "level", "level_value", "is_reference", "family", "student_size",
    "teacher_test_accuracy", "teacher_transfer_accuracy", "teacher_transfer_mmp", "teacher_n_params", "n_teachers",
    "baseline_mean", "baseline_lo", "baseline_hi", "n_baseline",
    "best_temperature", "best_alpha", "best_val_accuracy", "best_test_mean", "best_test_lo", "best_test_hi",
    "n", "gain_mean", "gain_sd", "gain_lo", "gain_hi", "gain_significant",
    "control_mean", "control_lo", "control_hi",
    "control_gain_mean", "control_gain_lo", "control_gain_hi", "control_gain_significant", "n_control",
    "over_control_mean", "over_control_lo", "over_control_hi", "over_control_significant", "n_over_control",
]
SHARE_COLUMNS = [
    "dataset", "level", "student_size", "ensemble_test_accuracy", "single_test_accuracy", "teacher_gain",
    "ensemble_temperature", "single_temperature", "student_ensemble", "student_single",
    "n", "student_gain_mean", "student_gain_lo", "student_gain_hi", "student_gain_significant",
    "share", "share_lo", "share_hi", "denominator_ok", "note",
]


# --------------------------------------------------------------------------- loading


def normalise_designs(df: pd.DataFrame) -> pd.DataFrame:
    """Typed copy: the columns of `stats.normalise_results` plus axis and level (str)."""
    missing = [c for c in COLUMNS if c not in df.columns and c not in stats.DERIVED]  # derived when absent
    if missing:
        raise ValueError(f"designs table lacks columns {missing}")
    out = stats.normalise_results(df)
    axis = df["axis"].astype(object).map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                         else str(v).strip())
    unknown = sorted(set(axis) - set(AXIS_ORDER))
    if unknown:
        raise ValueError(f"designs table: unknown axis {unknown[0]!r} (one of {', '.join(AXIS_ORDER)})")
    level = [grid.format_number(v) for v in df["level"].astype(object)]
    out.insert(1, "axis", axis.to_numpy(dtype=object))
    out.insert(2, "level", pd.Series(level, index=out.index, dtype=object))
    return out[COLUMNS]


def load_designs(path: str | os.PathLike | None) -> pd.DataFrame | None:
    """Read designs.csv (all text first, as `stats.load_results`); None when
    `path` is None or the file does not exist (a study without designs)."""
    if path is None or not os.path.exists(path):
        return None
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    return normalise_designs(raw)


def sort_levels(axis: str, levels) -> list[str]:
    """Transfer protocols in grid.PROTOCOLS order, numeric levels by value;
    anything else last, alphabetically."""
    levels = list(dict.fromkeys(levels))
    if axis == "transfer":
        known = [p for p in grid.PROTOCOLS if p in levels]
        return known + sorted(set(levels) - set(known))
    num = sorted((lv for lv in levels if not math.isnan(grid.number_value(lv))), key=lambda lv: grid.number_value(lv))
    return num + sorted(lv for lv in levels if math.isnan(grid.number_value(lv)))


def reference_levels(params: dict | None = None) -> dict:
    """axis -> reference level; the epochs reference needs params (distill.epochs)."""
    out = {}
    for axis in AXIS_ORDER:
        if axis == "epochs":
            epochs = ((params or {}).get("distill") or {}).get("epochs")
            out[axis] = None if epochs is None else grid.format_number(epochs)
        else:
            out[axis] = grid.reference_level(axis, params or {})
    return out


def axes_present(designs: pd.DataFrame | None) -> list[str]:
    """The axes in the table, in grid.AXES order."""
    if designs is None or designs.empty:
        return []
    return [a for a in AXIS_ORDER if (designs["axis"] == a).any()]


def level_frame(designs: pd.DataFrame, dataset: str, axis: str, level: str) -> pd.DataFrame:
    """The rows of one (dataset, axis, level) as an ordinary results table."""
    m = (designs["dataset"] == dataset) & (designs["axis"] == axis) & (designs["level"] == level)
    return designs.loc[m, stats.COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------- summaries


def _mean(df: pd.DataFrame, model: str, split: str, metric: str) -> float:
    v = df[(df["model"] == model) & (df["split"] == split) & (df["metric"] == metric)]["value"]
    return float(v.mean()) if len(v) else float("nan")


def _row_for(tab: pd.DataFrame, size, temperature=None, alpha=None) -> pd.Series | None:
    m = tab["student_size"] == size
    if temperature is not None:
        m &= tab["temperature"] == temperature
    if alpha is not None:
        m &= (tab["alpha"] == alpha) | (tab["alpha"].isna() & (isinstance(alpha, float) and math.isnan(alpha)))
    sub = tab[m.fillna(False)]
    return None if sub.empty else sub.iloc[0]


def _against_control(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the control playing the baseline's part (the real baseline
    dropped), so that stats.paired_gains pairs distilled students with it."""
    out = frame[frame["model"] != "baseline"].copy()
    out.loc[out["model"] == "control", "model"] = "baseline"
    return out


def _summarise_level(frame: pd.DataFrame, confidence: float) -> list[dict]:
    nan = float("nan")
    teacher = {"teacher_test_accuracy": _mean(frame, "teacher", "test", "accuracy"),
               "teacher_transfer_accuracy": _mean(frame, "teacher", "transfer", "accuracy"),
               "teacher_transfer_mmp": _mean(frame, "teacher", "transfer", "mean_max_prob"),
               "teacher_n_params": _mean(frame, "teacher", "all", "n_params"),
               "n_teachers": int(frame.loc[frame["model"] == "teacher", "seed"].nunique())}
    students = frame[frame["model"].isin(["baseline", "distilled", "control"])]
    sizes = sorted(int(s) for s in students["student_size"].dropna().unique())
    if not sizes:
        return []
    families = sorted(set(students["family"]))
    if len(families) > 1:  # rows below are keyed by size alone: two families would be mixed
        raise ValueError(f"designs table: one level holds students of several families {families}; the designs "
                         f"train the reference family's students only")
    cs = stats.cell_summary(students, "accuracy", "test", confidence=confidence)
    base = cs[cs["model"] == "baseline"]
    ctrl = cs[cs["model"] == "control"]
    dist = cs[cs["model"] == "distilled"]
    has_dist = not students[students["model"] == "distilled"].empty
    bt = stats.best_temperature(students, confidence=confidence) if has_dist else None
    has_ctrl = not ctrl.empty
    if has_ctrl:
        cg = stats.paired_gains(students, "accuracy", "test", confidence=confidence, models=("control",))
        oc = (stats.paired_gains(_against_control(students), "accuracy", "test", confidence=confidence,
                                 models=("distilled",)) if has_dist else None)
    rows = []
    for s in sizes:
        r = {"family": families[0], "student_size": s, **teacher}
        b = _row_for(base, s)
        r.update(baseline_mean=nan if b is None else b["mean"], baseline_lo=nan if b is None else b["lo"],
                 baseline_hi=nan if b is None else b["hi"], n_baseline=0 if b is None else int(b["n"]))
        best = None if bt is None else _row_for(bt, s)
        if best is None:
            r.update(best_temperature="", best_alpha=nan, best_val_accuracy=nan, best_test_mean=nan,
                     best_test_lo=nan, best_test_hi=nan, n=0, gain_mean=nan, gain_sd=nan, gain_lo=nan,
                     gain_hi=nan, gain_significant=False)
        else:
            c = _row_for(dist, s, best["temperature"], best["alpha"])
            r.update(best_temperature=best["temperature"], best_alpha=best["alpha"],
                     best_val_accuracy=best["val_accuracy"],
                     best_test_mean=nan if c is None else c["mean"], best_test_lo=nan if c is None else c["lo"],
                     best_test_hi=nan if c is None else c["hi"], n=int(best["n"]), gain_mean=best["gain_mean"],
                     gain_sd=best["gain_sd"], gain_lo=best["gain_lo"], gain_hi=best["gain_hi"],
                     gain_significant=bool(best["significant"]))
        r.update(control_mean=nan, control_lo=nan, control_hi=nan, control_gain_mean=nan, control_gain_lo=nan,
                 control_gain_hi=nan, control_gain_significant=False, n_control=0, over_control_mean=nan,
                 over_control_lo=nan, over_control_hi=nan, over_control_significant=False, n_over_control=0)
        if has_ctrl:
            c = _row_for(ctrl, s)
            if c is not None:
                r.update(control_mean=c["mean"], control_lo=c["lo"], control_hi=c["hi"])
            g = _row_for(cg, s)
            if g is not None:
                r.update(control_gain_mean=g["mean"], control_gain_lo=g["lo"], control_gain_hi=g["hi"],
                         control_gain_significant=bool(g["significant"]), n_control=int(g["n"]))
            if oc is not None and best is not None:
                o = _row_for(oc, s, best["temperature"], best["alpha"])
                if o is not None:
                    r.update(over_control_mean=o["mean"], over_control_lo=o["lo"], over_control_hi=o["hi"],
                             over_control_significant=bool(o["significant"]), n_over_control=int(o["n"]))
        rows.append(r)
    return rows


def level_summary(designs: pd.DataFrame | None, *, params: dict | None = None,
                  confidence: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, axis, level, student_size), levels in `sort_levels` order;
    `family` names the (one) student family of the designs.

    Teacher (the level's; mean over its rows): teacher_test_accuracy,
    teacher_transfer_accuracy and teacher_transfer_mmp (accuracy and mean
    max-probability on the transfer points, scored against their source's hard
    label), teacher_n_params, n_teachers.
    Baseline (the level's hard-label student): baseline_mean/lo/hi (test accuracy,
    mean over seeds with a t interval), n_baseline.
    Best distilled cell chosen on validation (`stats.best_temperature`):
    best_temperature, best_alpha, best_val_accuracy, best_test_mean/lo/hi, and
    its paired test gain over the level's baseline: n, gain_mean, gain_sd,
    gain_lo, gain_hi, gain_significant (CI excludes zero).
    Control (transfer = augmented only; nan elsewhere): control_mean/lo/hi, the
    control's paired gain over the baseline (control_gain_*, the augmentation's
    own effect) and the best distilled cell's paired gain over the control
    (over_control_*, what the teacher adds on the same copies).
    is_reference marks the axis's reference level (epochs: needs params).
    All accuracies are fractions (0.046 = 4.6 pp)."""
    if designs is None or designs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    refs = reference_levels(params)
    rows = []
    for ds in sorted(designs["dataset"].unique()):
        d = designs[designs["dataset"] == ds]
        for axis in axes_present(d):
            for level in sort_levels(axis, d.loc[d["axis"] == axis, "level"]):
                for r in _summarise_level(level_frame(designs, ds, axis, level), confidence):
                    rows.append({"dataset": ds, "axis": axis, "level": level,
                                 "level_value": grid.number_value(level),
                                 "is_reference": refs.get(axis) is not None and level == refs[axis], **r})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["student_size"] = out["student_size"].astype("Int64")
    for c in ("is_reference", "gain_significant", "control_gain_significant", "over_control_significant"):
        out[c] = out[c].astype(bool)
    return out.reset_index(drop=True)


def _best_per_seed(frame: pd.DataFrame, size: int, temperature: str, alpha: float) -> pd.Series:
    sel = frame[(frame["model"] == "distilled") & (frame["student_size"] == size) & (frame["split"] == "test")
                & (frame["metric"] == "accuracy") & (frame["temperature"] == temperature)]
    sel = sel[(sel["alpha"] == alpha) | (sel["alpha"].isna() & bool(np.isnan(alpha)))]
    return sel.groupby("seed")["value"].mean()


#: Smallest ensemble gain over the single teacher (accuracy, a fraction) worth apportioning.
MIN_TEACHER_GAIN = 0.005


def ensemble_share(designs: pd.DataFrame | None, *, confidence: float = 0.95,
                   reference: str = "1") -> pd.DataFrame:
    """Per (dataset, ensemble level M != reference, student_size): the student's
    share of the ensemble's gain (`SHARE_FORMULA`).

    Columns: ensemble_test_accuracy and single_test_accuracy (the teachers'),
    teacher_gain (their difference, the denominator), ensemble_temperature and
    single_temperature (each level's best T on validation), student_ensemble and
    student_single (those students' mean test accuracies), the paired difference
    of the two students over common seeds with its CI (student_gain_*), share
    (= student_gain_mean / teacher_gain) with share_lo/share_hi (the student
    CI divided by the denominator, which is treated as fixed: the teachers are
    single evaluated models), denominator_ok and a note. When the ensemble is
    not more accurate than the single teacher (denominator <= 0) the share is
    undefined: share* are nan, denominator_ok False, and the note says so."""
    if designs is None or designs.empty:
        return pd.DataFrame(columns=SHARE_COLUMNS)
    nan = float("nan")
    ens = designs[designs["axis"] == "ensemble"]
    rows = []
    for ds in sorted(ens["dataset"].unique()):
        d = ens[ens["dataset"] == ds]
        levels = sort_levels("ensemble", d["level"])
        if reference not in levels:
            continue
        single = level_frame(designs, ds, "ensemble", reference)
        single_acc = _mean(single, "teacher", "test", "accuracy")
        single_bt = (stats.best_temperature(single[single["model"] != "teacher"], confidence=confidence)
                     if (single["model"] == "distilled").any() else None)
        for level in levels:
            if level == reference:
                continue
            frame = level_frame(designs, ds, "ensemble", level)
            ens_acc = _mean(frame, "teacher", "test", "accuracy")
            bt = (stats.best_temperature(frame[frame["model"] != "teacher"], confidence=confidence)
                  if (frame["model"] == "distilled").any() else None)
            sizes = sorted(int(s) for s in frame["student_size"].dropna().unique())
            for s in sizes:
                be = None if bt is None else _row_for(bt, s)
                bs = None if single_bt is None else _row_for(single_bt, s)
                denom = ens_acc - single_acc
                r = {"dataset": ds, "level": level, "student_size": s, "ensemble_test_accuracy": ens_acc,
                     "single_test_accuracy": single_acc, "teacher_gain": denom,
                     "ensemble_temperature": "" if be is None else be["temperature"],
                     "single_temperature": "" if bs is None else bs["temperature"],
                     "student_ensemble": nan, "student_single": nan, "n": 0, "student_gain_mean": nan,
                     "student_gain_lo": nan, "student_gain_hi": nan, "student_gain_significant": False,
                     "share": nan, "share_lo": nan, "share_hi": nan,
                     "denominator_ok": bool(np.isfinite(denom) and denom >= MIN_TEACHER_GAIN), "note": ""}
                if be is not None and bs is not None:
                    a = _best_per_seed(frame, s, be["temperature"], be["alpha"])
                    b = _best_per_seed(single, s, bs["temperature"], bs["alpha"])
                    common = a.index.intersection(b.index)
                    ci = stats.paired_diff_ci((a[common] - b[common]).to_numpy(), confidence)
                    r.update(student_ensemble=float(a.mean()) if len(a) else nan,
                             student_single=float(b.mean()) if len(b) else nan, n=ci["n"],
                             student_gain_mean=ci["mean"], student_gain_lo=ci["lo"], student_gain_hi=ci["hi"],
                             student_gain_significant=stats.excludes_zero(ci["lo"], ci["hi"]))
                if not np.isfinite(denom):
                    r["note"] = "a teacher's test accuracy is missing, so no share is computed"
                elif denom <= 0:
                    r["note"] = "the ensemble did not beat the single teacher, so the share is undefined"
                elif not r["denominator_ok"]:
                    # A share of a sliver (+0.1 pp = 1 test point in 1,000) is noise divided by
                    # noise: hundreds of percent either way. Not reported.
                    r["note"] = (f"the ensemble beat the single teacher by only {100 * denom:+.1f} pp, less than "
                                 f"{100 * MIN_TEACHER_GAIN:.1f} pp: too small a gain to apportion")
                elif r["n"] > 0:
                    r.update(share=r["student_gain_mean"] / denom, share_lo=r["student_gain_lo"] / denom,
                             share_hi=r["student_gain_hi"] / denom)
                else:
                    r["note"] = "no paired students from both teachers, so no share is computed"
                rows.append(r)
    out = pd.DataFrame(rows, columns=SHARE_COLUMNS)
    out["student_size"] = out["student_size"].astype("Int64")
    for c in ("student_gain_significant", "denominator_ok"):
        out[c] = out[c].astype(bool)
    return out.reset_index(drop=True)
