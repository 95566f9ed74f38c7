"""The `evaluate` stage: every model's metrics on every split, in long format.

    distillstudy evaluate --data data/prepared/*.npz --teachers ... --cells ... \
        --out-results reports/results.csv --out-metrics reports/metrics.json

The list of cells comes from Snakemake's expand() over params.yaml, never from
globbing a folder, so files of an older, larger grid cannot leak in.
Needs no torch: logits were saved by the teacher and distill stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from distillstudy import metrics
from distillstudy.atomic import write_json, write_text
from distillstudy.datasets import SPLITS, load_npz
from distillstudy.distill import read_record

COLUMNS = ["dataset", "model", "student_size", "temperature", "alpha", "seed", "split", "metric", "value"]
MODEL_ORDER = {"teacher": 0, "baseline": 1, "logit_mse": 2, "distilled": 3}


def teacher_rows(name: str, data: dict, teacher: dict, record: dict, n_bins: int) -> list[dict]:
    base = {"dataset": name, "model": "teacher", "student_size": "", "temperature": "", "alpha": "",
            "seed": record["seed"]}
    rows = [{**base, "split": "all", "metric": "n_params", "value": record["n_params"]}]
    for s in SPLITS:
        for metric, value in metrics.all_metrics(teacher[f"logits_{s}"], data[f"y_{s}"], None, n_bins).items():
            rows.append({**base, "split": s, "metric": metric, "value": value})
    return rows


def cell_rows(data: dict, teacher: dict, cell: dict, n_bins: int) -> list[dict]:
    from distillstudy.params import format_temperature

    record = read_record(cell)
    temperature = "" if record["temperature"] is None else format_temperature(record["temperature"])
    rows = []
    for member, seed in enumerate(record["seeds"]):
        base = {"dataset": record["dataset"], "model": record["model"],
                "student_size": record["student_size"], "temperature": temperature,
                "alpha": record["alpha"], "seed": seed}
        rows.append({**base, "split": "all", "metric": "n_params", "value": record["n_params"]})
        for s in SPLITS:
            scores = metrics.all_metrics(cell[f"logits_{s}"][member], data[f"y_{s}"],
                                         teacher[f"logits_{s}"], n_bins)
            rows += [{**base, "split": s, "metric": m, "value": v} for m, v in scores.items()]
    return rows


def sort_results(frame: pd.DataFrame) -> pd.DataFrame:
    key = frame.assign(_m=frame["model"].map(MODEL_ORDER),
                       _size=pd.to_numeric(frame["student_size"], errors="coerce").fillna(-1),
                       _t=pd.to_numeric(frame["temperature"], errors="coerce").fillna(-1))
    key = key.sort_values(["dataset", "_size", "_m", "_t", "seed", "split", "metric"], kind="mergesort")
    return key[COLUMNS].reset_index(drop=True)


def summarise(frame: pd.DataFrame) -> dict:
    """metrics.json: per dataset, teacher and per-size baseline vs best-on-validation cell."""
    summary = {}
    mean = (frame[frame["split"].isin(["val", "test"])]
            .groupby(["dataset", "model", "student_size", "temperature", "split", "metric"])["value"]
            .mean())
    for dataset, part in frame.groupby("dataset", sort=True):
        entry = {}
        teacher = part[part["model"] == "teacher"]
        pick = lambda s, m: float(teacher[(teacher.split == s) & (teacher.metric == m)]["value"].iloc[0])
        entry["teacher"] = {"test_accuracy": pick("test", "accuracy"),
                            "train_mean_max_prob": pick("train", "mean_max_prob")}
        students = part[part["model"] != "teacher"]
        for size in sorted(students["student_size"].unique(), key=int):
            m = mean.loc[dataset]
            base = float(m.loc[("baseline", size, "", "test", "accuracy")])
            distilled = m.loc["distilled"].xs(size, level="student_size") if "distilled" in m.index else None
            row = {"baseline_test_accuracy": base}
            if distilled is not None and len(distilled):
                val_acc = distilled.xs(("val", "accuracy"), level=("split", "metric"))
                best_t = max(val_acc.index, key=lambda t: (val_acc[t], -float(t)))
                best = float(distilled.loc[(best_t, "test", "accuracy")])
                row.update({"best_temperature_on_val": best_t, "best_test_accuracy": best,
                            "best_gain": best - base})
            entry[f"h{size}"] = row
        summary[dataset] = entry
    return summary


def run(*, data: list[str], teachers: list[str], teacher_meta: list[str], cells: list[str],
        ece_bins: int, out_results: str, out_metrics: str) -> pd.DataFrame:
    """`data`, `teachers` and `teacher_meta` are parallel lists, one entry per dataset."""
    rows = []
    by_name = {}
    for data_path, logits_path, meta_path in zip(data, teachers, teacher_meta, strict=True):
        record = json.loads(Path(meta_path).read_text())
        name = record["dataset"]
        by_name[name] = (load_npz(data_path), load_npz(logits_path))
        rows += teacher_rows(name, *by_name[name], record, ece_bins)
    for path in cells:
        cell = load_npz(path)
        name = read_record(cell)["dataset"]
        if name not in by_name:
            raise ValueError(f"{path}: cell of dataset {name!r}, which has no teacher in this run")
        rows += cell_rows(*by_name[name], cell, ece_bins)
    frame = sort_results(pd.DataFrame(rows, columns=COLUMNS).astype({"student_size": str, "temperature": str}))
    write_text(out_results, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_json(out_metrics, summarise(frame))
    return frame
