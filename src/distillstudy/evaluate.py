"""The `evaluate` stage: every model's metrics on every split, in long format.

    distillstudy evaluate --data data/prepared/*.npz --teachers ... --cells ... \
        --out-results reports/results.csv --out-metrics reports/metrics.json

Besides results.csv it writes calibration.csv beside it (reports/calibration.csv):
the reliability-diagram bins of every model and seed on the test split, with the
same equal-width confidence bins as the ECE in results.csv.

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
#: calibration.csv: one row per (model, seed, bin) on CALIBRATION_SPLIT; empty bins
#: are kept (count 0, empty mean_confidence and accuracy), so every model has n_bins rows.
CALIBRATION_COLUMNS = ["dataset", "model", "student_size", "temperature", "alpha", "seed", "split", "bin",
                       "bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
CALIBRATION_SPLIT = "test"
CALIBRATION_FILE = "calibration.csv"
MODEL_ORDER = {"teacher": 0, "baseline": 1, "logit_mse": 2, "distilled": 3}


def teacher_rows(name: str, data: dict, teacher: dict, record: dict, n_bins: int) -> list[dict]:
    base = {"dataset": name, "model": "teacher", "student_size": "", "temperature": "", "alpha": "",
            "seed": record["seed"]}
    rows = [{**base, "split": "all", "metric": "n_params", "value": record["n_params"]}]
    for s in SPLITS:
        for metric, value in metrics.all_metrics(teacher[f"logits_{s}"], data[f"y_{s}"], None, n_bins).items():
            rows.append({**base, "split": s, "metric": metric, "value": value})
    return rows


def reliability_bins(logits, y, n_bins: int) -> list[dict]:
    """Reliability-diagram bins of the top-1 confidence: equal-width bins
    (i/B, (i+1)/B] exactly as `metrics.ece` uses them, so that
    sum_b count_b * |accuracy_b - mean_confidence_b| / n == metrics.ece(logits, y, B)."""
    p = metrics.softmax(logits)
    confidence = p.max(axis=-1)
    correct = (p.argmax(axis=-1) == np.asarray(y)).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        in_bin = bins == b
        count = int(in_bin.sum())
        rows.append({"bin": b, "bin_lower": b / n_bins, "bin_upper": (b + 1) / n_bins, "count": count,
                     "mean_confidence": float(confidence[in_bin].mean()) if count else np.nan,
                     "accuracy": float(correct[in_bin].mean()) if count else np.nan})
    return rows


def teacher_calibration_rows(name: str, data: dict, teacher: dict, record: dict, n_bins: int) -> list[dict]:
    s = CALIBRATION_SPLIT
    base = {"dataset": name, "model": "teacher", "student_size": "", "temperature": "", "alpha": "",
            "seed": record["seed"], "split": s}
    return [{**base, **b} for b in reliability_bins(teacher[f"logits_{s}"], data[f"y_{s}"], n_bins)]


def cell_calibration_rows(data: dict, cell: dict, n_bins: int) -> list[dict]:
    from distillstudy.params import format_temperature

    record = read_record(cell)
    temperature = "" if record["temperature"] is None else format_temperature(record["temperature"])
    s = CALIBRATION_SPLIT
    rows = []
    for member, seed in enumerate(record["seeds"]):
        base = {"dataset": record["dataset"], "model": record["model"], "student_size": record["student_size"],
                "temperature": temperature, "alpha": record["alpha"], "seed": seed, "split": s}
        rows += [{**base, **b} for b in reliability_bins(cell[f"logits_{s}"][member], data[f"y_{s}"], n_bins)]
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


def sort_results(frame: pd.DataFrame, columns: list[str] = COLUMNS, last: str = "metric") -> pd.DataFrame:
    key = frame.assign(_m=frame["model"].map(MODEL_ORDER),
                       _size=pd.to_numeric(frame["student_size"], errors="coerce").fillna(-1),
                       _t=pd.to_numeric(frame["temperature"], errors="coerce").fillna(-1))
    key = key.sort_values(["dataset", "_size", "_m", "_t", "seed", "split", last], kind="mergesort")
    return key[columns].reset_index(drop=True)


def _finite(value):
    """JSON has no NaN: a CI that does not exist (one seed) is written as null."""
    value = float(value)
    return value if np.isfinite(value) else None


def summarise(frame: pd.DataFrame) -> dict:
    """metrics.json: per dataset, the teacher, and per size the baseline against the
    temperature chosen on validation (the report's own rule, stats.best_temperature)
    with its paired test gain and 95% CI."""
    from distillstudy import stats

    results = stats.normalise_results(frame)
    summary = {}
    for row in stats.teacher_summary(results).itertuples(index=False):
        summary[row.dataset] = {"teacher": {"test_accuracy": _finite(row.test_accuracy),
                                            "train_mean_max_prob": _finite(row.train_mean_max_prob)}}
    base = (results[(results.model == "baseline") & (results.split == "test") & (results.metric == "accuracy")]
            .groupby(["dataset", "student_size"])["value"].mean())
    for (dataset, size), value in base.items():
        summary.setdefault(dataset, {})[f"h{size}"] = {"baseline_test_accuracy": _finite(value)}
    for row in stats.best_temperature(results).itertuples(index=False):
        summary[row.dataset][f"h{row.student_size}"].update({
            "best_temperature_on_val": row.temperature,
            "best_test_accuracy": _finite(row.test_accuracy),
            "best_gain": _finite(row.gain_mean),
            "best_gain_ci95": [_finite(row.gain_lo), _finite(row.gain_hi)],
        })
    return summary


def run(*, data: list[str], teachers: list[str], teacher_meta: list[str], cells: list[str],
        ece_bins: int, out_results: str, out_metrics: str, out_calibration: str | None = None,
        design_cells: list[str] = (), transfer_sets: list[str] = (), out_designs: str | None = None) -> pd.DataFrame:
    """`data`, `teachers` and `teacher_meta` are parallel lists, one entry per dataset.
    `out_calibration` defaults to calibration.csv in the folder of `out_results`.
    `out_designs` (designs.csv) is written when given: header only without design cells."""
    rows, calibration = [], []
    by_name, records = {}, {}
    for data_path, logits_path, meta_path in zip(data, teachers, teacher_meta, strict=True):
        record = json.loads(Path(meta_path).read_text())
        name = record["dataset"]
        records[name] = record
        by_name[name] = (load_npz(data_path), load_npz(logits_path))
        rows += teacher_rows(name, *by_name[name], record, ece_bins)
        calibration += teacher_calibration_rows(name, *by_name[name], record, ece_bins)
    for path in cells:
        cell = load_npz(path)
        name = read_record(cell)["dataset"]
        if name not in by_name:
            raise ValueError(f"{path}: cell of dataset {name!r}, which has no teacher in this run")
        rows += cell_rows(*by_name[name], cell, ece_bins)
        calibration += cell_calibration_rows(by_name[name][0], cell, ece_bins)
    frame = sort_results(pd.DataFrame(rows, columns=COLUMNS).astype({"student_size": str, "temperature": str}))
    write_text(out_results, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_json(out_metrics, summarise(frame))
    cal = sort_results(pd.DataFrame(calibration, columns=CALIBRATION_COLUMNS)
                       .astype({"student_size": str, "temperature": str}), CALIBRATION_COLUMNS, "bin")
    out_calibration = Path(out_results).with_name(CALIBRATION_FILE) if out_calibration is None else out_calibration
    write_text(out_calibration, cal.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    if out_designs is not None:
        write_designs(out_designs, by_name, records, cells, design_cells, transfer_sets, ece_bins)
    return frame


def write_designs(path: str, by_name: dict, records: dict, cells: list[str], design_cells: list[str],
                  transfer_sets: list[str], ece_bins: int) -> None:
    from distillstudy import designs

    for cell_path in design_cells:
        if read_record(load_npz(cell_path))["dataset"] not in by_name:
            raise ValueError(f"{cell_path}: design cell of a dataset with no teacher in this run")
    if design_cells:
        frame = designs.build({n: (*by_name[n], records[n]) for n in by_name}, cells, design_cells,
                              transfer_sets, ece_bins)
    else:
        frame = pd.DataFrame(columns=designs.COLUMNS)
    write_text(path, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
