"""The evaluate stage on language-model data: every cell's and teacher's scores (computed by the
jobs that trained them, engine/lm_eval.py) in one long table, and the headline numbers.

    distillstudy evaluate --lm-cells models/students/hmm/gpt-16/baseline.lm.npz ... \
        --lm-teachers models/teachers/hmm.lm.json --out-lm-results reports/lm_results.csv \
        --out-lm-metrics reports/lm_metrics.json

One row per (dataset, student, cell, replicate, split, metric), LM_COLUMNS; the teacher's rows
have student and cell "teacher", the true language's (synthetic_lm) "oracle". The cells come
from Snakemake's expand() over params.yaml, never from a folder glob. Needs no torch.
The evaluate stage's module imports this one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from distillstudy.artifacts import load_npz, read_record, write_json, write_text

LM_COLUMNS = ["dataset", "student", "family", "student_size", "n_params", "cell", "objective", "source",
              "on_policy_fraction", "alpha", "setting", "replicate", "seed", "split", "metric", "value"]
#: The reference rows' student and cell names.
TEACHER, ORACLE = "teacher", "oracle"


def _reference_rows(path: str) -> list[dict]:
    record = json.loads(Path(path).read_text())
    rows = []
    for who, splits in record["metrics"].items():
        base = {"dataset": record["dataset"], "student": who, "family": who, "student_size": None,
                "n_params": record["n_params"] if who == TEACHER else None, "cell": who, "objective": who,
                "source": "", "on_policy_fraction": None, "alpha": None, "setting": "", "replicate": 0, "seed": None}
        rows += [{**base, "split": split, "metric": k, "value": v} for split, values in splits.items()
                 for k, v in values.items()]
    return rows


def _cell_rows(path: str) -> list[dict]:
    record = read_record(load_npz(path))
    base = {k: record[k] for k in ("dataset", "student", "family", "student_size", "n_params", "cell", "objective",
                                   "source", "on_policy_fraction", "alpha", "setting")}
    return [{**base, **row} for row in record["rows"]]


def lm_results(cells: list[str], teachers: list[str]) -> pd.DataFrame:
    rows = [row for path in teachers for row in _reference_rows(path)]
    rows += [row for path in cells for row in _cell_rows(path)]
    return pd.DataFrame(rows, columns=LM_COLUMNS)


def headline(frame: pd.DataFrame) -> dict:
    """reports/lm_metrics.json (dvc metrics): per dataset, the teacher's and oracle's test scores
    and each student cell's test means over replicates."""
    test = frame[frame["split"] == "test"]
    out: dict = {}
    for (dataset, student, cell), group in test.groupby(["dataset", "student", "cell"], sort=True):
        means = group.groupby("metric", sort=True)["value"].mean()
        entry = out.setdefault(dataset, {}).setdefault(student, {})
        target = entry if student in (TEACHER, ORACLE) else entry.setdefault(cell, {})
        target.update({k: round(float(v), 6) for k, v in means.items()})
    return out


def run(*, cells: list[str], teachers: list[str], out_results: str, out_metrics: str) -> pd.DataFrame:
    frame = lm_results(cells, teachers)
    write_text(out_results, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_json(out_metrics, headline(frame))
    print(f"evaluate: {len(cells)} language-model cells, {len(frame)} rows -> {out_results}")
    return frame
