"""A synthetic designs.csv with planted effects, for the study-design statistics
and report tests (no study run needed).

Accuracy of a student = 0.70 + size/1000 + SEED_FX[seed] + the level's baseline
offset + the cell's planted effect + NOISE[model][seed]: the noise differs per
model, so paired differences have a known, non-zero spread.
"""

from __future__ import annotations

import pandas as pd
from distillstudy.analysis import design_stats

SIZES = (16, 64)
TEMPS = ("1", "4")
SEEDS = (0, 1, 2, 3)
ALPHA = 0.9
SEED_FX = {0: 0.00, 1: 0.02, 2: -0.01, 3: 0.015}
#: per-model, per-seed noise on every split (baseline noise 0: the paired diff is effect + this noise)
NOISE = {"baseline": (0.0, 0.0, 0.0, 0.0), "control": (0.004, -0.002, 0.001, -0.003),
         "distilled": (0.01, -0.01, 0.005, -0.005)}
STUDENT_METRICS = ("accuracy", "nll", "ece", "brier", "mean_max_prob", "agreement", "kl_teacher")
TEACHER_METRICS = ("accuracy", "nll", "ece", "brier", "mean_max_prob")

#: axis -> level -> planted numbers. teacher: test accuracy; transfer: (accuracy, mean max-prob) on the
#: transfer points; base: the level's baseline offset; test/val: the distilled gain per temperature on
#: the test / validation split; control: the control's gain over the baseline (transfer augmented only).
LEVELS = {
    "transfer": {
        "early_stopped": {"teacher": 0.95, "transfer": (0.99, 0.97), "base": 0.0,
                          "test": {"1": 0.01, "4": 0.015}, "val": {"1": 0.01, "4": 0.015}},
        "in_sample": {"teacher": 0.95, "transfer": (1.0, 0.997), "base": 0.0,
                      "test": {"1": 0.002, "4": 0.004}, "val": {"1": 0.002, "4": 0.004}},
        "cross_fitted": {"teacher": 0.94, "transfer": (0.93, 0.88), "base": 0.0,
                         "test": {"1": 0.01, "4": 0.02}, "val": {"1": 0.01, "4": 0.02}},
        "augmented": {"teacher": 0.95, "transfer": (0.96, 0.93), "base": 0.0, "control": 0.04,
                      "test": {"1": 0.03, "4": 0.05}, "val": {"1": 0.03, "4": 0.05}},
    },
    "epochs": {
        "40": {"base": 0.0, "test": {"1": 0.0, "4": 0.01}, "val": {"1": 0.0, "4": 0.01}},
        "100": {"base": -0.05, "test": {"1": 0.08, "4": 0.12}, "val": {"1": 0.08, "4": 0.12}},
    },
    "teacher_width": {  # non-monotone: the widest teacher is the most accurate, the middle one teaches best
        "0.25": {"teacher": 0.90, "transfer": (0.92, 0.85), "base": 0.0,
                 "test": {"1": 0.01, "4": 0.005}, "val": {"1": 0.01, "4": 0.005}},
        "1": {"teacher": 0.95, "transfer": (0.99, 0.97), "base": 0.0,
              "test": {"1": 0.01, "4": 0.03}, "val": {"1": 0.01, "4": 0.03}},
        # validation prefers T = 1, test would prefer T = 4: the choice must follow validation
        "2": {"teacher": 0.97, "transfer": (0.995, 0.98), "base": 0.0,
              "test": {"1": 0.02, "4": 0.06}, "val": {"1": 0.05, "4": 0.01}},
    },
    "ensemble": {
        "1": {"teacher": 0.95, "transfer": (0.99, 0.97), "base": 0.0,
              "test": {"1": 0.01, "4": 0.02}, "val": {"1": 0.01, "4": 0.02}},
        "5": {"teacher": 0.97, "transfer": (0.995, 0.95), "base": 0.0,
              "test": {"1": 0.02, "4": 0.03}, "val": {"1": 0.02, "4": 0.03}},
    },
    "label_fraction": {
        "0.03": {"base": -0.30, "test": {"1": 0.08, "4": 0.10}, "val": {"1": 0.08, "4": 0.10}},
        "1": {"base": 0.0, "test": {"1": 0.01, "4": 0.02}, "val": {"1": 0.01, "4": 0.02}},
    },
}
REFERENCE_TEACHER = {"teacher": 0.95, "transfer": (0.99, 0.97)}


def student_accuracy(spec: dict, model: str, size: int, seed: int, split: str, T: str = "") -> float:
    acc = 0.70 + size / 1000 + SEED_FX[seed] + spec["base"] + NOISE[model][SEEDS.index(seed)]
    if model == "distilled":
        acc += spec["val" if split == "val" else "test"][T]
    elif model == "control":
        acc += spec["control"]
    return acc


def synthetic_designs(dataset: str = "toy", axes=None, levels: dict | None = None, family: str = "mlp"
                      ) -> pd.DataFrame:
    """The long designs table (columns design_stats.COLUMNS) for `axes` (default all), its
    students of `family` (the reference family's)."""
    levels = LEVELS if levels is None else levels
    rows = []

    def add(axis, level, model, size, T, alpha, seed, split, metric, value):
        rows.append({"dataset": dataset, "axis": axis, "level": level, "family": "" if model == "teacher" else family,
                     "model": model, "student_size": size,
                     "temperature": T, "alpha": alpha, "seed": seed, "split": split, "metric": metric,
                     "value": value})

    for axis in axes or levels:
        for level, spec in levels[axis].items():
            t = spec if "teacher" in spec else REFERENCE_TEACHER
            for split in ("train", "val", "test", "transfer"):
                acc = {"test": t["teacher"], "transfer": t["transfer"][0]}.get(split, t["teacher"] + 0.02)
                mmp = t["transfer"][1] if split == "transfer" else 0.9
                vals = {"accuracy": acc, "nll": 1 - acc, "ece": 0.03, "brier": 0.1, "mean_max_prob": mmp}
                for metric in TEACHER_METRICS:
                    add(axis, level, "teacher", "", "", "", 7, split, metric, vals[metric])
            add(axis, level, "teacher", "", "", "", 7, "all", "n_params", 1000 * float(level)
                if axis == "teacher_width" else 1000)
            for size in SIZES:
                cells = [("baseline", "", 0.0)] + [("distilled", T, ALPHA) for T in TEMPS]
                if "control" in spec:
                    cells.insert(1, ("control", "", 0.0))
                for seed in SEEDS:
                    for model, T, alpha in cells:
                        for split in ("train", "val", "test"):
                            acc = student_accuracy(spec, model, size, seed, split, T)
                            vals = {"accuracy": acc, "nll": 1.5 - acc, "ece": 0.05, "brier": 0.3,
                                    "mean_max_prob": 0.8, "agreement": acc + 0.1, "kl_teacher": 0.2}
                            for metric in STUDENT_METRICS:
                                add(axis, level, model, size, T, alpha, seed, split, metric, vals[metric])
                        add(axis, level, model, size, T, alpha, seed, "all", "n_params", size * 50)
    return pd.DataFrame(rows, columns=design_stats.COLUMNS)
