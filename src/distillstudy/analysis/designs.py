"""reports/designs.csv: the study-design axes in long format (written by `evaluate`).

One row per (dataset, axis, level, family, model, student size, temperature, seed, split,
metric). Each (dataset, axis) is self-contained: it holds its reference level too
(copies of the main grid's cells at the axes' student sizes), so a reader compares
levels without joining files. The designs train only the reference family's students
(the first entry of distill.students), so `family` is that family's label on every
student row ("" on the teacher's); the reference cells copied from the main grid are
that family's only, since a second family may share a size. Models:

- teacher: the level's teacher (a cross-fitted or ensemble teacher is the mean of its
  members' probabilities), on train/val/test and on `transfer`, the points the
  students learn from, scored against their source's hard label;
- baseline: the hard-label student of the level (a level that changes neither data
  nor budget shares the reference baseline: its rows are repeated);
- distilled: one per temperature;
- control: (augmented transfer only) the same copies with their source's hard label.

Student metrics are those of results.csv; agreement is with the level's teacher.
Needs no torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillstudy.analysis import metrics
from distillstudy.analysis.scoring import cell_rows
from distillstudy.analysis.stats import LEGACY_FAMILY
from distillstudy.grid import SPLITS
from distillstudy.artifacts import load_npz
from distillstudy.artifacts import read_record
from distillstudy.grid import AXES, GENERATIONS, REFERENCE, UNTUNED, format_number, parse_variant

COLUMNS = ["dataset", "axis", "level", "family", "model", "student_size", "temperature", "alpha", "seed",
           "split", "metric", "value"]
STUDENT_MODELS = ("baseline", "control", "distilled")


class Level:
    """One level of an axis: its teacher's logits per split and the cells trained under it."""

    def __init__(self, axis: str, level: str, teacher: dict, cells: list[tuple[dict, dict]]):
        self.axis, self.level, self.teacher, self.cells = axis, level, teacher, cells


def reference_teacher(data: dict, logits: dict, record: dict) -> dict:
    """The reference teacher as a level teacher: its transfer points are the training split."""
    out = {f"logits_{s}": logits[f"logits_{s}"] for s in SPLITS}
    out.update(logits_transfer=logits["logits_train"], y_transfer=data["y_train"],
               seed=record["seed"], n_params=record["n_params"])
    return out


def set_teacher(tset: dict, reference: dict, n_train: int) -> dict:
    """A transfer set's teacher. On the training split it is scored where the set holds
    every training point in order (its first rows); a subset's teacher is the reference."""
    record = read_record(tset)
    source = tset["source"]
    covers_train = len(source) >= n_train and np.array_equal(source[:n_train], np.arange(n_train))
    teachers = record.get("teachers") or []
    return {
        "logits_train": tset["logits"][:n_train] if covers_train else reference["logits_train"],
        "logits_val": tset["logits_val"], "logits_test": tset["logits_test"],
        "logits_transfer": tset["logits"], "y_transfer": tset["y"],
        "seed": teachers[0]["seed"] if teachers else reference["seed"],
        "n_params": sum(t["n_params"] for t in teachers) if teachers else reference["n_params"],
    }


def teacher_rows(base: dict, data: dict, teacher: dict, n_bins: int) -> list[dict]:
    base = {**base, "family": "", "model": "teacher", "student_size": "", "temperature": "", "alpha": "",
            "seed": teacher["seed"]}
    rows = [{**base, "split": "all", "metric": "n_params", "value": teacher["n_params"]}]
    labels = {**{s: data[f"y_{s}"] for s in SPLITS}, "transfer": teacher["y_transfer"]}
    for s, y in labels.items():
        scores = metrics.all_metrics(teacher[f"logits_{s}"], y, None, n_bins)
        rows += [{**base, "split": s, "metric": m, "value": v} for m, v in scores.items()]
    return rows


def student_rows(base: dict, data: dict, teacher: dict, cell: dict, n_bins: int) -> list[dict]:
    """results.csv's rows of one cell (agreement with the level's teacher), labelled by axis and level."""
    return [{**row, **base} for row in cell_rows(data, teacher, cell, n_bins)]


def _family(record: dict) -> str:
    return record.get("family", LEGACY_FAMILY)


def _load_cells(reference_paths: list[str], design_paths: list[str]) -> dict[tuple, dict]:
    """(dataset, variant, size, cell name) -> the cell's npz: every design cell, and the
    main grid's cells of the family the design cells of their dataset have (the key has
    no family: within one dataset's designs there is one)."""
    cells, families = {}, {}
    for path in design_paths:
        cell = load_npz(path)
        r = read_record(cell)
        if parse_variant(r.get("variant", REFERENCE))["axis"] == GENERATIONS:
            continue  # the teacher's own architecture: analysis/generations.py
        families.setdefault(r["dataset"], set()).add(_family(r))
        cells[(r["dataset"], r.get("variant", REFERENCE), int(r["student_size"]), r["cell"])] = cell
    for dataset, found in families.items():
        if len(found) > 1:
            raise ValueError(f"design cells of {dataset!r} come from several student families {sorted(found)}: "
                             f"the designs train the reference family's students only")
    for path in reference_paths:
        cell = load_npz(path)
        r = read_record(cell)
        if _family(r) in families.get(r["dataset"], ()):
            cells[(r["dataset"], r.get("variant", REFERENCE), int(r["student_size"]), r["cell"])] = cell
    return cells


def dataset_levels(name: str, data: dict, reference: dict, cells: dict, sets: dict) -> list[Level]:
    """Every level of every axis present for one dataset, the reference level first."""
    # Where distill.tune tuned the main grid, the designs' reference level is their own
    # untuned cells (grid.UNTUNED), trained as every variant is: one factor per axis.
    ref_variant = UNTUNED if any(d == name and v == UNTUNED for (d, v, _, _) in cells) else REFERENCE
    variants = list(dict.fromkeys(v for (d, v, _, _) in cells if d == name and v not in (REFERENCE, UNTUNED)))
    levels = []
    for axis in AXES:
        names = [v for v in variants if parse_variant(v)["axis"] == axis]
        if not names:
            continue
        sizes = sorted({size for (d, v, size, _) in cells if d == name and v in names})
        ref_cells = {k: c for k, c in cells.items() if k[0] == name and k[1] == ref_variant and k[2] in sizes
                     and read_record(c)["model"] in ("baseline", "distilled")}
        ref_level = (format_number(read_record(next(iter(ref_cells.values())))["epochs"]) if axis == "epochs"
                     else format_number(AXES[axis][1]))
        levels.append(Level(axis, ref_level, reference, list(ref_cells.items())))
        for variant in names:
            teacher = (set_teacher(sets[(name, variant)], reference, len(data["y_train"]))
                       if (name, variant) in sets else reference)
            own = {k: c for k, c in cells.items() if k[0] == name and k[1] == variant}
            has_baseline = {k[2] for k in own if k[3] == "baseline"}
            shared = {k: c for k, c in ref_cells.items() if k[3] == "baseline" and k[2] not in has_baseline}
            levels.append(Level(axis, parse_variant(variant)["level"], teacher,
                                list(shared.items()) + list(own.items())))
    return levels


def build(datasets: dict[str, tuple[dict, dict, dict]], reference_cells: list[str], design_cells: list[str],
          transfer_sets: list[str], n_bins: int) -> pd.DataFrame:
    """`datasets`: name -> (prepared arrays, reference teacher logits npz, teacher record)."""
    cells = _load_cells(list(reference_cells), list(design_cells))
    sets = {}
    for path in transfer_sets:
        tset = load_npz(path)
        r = read_record(tset)
        sets[(r["dataset"], r["variant"])] = tset
    rows = []
    for name, (data, logits, record) in datasets.items():
        reference = reference_teacher(data, logits, record)
        for level in dataset_levels(name, data, reference, cells, sets):
            base = {"dataset": name, "axis": level.axis, "level": level.level}
            rows += teacher_rows(base, data, level.teacher, n_bins)
            for _, cell in level.cells:
                rows += student_rows(base, data, level.teacher, cell, n_bins)
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"student_size": str, "temperature": str})
    return sort_designs(frame)


def sort_designs(frame: pd.DataFrame) -> pd.DataFrame:
    """Axes in AXES order, levels as they were listed (reference first), then as results.csv."""
    order = {"teacher": 0, "baseline": 1, "control": 2, "distilled": 3}
    key = frame.assign(
        _axis=frame["axis"].map({a: i for i, a in enumerate(AXES)}),
        _level=frame.groupby(["dataset", "axis"], sort=False)["level"].transform(
            lambda s: pd.Series(pd.factorize(s)[0], index=s.index)),
        _m=frame["model"].map(order),
        _size=pd.to_numeric(frame["student_size"], errors="coerce").fillna(-1),
        _t=pd.to_numeric(frame["temperature"], errors="coerce").fillna(-1),
    )
    key = key.sort_values(["dataset", "_axis", "_level", "family", "_size", "_m", "_t", "seed", "split", "metric"],
                          kind="mergesort")
    return key[COLUMNS].reset_index(drop=True)
