"""Training curves of the standard engine (engine/standard.py): one row per (model, replicate,
epoch), from the records its teachers and cells keep, as reports/training_curves.csv, the
file dvc.yaml's `training_curves` plot draws (`dvc plots show`). Header only when no model
of the study trained on the standard engine (the stacked engines keep no per-epoch curve).
"""

from __future__ import annotations

import pandas as pd

CURVE_COLUMNS = ["dataset", "family", "student_size", "cell", "seed", "epoch", "lr", "train_loss", "val_accuracy"]
TEACHER = "teacher"


def cell_curves(record: dict) -> list[dict]:
    """A standard-engine cell's curves, replicate by replicate (its record's `curves`)."""
    rows = []
    for seed, history in zip(record["seeds"], record.get("curves") or []):
        base = {"dataset": record["dataset"], "family": record["family"], "student_size": record["student_size"],
                "cell": record["cell"], "seed": seed}
        rows += [{**base, **{k: row[k] for k in CURVE_COLUMNS[5:]}} for row in history]
    return rows


def teacher_curves(record: dict) -> list[dict]:
    """A teacher the standard engine trained: its one curve (fit.curves)."""
    history = record.get("fit", {}).get("curves") or []
    if not history:  # trained by the stacked engines' trainer, or loaded: no curve
        return []
    base = {"dataset": record["dataset"], "family": TEACHER, "student_size": record["architecture"], "cell": TEACHER,
            "seed": record["seed"]}
    return [{**base, **{k: row[k] for k in CURVE_COLUMNS[5:]}} for row in history]


def curves_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
