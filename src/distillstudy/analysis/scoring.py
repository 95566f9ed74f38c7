"""Long-format scores: one row per (model, seed, split, metric), and the reliability bins.

The rows of results.csv, calibration.csv and (through analysis.designs) designs.csv are
built here, from logits the teacher and distill stages saved, so every table computes a
metric the same way. metrics.json (`summarise`) uses the report's own selection rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillstudy.analysis import metrics, objective_stats, stats
from distillstudy.artifacts import read_record
from distillstudy.grid import HYPER_COLUMN, OBJECTIVE_MODEL, SPLITS, TUNING_KEYS, UNTUNED_BASELINE, format_number
from distillstudy.students import student_name

#: results.csv's columns (stats.COLUMNS, what the report reads); a cell's identifying
#: columns are those before `seed`: one cell = (dataset, family, student_size, model, setting,
#: alpha),
#: `objective` and the hyper-parameter columns (grid.HYPER_COLUMN) spell out its setting.
COLUMNS = stats.COLUMNS
CELL_COLUMNS = COLUMNS[:COLUMNS.index("seed")]
#: calibration.csv: one row per (model, seed, bin) on CALIBRATION_SPLIT; empty bins
#: are kept (count 0, empty mean_confidence and accuracy), so every model has n_bins rows.
CALIBRATION_COLUMNS = stats.CALIBRATION_COLUMNS
CALIBRATION_SPLIT = "test"
CALIBRATION_FILE = "calibration.csv"
MODEL_ORDER = {"teacher": 0, "baseline": 1, UNTUNED_BASELINE: 1.5, "control": 2,
               **{model: 3 + i for i, model in enumerate(OBJECTIVE_MODEL.values())}}
TEACHER_CELL = {column: "" for column in CELL_COLUMNS}


def cell_columns(record: dict) -> dict:
    """A student cell's identifying columns, from the record its distill job wrote (a
    record written before student families has no `family`: it was today's mlp)."""
    return {"dataset": record["dataset"], "family": record.get("family", stats.LEGACY_FAMILY),
            "model": record["model"], "objective": record["objective"],
            "setting": record["setting"], "student_size": record["student_size"],
            **{column: format_number(record.get(column)) for column in HYPER_COLUMN.values()},
            "alpha": format_number(record["alpha"])}


def teacher_rows(name: str, data: dict, teacher: dict, record: dict, n_bins: int) -> list[dict]:
    base = {**TEACHER_CELL, "dataset": name, "model": "teacher", "seed": record["seed"]}
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
    base = {**TEACHER_CELL, "dataset": name, "model": "teacher", "seed": record["seed"], "split": s}
    return [{**base, **b} for b in reliability_bins(teacher[f"logits_{s}"], data[f"y_{s}"], n_bins)]


def cell_calibration_rows(data: dict, cell: dict, n_bins: int) -> list[dict]:
    record = read_record(cell)
    s = CALIBRATION_SPLIT
    rows = []
    for member, seed in enumerate(record["seeds"]):
        base = {**cell_columns(record), "seed": seed, "split": s}
        rows += [{**base, **b} for b in reliability_bins(cell[f"logits_{s}"][member], data[f"y_{s}"], n_bins)]
    return rows


def cell_rows(data: dict, teacher: dict, cell: dict, n_bins: int) -> list[dict]:
    record = read_record(cell)
    rows = []
    models = [("", "logits")]  # (model override, logits prefix): the cell's own students
    if "untuned_logits_test" in cell:  # a tuned baseline also keeps its untuned twin (distill.tune)
        models.append((UNTUNED_BASELINE, "untuned_logits"))
    for model, prefix in models:
        for member, seed in enumerate(record["seeds"]):
            base = {**cell_columns(record), "seed": seed, **({"model": model} if model else {})}
            rows.append({**base, "split": "all", "metric": "n_params", "value": record["n_params"]})
            if "tuning" in record and not model:  # the optimiser settings chosen on validation
                rows += [{**base, "split": "all", "metric": k, "value": record[k]} for k in TUNING_KEYS]
            for s in SPLITS:
                scores = metrics.all_metrics(cell[f"{prefix}_{s}"][member], data[f"y_{s}"],
                                             teacher[f"logits_{s}"], n_bins)
                rows += [{**base, "split": s, "metric": m, "value": v} for m, v in scores.items()]
    return rows


def sort_results(frame: pd.DataFrame, columns: list[str] = COLUMNS, last: str = "metric") -> pd.DataFrame:
    key = frame.assign(_m=frame["model"].map(MODEL_ORDER),
                       _size=stats.size_column(frame["student_size"]).fillna(-1),
                       _t=pd.to_numeric(frame["temperature"], errors="coerce").fillna(-1),
                       _a=pd.to_numeric(frame["alpha"], errors="coerce").fillna(-1))
    # family after dataset (alphabetically; the teacher's "" first, as its size -1 was).
    key = key.sort_values(["dataset", "family", "_size", "_m", "_t", "setting", "_a", "seed", "split", last],
                          kind="mergesort")
    return key[columns].reset_index(drop=True)


def _finite(value):
    """JSON has no NaN: a CI that does not exist (one seed) is written as null."""
    value = float(value)
    return value if np.isfinite(value) else None


def summarise(frame: pd.DataFrame) -> dict:
    """metrics.json: per dataset, the teacher, and per student (keyed by
    students.student_name(family, size): "h16" for today's mlp, "cnn-8") the baseline against the
    temperature chosen on validation (the report's own rule, stats.best_temperature)
    with its paired test gain and 95% CI, and under "objectives" each objective's
    setting and alpha chosen on validation with its paired test gain and 95% CI (the
    report's objectives table, objective_stats.select_objectives)."""
    results = stats.normalise_results(frame)
    summary = {}
    for row in stats.teacher_summary(results).itertuples(index=False):
        summary[row.dataset] = {"teacher": {"test_accuracy": _finite(row.test_accuracy),
                                            "train_mean_max_prob": _finite(row.train_mean_max_prob)}}
    base = (results[(results.model == "baseline") & (results.split == "test") & (results.metric == "accuracy")]
            .groupby(["dataset", "family", "student_size"])["value"].mean())
    for (dataset, family, size), value in base.items():
        summary.setdefault(dataset, {})[student_name(family, size)] = {"baseline_test_accuracy": _finite(value)}
    for row in stats.best_temperature(results).itertuples(index=False):
        summary[row.dataset][student_name(row.family, row.student_size)].update({
            "best_temperature_on_val": row.temperature,
            "best_test_accuracy": _finite(row.test_accuracy),
            "best_gain": _finite(row.gain_mean),
            "best_gain_ci95": [_finite(row.gain_lo), _finite(row.gain_hi)],
        })
    for row in objective_stats.select_objectives(results).itertuples(index=False):
        size = summary.setdefault(row.dataset, {}).setdefault(student_name(row.family, row.student_size), {})
        size.setdefault("objectives", {})[row.objective] = {
            "setting": row.setting, "alpha": _finite(row.alpha), "test_gain": _finite(row.gain_mean),
            "test_gain_ci95": [_finite(row.gain_lo), _finite(row.gain_hi)]}
    return summary
