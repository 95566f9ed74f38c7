"""The report stage: read the study's tables, render them, write reports/.

    distillstudy report --results reports/results.csv --calibration reports/calibration.csv \\
        --designs reports/designs.csv --walkthrough reports/walkthrough.csv \\
        --walkthrough-pngs reports/walkthrough/test_log_loss.png reports/walkthrough/train_log_loss.png \\
        --walkthrough-variance reports/walkthrough_variance.csv \\
        --dataset-meta data/prepared/*.json --params-json '<the effective config as JSON>' \\
        --benchmarks logs/benchmarks/*/*.tsv --out-html reports/index.html \\
        --figures-dir reports/figures --plots-dir reports/plots

Writes the self-contained `out_html` (distillstudy.render.page), one PNG per
panel and figure key under `<figures_dir>/<panel slug>/<key>.png` (a panel: one
dataset's students of one family, its slug the dataset's in a one-family study; the layout
that `report(..., patterns=["{dataset}/{figure}.png"])` in workflow/rules/report.smk
hands to `snakemake --report`), and the DVC plot table
`<plots_dir>/acc_vs_temperature.csv` (distillstudy.render.plots).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from distillstudy import provenance
from distillstudy.analysis import lm_stats
from distillstudy.analysis import design_stats, generations as generation_table, stats, variance as variance_table
from distillstudy.artifacts import write_text
from distillstudy.render import page, plots


def run(*, results: str, dataset_meta: list[str], params: dict, out_html: str, figures_dir: str, plots_dir: str,
        calibration: str | None = None, walkthrough: str | None = None, walkthrough_pngs: list[str] = (),
        walkthrough_variance: str | None = None,
        designs: str | None = None, variance: str | None = None, generations: str | None = None,
        benchmarks: list[str] = (), lm_results: str | None = None,
        provenance_record: dict | None = None,
        confidence: float = 0.95) -> None:
    """Build the report from the files of the evaluate and walkthrough stages.

    `calibration` None leaves out the reliability diagrams; `designs` None or a
    missing file means a study without designs (no "Study designs" section); `variance`
    (variance.csv) None or header-only: no variance design;
    `walkthrough` None builds that section from `walkthrough_pngs` alone (or
    leaves it out); `walkthrough_variance` None or a missing file (an older run)
    leaves out its bias² + variance table; `benchmarks` are Snakemake benchmark
    files. `params` is the effective config (its `report.title` titles the page). `provenance_record`
    None: the record is collected now (commit, date, machine, versions).
    """
    if provenance_record is None:
        provenance_record = provenance.collect()
    wt = None if walkthrough is None else pd.read_csv(walkthrough, dtype={"model": str, "split": str},
                                                      keep_default_na=False)
    # model as text; the empty ratio fields of the student rows read as NaN
    wt_var = (pd.read_csv(walkthrough_variance, dtype={"model": str})
              if walkthrough_variance is not None and Path(walkthrough_variance).exists() else None)
    df = stats.load_results(results)
    html = page.render_page(
        df, figures_dir=Path(figures_dir), params=params,
        datasets_meta=[json.loads(Path(p).read_text(encoding="utf-8")) for p in dataset_meta],
        provenance=provenance_record, benchmarks=provenance.read_benchmarks(benchmarks),
        calibration=None if calibration is None else stats.load_calibration(calibration),
        designs=design_stats.load_designs(designs), variance=variance_table.load(variance),
        generations=generation_table.load(generations), walkthrough=wt,
        walkthrough_pngs=walkthrough_pngs, walkthrough_variance=wt_var,
        lm_results=lm_stats.load_lm_results(lm_results) if lm_results and Path(lm_results).exists() else None,
        confidence=confidence, title=params.get("report", {}).get("title", "distillstudy report"))
    write_text(Path(plots_dir) / plots.PLOTS_CSV, plots.accuracy_vs_temperature_csv(df))
    write_text(out_html, html)
