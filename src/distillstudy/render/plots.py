"""The table behind `dvc plots show` / `dvc plots diff`: test accuracy against
temperature, written by the report stage as `<plots_dir>/acc_vs_temperature.csv`
(the file dvc.yaml's `plots:` names, drawn by the template
workflow/report/dvc_accuracy_vs_temperature.json). Its `family` column came with student
families; the template reads a revision's table without it (`dvc plots diff` against
an older commit) as the mlp students it held."""

from __future__ import annotations

import pandas as pd

from distillstudy.grid import number_value
from distillstudy.analysis import stats

#: The table's file name inside the report's plots folder.
PLOTS_CSV = "acc_vs_temperature.csv"
COLUMNS = ["dataset", "family", "student_size", "model", "temperature", "test_accuracy"]


def accuracy_vs_temperature(results_df: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy over seeds per (dataset, family, student_size, temperature) of
    the distilled students (model "distilled"), plus each student's hard-label baseline
    repeated at every temperature of its dataset (model "baseline", a flat
    reference line): x = temperature, y = test_accuracy; the template draws one
    panel per dataset, one colour per student (family and size), baselines dashed."""
    cs = stats.cell_summary(results_df, "accuracy", "test")
    student = ["dataset", "family", "student_size"]
    d = cs[cs["model"] == "distilled"]
    d = (d.groupby(student + ["temperature"], sort=False)["mean"].mean().reset_index()
         .rename(columns={"mean": "test_accuracy"}).assign(model="distilled"))
    b = cs[cs["model"] == "baseline"].groupby(student, sort=False)["mean"].mean()
    ts = d[["dataset", "temperature"]].drop_duplicates()
    base = ts.merge(b.rename("test_accuracy").reset_index(), on="dataset").assign(model="baseline")
    d = pd.concat([d, base], ignore_index=True)
    # Baselines after the distilled rows of their size, temperatures in numeric order,
    # so the file (kept in git for `dvc plots diff`) only changes when a number does.
    d = (d.assign(_t=d["temperature"].map(number_value), _m=(d["model"] == "baseline").astype(int))
         .sort_values(student + ["_m", "_t"], kind="mergesort").drop(columns=["_t", "_m"]))
    return d[COLUMNS]


def accuracy_vs_temperature_csv(results_df: pd.DataFrame) -> str:
    """`accuracy_vs_temperature` as CSV text (10 significant digits, LF line ends)."""
    return accuracy_vs_temperature(results_df).to_csv(index=False, float_format="%.10g", lineterminator="\n")
