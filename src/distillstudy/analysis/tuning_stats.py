"""Equal-effort tuning (distill.tune), as results.csv records it: the optimiser settings
each tuned cell chose on validation (split "all" metrics lr, weight_decay, epochs), and
the tuned hard-label baseline against its untuned twin (model "baseline_untuned": the
same seeds at distill.lr / epochs / weight_decay, kept by the baseline's own job).

    >>> chosen_settings(df)              # one row per tuned cell: lr, weight_decay, epochs
    >>> baseline_tuning(df)              # per (dataset, family, size): tuned vs untuned baseline

The tuned-minus-untuned difference is paired by seed (both from the same initial
weights and batch order) with a Student-t CI over seeds, as every gain of the report.
Its selection used the validation split only; the test accuracy is reported after.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillstudy.analysis import stats
from distillstudy.grid import TUNING_KEYS, UNTUNED_BASELINE

KEY = ["dataset", "family", "student_size", "model", "setting", "temperature", "alpha"]


def chosen_settings(results_df: pd.DataFrame) -> pd.DataFrame:
    """The settings every tuned cell chose (the same for all its seeds): columns KEY + TUNING_KEYS."""
    df = stats.normalise_results(results_df)
    rows = df[(df["split"] == "all") & df["metric"].isin(TUNING_KEYS)]
    if rows.empty:
        return pd.DataFrame(columns=KEY + list(TUNING_KEYS))
    out = rows.pivot_table(index=KEY, columns="metric", values="value", aggfunc="first", dropna=False).reset_index()
    out = out.dropna(subset=[c for c in TUNING_KEYS if c in out.columns], how="all")
    out.columns.name = None
    return out[KEY + [c for c in TUNING_KEYS if c in out.columns]].reset_index(drop=True)


def baseline_tuning(results_df: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family, student_size) with an untuned twin: the tuned baseline's and
    the untuned baseline's mean test accuracy, their paired difference (tuned - untuned)
    with its CI, and the tuned baseline's chosen settings."""
    df = stats.normalise_results(results_df)
    acc = df[(df["split"] == "test") & (df["metric"] == "accuracy") & df["model"].isin(["baseline", UNTUNED_BASELINE])]
    wide = acc.pivot_table(index=["dataset", "family", "student_size", "seed"], columns="model", values="value")
    cols = ["dataset", "family", "student_size", "n", "tuned", "untuned", "diff_mean", "diff_lo", "diff_hi",
            "significant", *TUNING_KEYS]
    if UNTUNED_BASELINE not in wide.columns:
        return pd.DataFrame(columns=cols)
    chosen = chosen_settings(df)
    chosen = chosen[chosen["model"] == "baseline"].set_index(["dataset", "family", "student_size"])
    rows = []
    for (ds, family, size), g in wide.dropna().groupby(level=["dataset", "family", "student_size"], sort=True):
        ci = stats.paired_diff_ci((g["baseline"] - g[UNTUNED_BASELINE]).to_numpy(), confidence)
        picked = chosen.loc[(ds, family, size)] if (ds, family, size) in chosen.index else {}
        rows.append({"dataset": ds, "family": family, "student_size": size, "n": ci["n"],
                     "tuned": float(g["baseline"].mean()), "untuned": float(g[UNTUNED_BASELINE].mean()),
                     "diff_mean": ci["mean"], "diff_lo": ci["lo"], "diff_hi": ci["hi"],
                     "significant": stats.excludes_zero(ci["lo"], ci["hi"]),
                     **{k: (picked[k] if k in picked else np.nan) for k in TUNING_KEYS}})
    out = pd.DataFrame(rows, columns=cols)
    out["student_size"] = stats.size_column(out["student_size"])
    return out
