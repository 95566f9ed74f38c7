"""Self-distillation and born-again generations (params.yaml designs.generations): can a
student of the teacher's own architecture beat its teacher?

Generation 1's students have the reference teacher's architecture and learn from it (KD at
T = 1, at alpha = 1 and at designs.alpha); generation k + 1's replicate r learns from
generation k's replicate r (its alpha = 1 cell: Furlanello et al. 2018, "Born-again neural
networks"). The seed's argument (data-processing inequality): a student of the SAME class,
globally optimised on the teacher's targets alone (alpha = 1), cannot carry more
information about y than its teacher, so it cannot beat it; a non-convex, finitely trained
student may (Allen-Zhu and Li's "multi-view" account of self-distillation).

reports/generations.csv, one row per (dataset, generation, alpha, replicate, metric):
the student's test and validation accuracy and test NLL, and its own teacher's test
accuracy and NLL (generation 1: the reference teacher, the same for every replicate;
generation k > 1: replicate r of generation k - 1's alpha = 1 cell). `summary` pairs each
student with its teacher by replicate: the gain student - teacher with a Student-t CI over
replicates (stats.paired_diff_ci). For generation 1 the teacher is ONE model, so that CI
covers the students' seed-to-seed variation only, not the teacher's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillstudy.analysis import metrics, stats
from distillstudy.artifacts import read_record
from distillstudy.grid import GENERATIONS, format_number, parse_variant

COLUMNS = ["dataset", "generation", "alpha", "replicate", "seed", "metric", "value"]
SUMMARY_COLUMNS = ["dataset", "generation", "alpha", "chosen", "n", "student_mean", "teacher_mean",
                   "gain_mean", "gain_lo", "gain_hi", "over_reference_mean", "over_reference_lo",
                   "over_reference_hi", "reference_accuracy"]


def _scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return metrics.accuracy(logits, y), metrics.nll(logits, y)


def build(datasets: dict[str, tuple[dict, dict]], design_cells) -> pd.DataFrame:
    """`datasets`: name -> (prepared arrays, the reference teacher's logits npz);
    `design_cells`: every design cell, loaded (cells of other variants are skipped)."""
    cells: dict[tuple[str, int, float], tuple[dict, dict]] = {}
    for cell in design_cells:
        record = read_record(cell)
        parsed = parse_variant(record.get("variant", "reference"))
        if parsed["axis"] == GENERATIONS:
            cells[(record["dataset"], parsed["value"], float(record["alpha"]))] = (record, cell)
    rows = []
    for (dataset, k, alpha), (record, cell) in sorted(cells.items()):
        data, reference = datasets[dataset]
        teacher = cells.get((dataset, k - 1, 1.0)) if k > 1 else None
        if k > 1 and teacher is None:
            raise ValueError(f"{dataset}: generation {k} has no generation {k - 1} alpha = 1 cell to compare with")
        for r, seed in enumerate(record["seeds"]):
            base = {"dataset": dataset, "generation": k, "alpha": format_number(alpha), "replicate": r, "seed": seed}
            acc, nll = _scores(cell["logits_test"][r], data["y_test"])
            t_logits = reference["logits_test"] if k == 1 else teacher[1]["logits_test"][r]
            t_acc, t_nll = _scores(t_logits, data["y_test"])
            values = {"test_accuracy": acc, "test_nll": nll,
                      "val_accuracy": metrics.accuracy(cell["logits_val"][r], data["y_val"]),
                      "teacher_test_accuracy": t_acc, "teacher_test_nll": t_nll,
                      "reference_test_accuracy": metrics.accuracy(reference["logits_test"], data["y_test"])}
            rows += [{**base, "metric": m, "value": v} for m, v in values.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def load(path) -> pd.DataFrame | None:
    """generations.csv as `evaluate` writes it (None when absent or empty)."""
    if path is None:
        return None
    frame = pd.read_csv(path, dtype={"alpha": str, "dataset": str}, keep_default_na=False, na_values=[""])
    return None if frame.empty else frame


def summary(frame: pd.DataFrame | None, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, generation, alpha): the students against their own teachers and against
    the reference teacher, paired by replicate; `chosen` marks each generation's alpha with
    the highest mean validation accuracy (ties: the larger alpha, the born-again link)."""
    if frame is None or frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    wide = frame.pivot_table(index=["dataset", "generation", "alpha", "replicate"], columns="metric",
                             values="value", aggfunc="first").reset_index()
    rows = []
    for (dataset, k), g in wide.groupby(["dataset", "generation"], sort=True):
        val = g.groupby("alpha")["val_accuracy"].mean()
        chosen = max(val.index, key=lambda a: (round(val[a], 12), float(a)))
        for alpha, ga in g.groupby("alpha", sort=False):
            gain = stats.paired_diff_ci(ga["test_accuracy"] - ga["teacher_test_accuracy"], confidence)
            over = stats.paired_diff_ci(ga["test_accuracy"] - ga["reference_test_accuracy"], confidence)
            rows.append({"dataset": dataset, "generation": int(k), "alpha": alpha, "chosen": alpha == chosen,
                         "n": gain["n"], "student_mean": ga["test_accuracy"].mean(),
                         "teacher_mean": ga["teacher_test_accuracy"].mean(), "gain_mean": gain["mean"],
                         "gain_lo": gain["lo"], "gain_hi": gain["hi"], "over_reference_mean": over["mean"],
                         "over_reference_lo": over["lo"], "over_reference_hi": over["hi"],
                         "reference_accuracy": ga["reference_test_accuracy"].iloc[0]})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = out["alpha"].map(float)
    return out.assign(_a=-order).sort_values(["dataset", "generation", "_a"]).drop(columns="_a").reset_index(drop=True)
