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

import pandas as pd

from distillstudy.analysis import curves, designs, generations, variance
from distillstudy.analysis.scoring import (
    CALIBRATION_COLUMNS, CALIBRATION_FILE, COLUMNS, cell_calibration_rows, cell_rows, sort_results,
    summarise, teacher_calibration_rows, teacher_rows)
from distillstudy.artifacts import write_json, write_text
from distillstudy.artifacts import load_npz
from distillstudy.artifacts import read_record
from distillstudy.engine.datasets import sine_probability
from distillstudy.grid import PROTOCOL_KINDS
from distillstudy.stages.evaluate_lm import run as run_lm  # noqa: F401  (language-model cells)

def run(*, data: list[str], teachers: list[str], teacher_meta: list[str], cells: list[str],
        ece_bins: int, out_results: str, out_metrics: str, out_calibration: str | None = None,
        design_cells: list[str] = (), transfer_sets: list[str] = (), out_designs: str | None = None,
        out_variance: str | None = None, out_generations: str | None = None,
        out_curves: str | None = None) -> pd.DataFrame:
    """`data`, `teachers` and `teacher_meta` are parallel lists, one entry per dataset.
    `out_calibration` defaults to calibration.csv in the folder of `out_results`.
    `out_designs` (designs.csv), `out_variance` (variance.csv, analysis/variance.py) and
    `out_generations` (generations.csv, analysis/generations.py) are written when given:
    header only without design cells / resample cells / born-again generations.
    `out_curves` (training_curves.csv, analysis/curves.py): the standard engine's per-epoch curves."""
    rows, calibration, curve_rows = [], [], []
    by_name, records = {}, {}
    for data_path, logits_path, meta_path in zip(data, teachers, teacher_meta, strict=True):
        record = json.loads(Path(meta_path).read_text())
        name = record["dataset"]
        records[name] = record
        by_name[name] = (load_npz(data_path), load_npz(logits_path))
        rows += teacher_rows(name, *by_name[name], record, ece_bins)
        calibration += teacher_calibration_rows(name, *by_name[name], record, ece_bins)
        curve_rows += curves.teacher_curves(record)
    for path in cells:
        cell = load_npz(path)
        name = read_record(cell)["dataset"]
        if name not in by_name:
            raise ValueError(f"{path}: cell of dataset {name!r}, which has no teacher in this run")
        rows += cell_rows(*by_name[name], cell, ece_bins)
        calibration += cell_calibration_rows(by_name[name][0], cell, ece_bins)
        curve_rows += curves.cell_curves(read_record(cell))
    frame = sort_results(pd.DataFrame(rows, columns=COLUMNS).astype({"student_size": str, "temperature": str}))
    write_text(out_results, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_json(out_metrics, summarise(frame))
    if out_curves is not None:
        write_text(out_curves, curves.curves_frame(curve_rows).to_csv(index=False, float_format="%.10g",
                                                                      lineterminator="\n"))
    cal = sort_results(pd.DataFrame(calibration, columns=CALIBRATION_COLUMNS)
                       .astype({"student_size": str, "temperature": str}), CALIBRATION_COLUMNS, "bin")
    out_calibration = Path(out_results).with_name(CALIBRATION_FILE) if out_calibration is None else out_calibration
    write_text(out_calibration, cal.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    loaded = [load_npz(p) for p in design_cells]  # once, for the variance and generations tables
    for cell_path, cell in zip(design_cells, loaded):
        if read_record(cell)["dataset"] not in by_name:
            raise ValueError(f"{cell_path}: design cell of a dataset with no teacher in this run")
    if out_designs is not None:
        write_designs(out_designs, by_name, records, cells, design_cells, transfer_sets, ece_bins)
    if out_variance is not None:
        write_variance(out_variance, by_name, loaded, transfer_sets)
    if out_generations is not None:
        frame_g = generations.build(by_name, loaded)
        write_text(out_generations, frame_g.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    return frame


def write_variance(path: str, by_name: dict, design_cells: list[dict], transfer_sets: list[str]) -> None:
    """variance.csv; the true p(y = 1 | x) enters where the data are the sine distribution's
    (the kind each transfer set records)."""
    kinds = {}
    for set_path in transfer_sets:
        record = read_record(load_npz(set_path))
        kinds[record["dataset"]] = record["kind"]
    truth = {name: sine_probability(data["x_test"].reshape(-1)) if kinds.get(name) in PROTOCOL_KINDS["oracle"]
             else None for name, (data, _) in by_name.items()}
    frame = variance.build({name: (by_name[name][0], truth[name]) for name in by_name}, design_cells)
    write_text(path, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))


def write_designs(path: str, by_name: dict, records: dict, cells: list[str], design_cells: list[str],
                  transfer_sets: list[str], ece_bins: int) -> None:
    if design_cells:
        frame = designs.build({n: (*by_name[n], records[n]) for n in by_name}, cells, design_cells,
                              transfer_sets, ece_bins)
    else:
        frame = pd.DataFrame(columns=designs.COLUMNS)
    write_text(path, frame.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
