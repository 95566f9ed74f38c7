"""The report page: every section assembled into templates/index.html.j2.

`render_page` takes what the report stage has read (results, calibration bins,
designs, walkthrough table, datasets' metadata, provenance, wall times), writes
the figures into `figures_dir`, and returns the HTML text. Its first screen answers
the study's question, one sentence per dataset (render.summary), beside a contents
sidebar that stays in view; then "Which objective?" (render.objectives), one table and
figure per panel; the per-temperature detail follows, one section per panel. Every
section is a <details> open by default (collapsible without a script), and a table wider
than the page scrolls in its own box. A panel is one dataset's
students of one family (distill.students), with the dataset's teacher: sizes of
two families count different things and are never tabled or drawn together. Its label
is the dataset's name when the study has one family (the report of a one-family study
reads as before families existed), else "<dataset> · <family> students". Every image is
embedded as a base64 data URI, styles are inline, and nothing is fetched from the
network, so the page opens anywhere. Every user-provided string goes through
Jinja2 autoescaping. Nothing time-dependent is generated here: the same inputs
give the same bytes (the provenance record is the only place for dates).
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd
import yaml

from distillstudy import grid
from distillstudy.students import (FAMILY_TITLES, distill_students, family_noun, family_title, size_order,
                                   size_value)
from distillstudy.render import designs as design_sections
from distillstudy.render import generations as generation_sections
from distillstudy.render import variance as variance_sections
from distillstudy.render import lm, objectives, summary, tables
from distillstudy.render import walkthrough as walkthrough_sections

TEMPLATE = "index.html.j2"


def _params_text(params) -> str:
    try:
        return yaml.safe_dump(params, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    except yaml.YAMLError:  # e.g. numpy scalars that safe_dump refuses: fall back to JSON
        return json.dumps(params, indent=2, default=str, ensure_ascii=False)


def _environment() -> jinja2.Environment:
    # autoescape=True explicitly: select_autoescape would not recognise ".html.j2".
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _method_note(conf_pct: int) -> str:
    return (
        f"How to read the numbers: the best temperature for each student size is selected on the validation split "
        f"(highest mean validation accuracy) and its gain is reported on the test split, which plays no part in any "
        f"choice. Every difference is distilled minus hard-label baseline, paired by seed (same initialisation and "
        f"data order), with a Student-t {conf_pct}% confidence interval over seeds (n − 1 degrees of freedom); for "
        f"NLL and ECE a negative difference is an improvement. Intervals are per cell and not adjusted for multiple "
        f"comparisons: across many cells about {100 - conf_pct}% would exclude zero by chance alone (the objectives "
        f"tables also offer Holm-adjusted intervals).")


def teacher_kind(spec: dict | None) -> str:
    """How a dataset's teacher came to be, when it is not the built-in one (params'
    prepare.datasets[*].teacher): said beside its scores, so nobody mistakes it."""
    if not spec:
        return ""
    if "logits" in spec:
        return f"offline logits from {spec['logits']}, not trained here"
    if "weights" in spec:
        return f"your module {spec['factory']} with the weights {spec['weights']}, not retrained"
    if "family" in spec:  # a built-in family's model ({family: cifar, size: resnet32x4})
        return f"{spec['size']}, a {FAMILY_TITLES.get(spec['family'], spec['family'])} model trained here"
    return f"your module {spec['factory']}, trained here"


def family_order(results: pd.DataFrame, params: dict | None) -> list[str]:
    """The student families of `results`, in the order distill.students lists them
    (those params do not name, or all when params name none, alphabetically after)."""
    present = sorted(set(results.loc[results["model"] != "teacher", "family"]) - {""})
    distill = (params or {}).get("distill") or {}
    # dict.fromkeys: a family listed twice (one entry per dataset, as the CIFAR preset's) is one family.
    listed = list(dict.fromkeys(e["label"] for e in distill_students(distill))
                  if distill.get("students") or distill.get("sizes") else [])
    return [f for f in listed if f in present] + [f for f in present if f not in listed]


def panels(results: pd.DataFrame, params: dict | None) -> list[tuple[str, str, str]]:
    """(dataset, family, label) of every panel: datasets alphabetically, each dataset's
    families in `family_order`; label as the module docstring says."""
    families = family_order(results, params)
    students = results[results["model"] != "teacher"]
    out = []
    for ds in sorted(students["dataset"].unique()):
        here = set(students.loc[students["dataset"] == ds, "family"])
        for family in (f for f in families if f in here):
            out.append((ds, family, ds if len(families) == 1 else f"{ds} · {family} students"))
    return out


def panel_frame(frame: pd.DataFrame | None, dataset: str, family: str) -> pd.DataFrame | None:
    """A panel's rows of results or calibration bins: the dataset's students of `family`
    and its teacher."""
    if frame is None:
        return None
    keep = (frame["dataset"] == dataset) & ((frame["family"] == family) | (frame["model"] == "teacher"))
    return frame[keep].reset_index(drop=True)


def students_text(results: pd.DataFrame, families: list[str]) -> str:
    """The students of the page's subtitle: 'MLP students (hidden width 16, 64)', and
    'CNN students (channels 8, 32)', 'MLP students with 3 hidden layers (...)', a
    factory's 'tiny_cnn students (size 4)', or 'CIFAR-zoo students (resnet8x4, wrn_16_2)'
    (names need no noun)."""
    parts = []
    for family in families:
        students = results[(results["family"] == family) & (results["model"] != "teacher")]
        sizes = sorted({size_value(s) for s in students["student_size"].dropna()}, key=size_order)
        noun = "" if all(isinstance(s, str) for s in sizes) else family_noun(family) + " "
        parts.append(f"{family_title(family)} ({noun}{', '.join(str(s) for s in sizes)})")
    if not parts:
        return "students"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def tuning_note(tune: dict | None, section: dict) -> str:
    """What distill.tune did for a panel whose cells were tuned (section["tuned"])."""
    if not tune or not section.get("tuned"):
        return ""
    n = len(tune["lr"]) * len(tune["weight_decay"]) * len(tune["epochs"])
    grid = (f"learning rate {', '.join(f'{v:g}' for v in tune['lr'])} × weight decay "
            f"{', '.join(f'{v:g}' for v in tune['weight_decay'])} × epochs {', '.join(str(v) for v in tune['epochs'])}")
    return (f"Every cell here, the hard-label baseline and each distillation setting alike, chose its optimiser "
            f"settings on the validation split from the same {n} candidates ({grid}; the epochs levels are "
            f"checkpoints of one run): the same tuning effort, so the same selection optimism, and the gains above "
            f"are over the tuned baseline. The untuned baseline (distill.lr, distill.epochs, distill.weight_decay, "
            f"same seeds) is shown for comparison; each cell's chosen settings are in the all-cells table.")


def designs_note(spec: dict | None) -> str:
    """Why the study designs are not run on a dataset whose teacher they cannot retrain
    (params.check_params refuses them there), said where its results are."""
    if spec and "logits" in spec:
        return ("The study designs (transfer protocols, teacher width, ensembles, label fractions, epochs) do not "
                "apply to this dataset: they retrain or re-run the teacher, and this teacher is offline logits.")
    if spec and "weights" in spec:
        return ("The study designs do not apply to this dataset: they retrain teachers of its kind here, and this "
                "teacher's weights were trained elsewhere, so a second factor would change with each axis.")
    return ""


def design_params(params: dict | None) -> list[tuple[str, str]]:
    """The designs' effective parameters for the provenance: the designs and transfer
    sections of params, and each axis's levels as trained (reference first)."""
    designs = (params or {}).get("designs")
    if not isinstance(designs, dict):
        return []
    rows = [(f"designs.{k}", _params_value(v)) for k, v in designs.items()]
    rows += [(f"transfer.{k}", _params_value(v)) for k, v in ((params or {}).get("transfer") or {}).items()]
    if designs.get("datasets"):
        for axis in grid.AXES:
            if designs.get(axis):
                try:
                    levels = grid.axis_levels(axis, params)
                except (KeyError, TypeError, ValueError):
                    continue
                rows.append((f"levels trained: {axis}", ", ".join(levels) + " (the first is the reference)"))
    return rows


def _params_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return "" if v is None else str(v)


def with_entries(design_section: dict | None, entries: list[tuple[dict | None, dict | None]]) -> dict | None:
    """The variance design and the born-again generations, (entry, headline) each, listed as
    more entries of the study designs (None entries: not run)."""
    for entry, headline in entries:
        if entry is None:
            continue
        design_section = design_section or {"intro": "", "axes": [], "share_formula": "", "headlines": []}
        design_section["axes"].append(entry)
        design_section["headlines"].append(headline)
    return design_section


def render_page(results: pd.DataFrame, *, figures_dir: Path, params: dict, datasets_meta: list[dict],
                provenance: dict, benchmarks: pd.DataFrame | None = None,
                calibration: pd.DataFrame | None = None, designs: pd.DataFrame | None = None,
                variance: pd.DataFrame | None = None, generations: pd.DataFrame | None = None,
                walkthrough: pd.DataFrame | None = None, walkthrough_pngs: list = (),
                walkthrough_variance: pd.DataFrame | None = None, lm_results: pd.DataFrame | None = None,
                confidence: float = 0.95, title: str = "distillstudy report") -> str:
    """The report's HTML; its figures are written to `figures_dir/<panel slug>/<key>.png`
    (text.slug of the panel's label: the dataset's name in a one-family study).

    `results` and `calibration` as from `stats.load_results` / `stats.load_calibration`
    (calibration None: no reliability diagrams); `designs` as from
    `design_stats.load_designs` (None: no "Study designs" section), `variance` as from
    `analysis.variance.load` (None: no variance design), `generations` as from
    `analysis.generations.load` (None: no born-again generations); `walkthrough`
    the walkthrough table (None: the section shows only `walkthrough_pngs`, or is
    left out when there are none); `walkthrough_variance` its bias² + variance table
    (None: no variance table); `benchmarks` wall seconds per rule (columns
    rule, wall_s and optionally jobs; None or empty: none recorded); `lm_results` the
    language models' table (analysis/lm_stats.py; None or empty: no language-model section).
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    objective_sections, datasets, gains = [], [], {}
    for ds, family, label in panels(results, params):
        view = panel_frame(results, ds, family)
        summaries = tables.summary_tables(view, confidence)
        gains.setdefault(ds, []).extend(summary.student_gains(
            summaries["objectives"], summaries["objective_cmp"], summaries["chosen"]))
        objective_sections.append(objectives.objectives_section(
            ds, summaries["objectives"], summaries["objective_cmp"], figures_dir, confidence, family=family,
            label=label))
        datasets.append(tables.dataset_section(ds, view, summaries, figures_dir, confidence,
                                               panel_frame(calibration, ds, family), label=label))
    own_teachers = {d["name"]: d["teacher"] for d in params.get("prepare", {}).get("datasets", []) if "teacher" in d}
    for section in datasets:
        section["teacher_kind"] = teacher_kind(own_teachers.get(section["dataset"]))
        section["designs_note"] = designs_note(own_teachers.get(section["dataset"]))
        section["tuning_note"] = tuning_note(params.get("distill", {}).get("tune"), section)
    kinds = {d.get("name"): d.get("kind") for d in params.get("prepare", {}).get("datasets", [])}
    variance_entry = variance_sections.variance_section(variance, figures_dir, confidence)
    generation_entry = generation_sections.generations_section(generations, figures_dir, kinds, confidence)
    design_section = with_entries(design_sections.designs_section(designs, params, figures_dir, confidence),
                                  [(variance_entry, variance_sections.headline(variance_entry)),
                                   (generation_entry, generation_sections.headline(generation_entry))])
    conf_pct = int(round(confidence * 100))
    meta_columns, meta_rows, meta_details = tables.meta_table(datasets_meta)
    bench_rows, bench_total = tables.bench_rows(benchmarks)
    return _environment().get_template(TEMPLATE).render(
        title=title,
        students=students_text(results, family_order(results, params)),
        answers=[{"dataset": ds, "sentence": summary.dataset_sentence(ds, g)} for ds, g in gains.items()],
        answer_note=summary.note(conf_pct),
        datasets=datasets,
        objectives=objective_sections,
        method_note=_method_note(conf_pct),
        conf_pct=conf_pct,
        walkthrough=walkthrough_sections.walkthrough_section(walkthrough, walkthrough_pngs, walkthrough_variance),
        designs=design_section,
        design_params=design_params(params),
        params_text=_params_text(params),
        meta_columns=meta_columns,
        meta_rows=meta_rows,
        meta_details=meta_details,
        provenance=[(str(k), "" if v is None else str(v)) for k, v in (provenance or {}).items()],
        bench_rows=bench_rows,
        bench_total=bench_total,
        lm_html=markupsafe.Markup(lm.lm_section(lm_results, figures_dir, confidence=confidence)),
    )
