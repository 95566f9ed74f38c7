"""Build the self-contained HTML report (reports/index.html).

    >>> from distillstudy.stages.report import build_report
    >>> build_report("reports/results.csv", "reports/walkthrough.csv",
    ...              ["reports/figures/walkthrough_test.png", "reports/figures/walkthrough_train.png"],
    ...              params, datasets_meta, provenance, benchmarks,
    ...              "reports/index.html", "reports/figures", plots_dir="reports/plots",
    ...              calibration_csv="reports/calibration.csv")

Figures go to `<figures_dir>/<dataset slug>/<figure key>.png` (the keys of
FIGURE_SPECS), the layout that `report(..., patterns=["{dataset}/{figure}.png"])`
in workflow/rules/report.smk hands to `snakemake --report`.

Statistics come from `distillstudy.analysis.stats` (paired by seed, Student-t CIs),
figures from `distillstudy.render.figures`. Every image is embedded as a base64 data
URI, styles are inline, and nothing is fetched from the network, so the file
opens anywhere. Every user-provided string goes through Jinja2 autoescaping.
Nothing time-dependent is generated here: the same inputs give the same bytes
(provenance, assembled by the caller, is the only place for dates).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable

import jinja2
import numpy as np
import pandas as pd
from distillstudy.analysis import design_stats, stats
from distillstudy.render import figures
from distillstudy import grid
from distillstudy.artifacts import write_text

ONEHOT_THRESHOLD = 0.99
PLOTS_CSV = "acc_vs_temperature.csv"
TEMPLATE = "index.html.j2"
META_COLUMNS = ["name", "kind", "n_train", "n_val", "n_test", "n_features", "n_classes", "sha256"]

FIGURE_SPECS = [
    ("gain_heatmap", "Test-accuracy gain over the hard-label baseline",
     "Mean paired difference (distilled minus baseline, same seed) in percentage points of test accuracy, for every "
     "temperature (columns) and student size (rows). Blue cells: distillation helped; red: it hurt. Bold values "
     "with * have a {conf}% CI over seeds that excludes zero. Look for a band of temperatures that helps every size, "
     "and whether the gain shrinks as the student grows."),
    ("accuracy_vs_t", "Test accuracy against temperature",
     "Mean test accuracy over seeds against temperature (log2 axis), one line per student size with its {conf}% CI "
     "band; dashed lines of the same colour are each size's hard-label baseline, the black dotted line is the "
     "teacher. A line above its dashed baseline means distillation helps at that temperature; the gap to the dotted "
     "line is what the student still lacks. The bands are unpaired intervals of each mean and include seed-to-seed "
     "variation shared with the baseline, so overlapping bands do not rule out a significant paired gain (see the "
     "heatmap and the tables)."),
    ("nll_vs_t", "Test NLL against temperature",
     "Mean test negative log-likelihood (lower is better) against temperature, same layout as above. Soft targets "
     "often improve calibration and NLL even where accuracy does not move; look for lines below their dashed "
     "baselines."),
    ("best_t", "Best temperature against student size",
     "For each student size (columns) the temperature with the highest mean validation accuracy is circled and "
     "the circles are joined; the label above each circle is that choice's paired test-accuracy gain over the "
     "baseline (*, filled circle: its {conf}% CI excludes zero). The cells show how far every other temperature "
     "is below the best of its size on validation, in percentage points (darker = closer to the best; the colour "
     "scale stops at −3). Hinton et "
     "al. (2015) found that small students prefer moderate temperatures (T ≈ 2.5–4) while large ones are flat for "
     "T ≥ 8: look whether the line climbs with the size, and whether the large sizes' columns stay dark across the "
     "high temperatures. Differences of a few tenths of a point are within seed-to-seed noise."),
    ("fidelity", "Fidelity vs generalisation",
     "Each point is one cell mean: top-1 agreement with the teacher (x) against test accuracy (y), coloured by "
     "student size; circles are distilled students (labelled with T), crosses hard-label baselines, squares logit "
     "matching. Points up and to the right of their baseline cross mimic the teacher more closely and generalise "
     "better; higher agreement without higher accuracy means the student copies the teacher's mistakes."),
    ("reliability", "Reliability diagrams: teacher, baseline and best distilled student",
     "Calibration on the test split, pooled over seeds, for the teacher, the hard-label baseline of the best "
     "configuration's size and the best distilled configuration (chosen on validation). Top: blue bars are the "
     "accuracy of the predictions in each confidence bin, the dashed diagonal is perfect calibration, red hatched "
     "bars are the gap to the bin's mean confidence (red above a blue bar: over-confident; a red part inside the "
     "bar: under-confident). Bottom: the share of predictions in each bin, on a log scale; bins holding few "
     "predictions are noisy. "
     "Look whether the distilled student's bars sit closer to the diagonal (lower ECE) than the baseline's, and "
     "whether its confidence spreads out of the top bin like the teacher's."),
]
FIGURE_KEYS = [k for k, _, _ in FIGURE_SPECS]

#: axis -> (figure key, title, caption) of the study-design figures, written to
#: `<figures_dir>/<dataset slug>/<figure key>.png` like the main figures.
DESIGN_FIGURE_SPECS = {
    "transfer": ("design_transfer", "Gain by transfer protocol, over the baseline and over the control",
                 "One panel per student size. Blue circles: the best-on-validation distilled student's paired "
                 "test-accuracy gain over the hard-label baseline for each transfer protocol, with its {conf}% CI "
                 "over seeds (filled: the CI excludes zero; the temperature chosen on validation is written beside "
                 "it). For the augmented transfer set, orange squares are its gain over the hard-label control "
                 "trained on the same augmented copies with their source's label and no teacher (what the teacher "
                 "adds), grey diamonds the control's own gain over the baseline (what augmentation alone does). A "
                 "blue circle far above zero with its orange square near zero means the gain is augmentation, not "
                 "distillation."),
    "epochs": ("design_epochs", "Test accuracy against the students' training length",
               "One panel per student size: mean test accuracy of the hard-label baseline (dashed, hollow crosses) "
               "and of the best distilled student (solid; its temperature, chosen on validation, is written beside "
               "it) at each training length, with unpaired {conf}% CIs over seeds; the dotted line is the teacher. A "
               "baseline that falls with more epochs is overfitting its hard labels; look whether the distilled "
               "student holds up there. The paired gains are in the table."),
    "teacher_width": ("design_teacher_width", "Capacity gap: gain against teacher width and teacher accuracy",
                      "The best-on-validation student's paired test-accuracy gain over the baseline (with its "
                      "{conf}% CI; filled: excludes zero), one line per student size, against the teacher's width "
                      "multiplier (left, log2 axis) and against that teacher's test accuracy (right). Mirzadeh et "
                      "al. (2019) report a non-monotone curve: past some size a more accurate teacher teaches a "
                      "small student worse. Look whether the line turns down at the right of either panel."),
    "ensemble": ("design_ensemble", "Ensemble teacher: gain against ensemble size and teacher accuracy",
                 "Same layout as the capacity-gap figure, with the number M of seeded teachers whose probabilities "
                 "are averaged (M = 1 is the reference teacher) in place of the width: the student's paired gain over "
                 "the baseline against M (left) and against the ensemble's own test accuracy (right)."),
    "label_fraction": ("design_label_fraction", "Learning curve: test accuracy against the fraction of labels",
                       "One panel per student size: mean test accuracy of the hard-label baseline (dashed) and of "
                       "the best distilled student (solid, T chosen on validation) against the share of training "
                       "labels the students see (log axis), with unpaired {conf}% CIs over seeds; the teacher "
                       "(dotted) is trained on all labels. Hinton et al. (2015) found soft targets help most when "
                       "labels are few: look whether the gap between the lines widens to the left."),
}


# --------------------------------------------------------------------------- formatting


def _nan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _pct(x, digits: int = 1) -> str:
    return "n/a" if _nan(x) else f"{100 * x:.{digits}f}%"


def _num(x, digits: int = 3) -> str:
    return "n/a" if _nan(x) else f"{x:.{digits}f}"


def _signed(x, scale: float, digits: int) -> str:
    if _nan(x):
        return "n/a"
    v = scale * x
    s = f"{abs(v):.{digits}f}"
    if float(s) == 0:
        return s
    return ("+" if v > 0 else "−") + s


def _gain_text(mean, lo, hi, *, scale: float = 100.0, digits: int = 1, unit: str = " pp") -> str:
    if _nan(mean):
        return "n/a"
    ci = "CI n/a (one seed)" if _nan(lo) else f"[{_signed(lo, scale, digits)}, {_signed(hi, scale, digits)}]"
    return f"{_signed(mean, scale, digits)}{unit} {ci}"


def _mean_ci_text(mean, lo, hi) -> str:
    if _nan(mean):
        return "n/a"
    if _nan(lo):
        return _pct(mean)
    return f"{_pct(mean)} ± {100 * (hi - lo) / 2:.1f} pp"


def _cls(significant, mean, higher_is_better: bool = True) -> str:
    """CSS class of a gain cell: 'better' / 'worse' when the CI excludes zero, else 'nsig'."""
    if not significant or _nan(mean):
        return "nsig"
    return "better" if (mean > 0) == higher_is_better else "worse"


def _slug(name: str) -> str:
    """File-system and anchor safe name; a hash suffix keeps distinct names distinct."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:40] or "dataset"
    return f"{base}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def _data_uri(path: str | os.PathLike) -> str:
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _params_text(params) -> str:
    try:
        import yaml

        return yaml.safe_dump(params, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    except Exception:  # e.g. numpy scalars that safe_dump refuses: fall back to JSON
        return json.dumps(params, indent=2, default=str, ensure_ascii=False)


def _environment() -> jinja2.Environment:
    # autoescape=True explicitly: select_autoescape would not recognise ".html.j2".
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parents[1] / "render" / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


# --------------------------------------------------------------------------- sections


def _lookup(df: pd.DataFrame, **kw) -> pd.Series | None:
    m = pd.Series(True, index=df.index)
    for k, v in kw.items():
        if _nan(v):
            m &= df[k].isna()
        else:
            m &= df[k] == v
    sub = df[m]
    return None if sub.empty else sub.iloc[0]


def _reliability_panels(best) -> list[dict]:
    """Teacher, then the baseline of the best configuration's size and that configuration."""
    panels = [{"label": "teacher", "model": "teacher", "student_size": None, "temperature": "", "alpha": None}]
    if best is not None:
        size = int(best["student_size"])
        panels.append({"label": f"hard-label baseline, hidden {size}", "model": "baseline", "student_size": size,
                       "temperature": "", "alpha": None})
        panels.append({"label": f"best distilled: hidden {size}, T = {best['temperature']}", "model": "distilled",
                       "student_size": size, "temperature": best["temperature"], "alpha": best["alpha"]})
    return panels


def _dataset_section(ds: str, df: pd.DataFrame, tables: dict, figures_dir: Path, conf: float,
                     calibration: pd.DataFrame | None = None) -> dict:
    conf_pct = int(round(conf * 100))
    teach = _lookup(tables["teacher"], dataset=ds)
    t_acc = teach["test_accuracy"] if teach is not None else float("nan")
    t_mmp = teach["train_mean_max_prob"] if teach is not None else float("nan")
    warning = ""
    if not _nan(t_mmp) and t_mmp >= ONEHOT_THRESHOLD:
        warning = (f"Warning: the teacher is near one-hot on its training points (mean max-probability "
                   f"{t_mmp:.4f} ≥ {ONEHOT_THRESHOLD}), so its soft targets on those points carry almost nothing "
                   f"beyond the hard labels; small or null distillation gains are expected on this dataset.")

    bt = tables["best_t"][tables["best_t"]["dataset"] == ds]
    best = _lookup(tables["best_cfg"], dataset=ds)
    summary = []
    if best is None:
        summary.append(f"{ds}: no distilled students with validation results, so no configuration could be selected.")
    else:
        sig_word = ("its CI excludes zero" if best["significant"] else "its CI includes zero, so the difference is "
                    "not statistically distinguishable from no effect")
        summary.append(
            f"{ds}: the best distilled configuration on the validation split is hidden size {int(best['student_size'])}"
            f" at temperature T = {best['temperature']} (validation accuracy {_pct(best['val_accuracy'])}). On the test "
            f"split its accuracy gain over the hard-label baseline of the same size is "
            f"{_gain_text(best['gain_mean'], best['gain_lo'], best['gain_hi'])} ({conf_pct}% CI, paired over "
            f"{int(best['n'])} seeds); {sig_word}.")
        n_sig = int(bt["significant"].sum())
        if n_sig == 0:
            summary.append(f"None of the {len(bt)} per-size best-on-validation temperatures gives a test-accuracy "
                           f"gain whose {conf_pct}% CI excludes zero: no significant effect of distillation on "
                           f"accuracy was found here.")
        else:
            pos = int(((bt["significant"]) & (bt["gain_mean"] > 0)).sum())
            summary.append(f"{n_sig} of {len(bt)} student sizes have a best-on-validation gain whose CI excludes "
                           f"zero ({pos} positive, {n_sig - pos} negative).")
    summary.append(f"Teacher: test accuracy {_pct(t_acc)}; mean max-probability on its training points "
                   f"{_num(t_mmp, 4)}.")

    acc_g = tables["gain_acc"][tables["gain_acc"]["dataset"] == ds]
    nll_g = tables["gain_nll"][tables["gain_nll"]["dataset"] == ds]
    ece_g = tables["gain_ece"][tables["gain_ece"]["dataset"] == ds]
    agr_g = tables["gain_agr"][tables["gain_agr"]["dataset"] == ds]
    base = tables["cells_acc"]
    base = base[(base["dataset"] == ds) & (base["model"] == "baseline")]
    sizes = sorted(set(int(s) for s in acc_g["student_size"].dropna()) | set(int(s) for s in base["student_size"].dropna()))
    has_lmse = bool((acc_g["model"] == "logit_mse").any())
    size_rows = []
    for s in sizes:
        b = _lookup(base, student_size=s)
        r = _lookup(bt, student_size=s)
        row = {"size": s, "baseline": _mean_ci_text(*(b[["mean", "lo", "hi"]] if b is not None else [np.nan] * 3)),
               "best_t": "n/a", "val_acc": "n/a", "gain": "n/a", "gain_sig": "nsig", "nll_gain": "n/a",
               "nll_sig": "nsig", "lmse_gain": "n/a", "lmse_sig": "nsig",
               "n": int(b["n"]) if b is not None else 0}
        if r is not None:
            row.update(best_t=r["temperature"], val_acc=_pct(r["val_accuracy"]),
                       gain=_gain_text(r["gain_mean"], r["gain_lo"], r["gain_hi"]), gain_sig=_cls(r["significant"], r["gain_mean"]))
            nl = _lookup(nll_g, student_size=s, model="distilled", temperature=r["temperature"], alpha=r["alpha"])
            if nl is not None:
                row.update(nll_gain=_gain_text(nl["mean"], nl["lo"], nl["hi"], scale=1.0, digits=3, unit=""),
                           nll_sig=_cls(nl["significant"], nl["mean"], False))
        lm = acc_g[(acc_g["student_size"] == s) & (acc_g["model"] == "logit_mse")]
        if len(lm):
            lm = lm.iloc[0]
            row.update(lmse_gain=_gain_text(lm["mean"], lm["lo"], lm["hi"]), lmse_sig=_cls(lm["significant"], lm["mean"]))
        size_rows.append(row)

    cells = []
    for c in acc_g.itertuples(index=False):
        key = dict(student_size=c.student_size, model=c.model, temperature=c.temperature, alpha=c.alpha)
        out = {"size": int(c.student_size), "model": c.model, "t": c.temperature or "—",
               "alpha": "—" if _nan(c.alpha) else f"{c.alpha:g}", "n": int(c.n),
               "acc": _gain_text(c.mean, c.lo, c.hi), "acc_sig": _cls(c.significant, c.mean)}
        for name, tab, scale, digits, unit, up in (("nll", nll_g, 1.0, 3, "", False), ("ece", ece_g, 1.0, 3, "", False),
                                                   ("agr", agr_g, 100.0, 1, " pp", True)):
            x = _lookup(tab, **key)
            out[name] = "n/a" if x is None else _gain_text(x["mean"], x["lo"], x["hi"], scale=scale, digits=digits,
                                                           unit=unit)
            out[name + "_sig"] = "nsig" if x is None else _cls(x["significant"], x["mean"], up)
        cells.append(out)

    slug = _slug(ds)
    figs = []
    paths = {
        "gain_heatmap": lambda p: figures.plot_gain_heatmap(df, ds, p, confidence=conf),
        "accuracy_vs_t": lambda p: figures.plot_metric_vs_temperature(df, ds, "accuracy", p, confidence=conf),
        "nll_vs_t": lambda p: figures.plot_metric_vs_temperature(df, ds, "nll", p, confidence=conf),
        "best_t": lambda p: figures.plot_best_temperature(df, ds, p, confidence=conf),
        "fidelity": lambda p: figures.plot_fidelity(df, ds, p),
        "reliability": lambda p: figures.plot_reliability(calibration, ds, _reliability_panels(best), p),
    }
    for key, title, caption in FIGURE_SPECS:
        if key == "reliability" and calibration is None:
            continue
        p = figures_dir / slug / f"{key}.png"
        paths[key](p)
        figs.append({"uri": _data_uri(p), "title": f"{title} ({ds})", "alt": f"{title}, dataset {ds}",
                     "caption": caption.format(conf=conf_pct), "path": str(p)})

    return {"name": ds, "anchor": "ds-" + slug, "summary": summary, "onehot_warning": warning,
            "teacher_acc": _pct(t_acc), "teacher_nll": _num(teach["test_nll"] if teach is not None else np.nan),
            "teacher_mmp": _num(t_mmp, 4),
            "teacher_params": "" if teach is None or _nan(teach["n_params"]) else f"{int(teach['n_params']):,}",
            "size_rows": size_rows, "has_logit_mse": has_lmse, "cells": cells, "figures": figs}


def _walkthrough_section(walkthrough_csv, walkthrough_pngs: Iterable) -> dict | None:
    pngs = [Path(p) for p in (walkthrough_pngs or [])]
    if walkthrough_csv is None and not pngs:
        return None
    figs = []
    for p in pngs:
        split = "test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else ""
        title = f"Walkthrough: mean {split} log loss against n" if split else f"Walkthrough figure {p.name}"
        caption = ("Mean log loss over the trials against the number of training points n, for the hard-label "
                   "student, the distilled (logit-matching) student and the teacher. ")
        caption += {"test": "On test data, look for the distilled line below the student's at every n, and the "
                            "teacher lowest.",
                    "train": "On training data, compare with the test figure: a model with a lower training loss "
                             "but a higher test loss is overfitting its few points.",
                    "": ""}[split]
        figs.append({"uri": _data_uri(p), "title": title, "alt": title, "caption": caption})

    rows, models, verdict = [], [], "No walkthrough table was provided."
    if walkthrough_csv is not None:
        wt = pd.read_csv(walkthrough_csv, dtype={"model": str, "split": str}, keep_default_na=False)
        missing = {"n_train", "model", "split", "log_loss"} - set(wt.columns)
        if missing:
            raise ValueError(f"walkthrough table lacks columns {sorted(missing)}")
        wt["log_loss"] = pd.to_numeric(wt["log_loss"])
        test = wt[wt["split"] == "test"].groupby(["n_train", "model"])["log_loss"].mean().unstack("model")
        models = [m for m in ("student", "distilled", "teacher") if m in test.columns]
        models += sorted(m for m in test.columns if m not in models)
        for n, r in test.iterrows():
            rows.append({"n": n, "cells": [_num(r[m], 4) for m in models]})
        if {"student", "distilled"} <= set(test.columns) and len(test):
            better = test["distilled"] < test["student"]
            if better.all():
                verdict = (f"The distilled student had a lower test log loss than the hard-label student at every n "
                           f"({len(test)} of {len(test)} values of n), as in the walkthrough.")
            else:
                worse = ", ".join(str(n) for n in test.index[~better])
                verdict = (f"The distilled student beat the hard-label student on test log loss at {int(better.sum())} "
                           f"of {len(test)} values of n; it did not at n = {worse}, unlike the walkthrough.")
        else:
            verdict = "The walkthrough table lacks the student or distilled model, so they cannot be compared."
    return {"figures": figs, "rows": rows, "models": models, "verdict": verdict}


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, np.integer, np.floating))


def _meta_table(datasets_meta: list) -> tuple[list, list, list]:
    """Scalar metadata as one table row per dataset (sha256 last, in full); lists
    (feature and class names) and dicts (options) go to a per-dataset details list."""
    metas = list(datasets_meta or [])
    cols = [c for c in META_COLUMNS if c != "sha256" and any(c in m for m in metas)]
    for m in metas:
        cols += [k for k in m if k not in cols and k != "sha256" and _scalar(m[k])]
    if any("sha256" in m for m in metas):
        cols.append("sha256")
    rows, details = [], []
    for m in metas:
        row = []
        for c in cols:
            v = m.get(c, "")
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            row.append({"text": "" if v is None else (f"{v:,}" if isinstance(v, (int, np.integer)) and not
                                                      isinstance(v, bool) else str(v)),
                        "cls": "mono hash" if c == "sha256" else ("num" if num else "")})
        rows.append(row)
        items = []
        for k, v in m.items():
            if _scalar(v):
                continue
            if isinstance(v, dict):
                text = ", ".join(f"{kk} = {vv}" for kk, vv in v.items())
                items.append({"key": str(k), "count": len(v), "text": text, "values": []})
            else:
                vals = [str(x) for x in v]
                items.append({"key": str(k).replace("_", " "), "count": len(vals), "text": "", "values": vals})
        short = sum(it["count"] for it in items) <= 24  # short lists open, long ones (64 pixels) folded
        details.append({"name": str(m.get("name", "")), "items": items, "open": short})
    return [str(c) for c in cols], rows, details


def _bench_rows(benchmarks) -> tuple[list, str]:
    if benchmarks is None or len(benchmarks) == 0:
        return [], ""
    b = pd.DataFrame(benchmarks)
    if not {"rule", "wall_s"} <= set(b.columns):
        raise ValueError("benchmarks must have columns rule, wall_s")
    walls = pd.to_numeric(b["wall_s"], errors="coerce")
    jobs = b["jobs"] if "jobs" in b.columns else pd.Series([np.nan] * len(b))
    rows = [{"rule": str(r), "wall_s": _num(w, 1), "jobs": "" if _nan(j) else str(int(j))}
            for r, w, j in zip(b["rule"], walls, jobs)]
    total = _num(float(walls.sum()), 1) if walls.notna().any() else ""
    return rows, total


def write_plots_csv(results_df: pd.DataFrame, plots_dir: str | os.PathLike) -> Path:
    """Mean test accuracy over seeds per (dataset, student_size, temperature) of the
    distilled students (model "distilled"), plus each size's hard-label baseline
    repeated at every temperature of its dataset (model "baseline", a flat
    reference line), for `dvc plots show` (x = temperature, y = test_accuracy; the
    template workflow/report/dvc_accuracy_vs_temperature.json draws one panel per
    dataset, one colour per size, baselines dashed). Returns the file path."""
    cs = stats.cell_summary(results_df, "accuracy", "test")
    d = cs[cs["model"] == "distilled"]
    d = (d.groupby(["dataset", "student_size", "temperature"], sort=False)["mean"].mean().reset_index()
         .rename(columns={"mean": "test_accuracy"}).assign(model="distilled"))
    b = cs[cs["model"] == "baseline"].groupby(["dataset", "student_size"], sort=False)["mean"].mean()
    ts = d[["dataset", "temperature"]].drop_duplicates()
    base = ts.merge(b.rename("test_accuracy").reset_index(), on="dataset").assign(model="baseline")
    d = pd.concat([d, base], ignore_index=True)
    d = (d.assign(_t=d["temperature"].map(stats.temperature_value), _m=(d["model"] == "baseline").astype(int))
         .sort_values(["dataset", "student_size", "_m", "_t"], kind="mergesort").drop(columns=["_t", "_m"]))
    out = Path(plots_dir) / PLOTS_CSV
    write_text(out, d[["dataset", "student_size", "model", "temperature", "test_accuracy"]]
               .to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    return out


# --------------------------------------------------------------------------- study designs


def _frac(v: float) -> str:
    return f"{100 * v:g}%"


def _level_text(axis: str, level: str, is_reference: bool = False) -> str:
    """How a level reads in tables and sentences: 'augmented', '2× width', 'M = 5', '3% of labels'."""
    v = design_stats.level_value(axis, level)
    if axis == "transfer" or math.isnan(v):
        text = level
    elif axis == "epochs":
        text = f"{level} epochs"
    elif axis == "teacher_width":
        text = f"{level}× width"
    elif axis == "ensemble":
        text = f"M = {level}"
    else:
        text = f"{_frac(v)} of labels"
    return text + (" (reference)" if is_reference else "")


def _gain_of(r, prefix: str = "gain") -> str:
    return _gain_text(r[f"{prefix}_mean"], r[f"{prefix}_lo"], r[f"{prefix}_hi"])


def _no_ci_sentence(rows: pd.DataFrame, conf_pct: int, what: str = "gain") -> str | None:
    cols = [c for c in ("gain_significant", "over_control_significant", "control_gain_significant") if c in rows]
    if rows.empty or rows[cols].to_numpy().any():
        return None
    return (f"No {what} on this axis has a {conf_pct}% CI that excludes zero: the data do not distinguish any of "
            f"these differences from no effect.")


def _transfer_sentences(ds: str, rows: pd.DataFrame, conf_pct: int, params: dict | None) -> list[str]:
    out = []
    labels = {"early_stopped": "the early-stopped teacher (reference)", "in_sample": "in-sample targets",
              "cross_fitted": "cross-fitted targets", "augmented": "the augmented transfer set"}
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s]
        plain = [r for _, r in rs.iterrows() if r["level"] != "augmented"]
        if plain:
            parts = [f"{_gain_of(r)} with {labels.get(r['level'], r['level'])} at T = {r['best_temperature'] or 'n/a'}"
                     for r in plain]
            out.append(f"On {ds}, the H={s} student's test-accuracy gain over the hard-label baseline (temperature "
                       f"chosen on validation) is " + ", ".join(parts) + ".")
        aug = rs[rs["level"] == "augmented"]
        if len(aug):
            r = aug.iloc[0]
            oc, cg = r["over_control_mean"], r["control_gain_mean"]
            if _nan(oc):
                out.append(f"On {ds}, with the augmented transfer set the H={s} student gains {_gain_of(r)} over the "
                           f"baseline; no hard-label control was found to separate augmentation from distillation.")
                continue
            if r["over_control_significant"] and oc > 0:
                link, verdict = "and", "the teacher adds a gain beyond augmentation"
            elif r["over_control_significant"]:
                link, verdict = "but", "on the same copies the hard labels beat the teacher's targets"
            elif not _nan(cg) and cg > 0 and (_nan(oc) or cg >= oc):
                link, verdict = "but only", "most of the gain is augmentation"
            else:
                link, verdict = "and", "the data cannot separate the teacher's part from augmentation's"
            out.append(f"On {ds}, with the augmented transfer set the H={s} student gains {_gain_of(r)} over the "
                       f"baseline, {link} {_gain_of(r, 'over_control')} over the hard-label control trained on the "
                       f"same copies (the control itself gains {_gain_of(r, 'control_gain')} over the baseline): "
                       f"{verdict}.")
    conf_t = rows.drop_duplicates("level")
    if len(conf_t) and conf_t["teacher_transfer_mmp"].notna().any():
        parts = [f"{r.level} {_num(r.teacher_transfer_mmp, 3)}" for r in conf_t.itertuples(index=False)
                 if not _nan(r.teacher_transfer_mmp)]
        out.append("The teacher's mean max-probability on the points each student learns from: " + ", ".join(parts)
                   + " (near 1 means near one-hot targets that carry little beyond the hard labels).")
    if (rows["level"] == "cross_fitted").any():
        k = ((params or {}).get("transfer") or {}).get("folds")
        kk = f"K = {k}" if k is not None else "K"
        out.append(f"Cross-fitted: {kk} fold teachers, each training point labelled by the one that did not see it; "
                   f"the cross-fitted test-time teacher (its test accuracy in the table, and the students' agreement) "
                   f"is the mean of the {k if k is not None else 'K'} fold teachers' probabilities.")
    no = _no_ci_sentence(rows, conf_pct)
    if no:
        out.append(no)
    return out


def _largest(rs: pd.DataFrame) -> pd.Series | None:
    rs = rs[rs["gain_mean"].notna()]
    return None if rs.empty else rs.loc[rs["gain_mean"].idxmax()]


def _curve_sentences(ds: str, axis: str, rows: pd.DataFrame, conf_pct: int) -> list[str]:
    """epochs and label_fraction: baseline accuracy and gain per level, and where the gain peaks."""
    out = []
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s].sort_values("level_value")
        parts = []
        for r in rs.itertuples(index=False):
            lv = (f"{r.level} epochs" if axis == "epochs" else f"{_frac(r.level_value)} of the labels"
                  if not _nan(r.level_value) else r.level)
            parts.append(f"with {lv}{' (reference)' if r.is_reference else ''} the baseline reaches "
                         f"{_pct(r.baseline_mean)} and the best distilled student (T = {r.best_temperature or 'n/a'}) "
                         f"gains {_gain_text(r.gain_mean, r.gain_lo, r.gain_hi)}")
        text = f"On {ds}, H={s}: " + "; ".join(parts) + "."
        top = _largest(rs)
        if top is not None and len(rs) > 1:
            lv = f"{top['level']} epochs" if axis == "epochs" else _level_text(axis, top["level"])
            text += f" The gain is largest with {lv}"
            if axis == "label_fraction":
                smallest = rs["level_value"].min()
                text += (", the fewest labels, as Hinton et al. (2015) found for soft targets"
                         if top["level_value"] == smallest else
                         ", not with the fewest labels, unlike Hinton et al. (2015)'s speech result")
            text += "."
        out.append(text)
    no = _no_ci_sentence(rows, conf_pct)
    if no:
        out.append(no)
    return out


def _capacity_sentences(ds: str, axis: str, rows: pd.DataFrame, conf_pct: int) -> list[str]:
    out = []
    lv = rows.drop_duplicates("level").sort_values("level_value")
    out.append(f"On {ds}, the teacher's test accuracy is " + ", ".join(
        f"{_pct(r.teacher_test_accuracy)} at {_level_text(axis, r.level, r.is_reference)}"
        for r in lv.itertuples(index=False)) + ".")
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s].sort_values("level_value")
        parts = [f"{_gain_text(r.gain_mean, r.gain_lo, r.gain_hi)} at {_level_text(axis, r.level)}"
                 for r in rs.itertuples(index=False)]
        text = f"H={s}: gain over the baseline " + ", ".join(parts) + "."
        top = _largest(rs)
        if top is not None and len(rs) > 2 and axis == "teacher_width":
            vals = list(rs["level_value"])
            if top["level_value"] not in (min(vals), max(vals)):
                text += (f" The gain peaks at an intermediate width ({top['level']}×) and falls for a larger "
                         f"teacher: a non-monotone capacity-gap curve, as Mirzadeh et al. (2019) report")
            elif top["level_value"] == max(vals):
                text += f" The widest teacher ({top['level']}×) teaches best here"
            else:
                text += f" The narrowest teacher ({top['level']}×) teaches best here"
            text += " (each gain has its own CI; the widths are not tested against each other)."
        out.append(text)
    no = _no_ci_sentence(rows, conf_pct)
    if no:
        out.append(no)
    return out


def _share_sentences(ds: str, share: pd.DataFrame) -> list[str]:
    out = []
    for r in share[share["dataset"] == ds].itertuples(index=False):
        head = (f"H={r.student_size}, M = {r.level}: the best-on-validation student distilled from the ensemble "
                f"(T = {r.ensemble_temperature or 'n/a'}) reaches {_pct(r.student_ensemble)} test accuracy, from the "
                f"single teacher (T = {r.single_temperature or 'n/a'}) {_pct(r.student_single)}, a paired difference "
                f"of {_gain_text(r.student_gain_mean, r.student_gain_lo, r.student_gain_hi)}")
        if r.denominator_ok and not _nan(r.share):
            out.append(head + f"; the ensemble beat the single teacher by "
                              f"{_signed(r.teacher_gain, 100, 1)} pp ({_pct(r.ensemble_test_accuracy)} vs "
                              f"{_pct(r.single_test_accuracy)}), so the student's share of the ensemble's gain is "
                              f"{_signed(r.student_gain_mean, 100, 1)} / {_signed(r.teacher_gain, 100, 1)} = "
                              f"{_share_text(r.share, r.share_lo, r.share_hi)}.")
        elif not r.denominator_ok and not _nan(r.teacher_gain):
            out.append(head + f" ({_pct(r.ensemble_test_accuracy)} ensemble vs {_pct(r.single_test_accuracy)} "
                              f"single teacher); {r.note}, so the student's share of it is not computed.")
        else:
            out.append(head + f"; {r.note}.")
    return out


def _share_text(share, lo, hi) -> str:
    if _nan(share):
        return "n/a"
    if _nan(lo):
        return f"{100 * share:.0f}%"
    return f"{100 * share:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]"


def _design_table(axis: str, rows: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    has_ctrl = bool(rows["over_control_mean"].notna().any() or rows["control_gain_mean"].notna().any())
    has_transfer = bool(rows["teacher_transfer_accuracy"].notna().any())
    cols = ["level", "hidden size", "teacher test acc."]
    if has_transfer:
        cols += ["teacher acc. on transfer points", "teacher max-prob. on transfer points"]
    cols += ["baseline test acc. (± CI)", "best T (val)", "best distilled test acc.", "gain over baseline (pp) [CI]"]
    if has_ctrl:
        cols += ["gain over control (pp) [CI]", "control − baseline (pp) [CI]"]
    cols += ["seeds"]
    out = []
    for r in rows.itertuples(index=False):
        row = [{"text": _level_text(axis, r.level, r.is_reference), "cls": ""},
               {"text": str(int(r.student_size)), "cls": "num"},
               {"text": _pct(r.teacher_test_accuracy), "cls": "num"}]
        if has_transfer:
            row += [{"text": _pct(r.teacher_transfer_accuracy), "cls": "num"},
                    {"text": _num(r.teacher_transfer_mmp, 3), "cls": "num"}]
        row += [{"text": _mean_ci_text(r.baseline_mean, r.baseline_lo, r.baseline_hi), "cls": "num"},
                {"text": r.best_temperature or "n/a", "cls": "num"},
                {"text": _pct(r.best_test_mean), "cls": "num"},
                {"text": _gain_text(r.gain_mean, r.gain_lo, r.gain_hi),
                 "cls": "num " + _cls(r.gain_significant, r.gain_mean)}]
        if has_ctrl:
            row += [{"text": "—" if _nan(r.over_control_mean) else
                     _gain_text(r.over_control_mean, r.over_control_lo, r.over_control_hi),
                     "cls": "num " + _cls(r.over_control_significant, r.over_control_mean)},
                    {"text": "—" if _nan(r.control_gain_mean) else
                     _gain_text(r.control_gain_mean, r.control_gain_lo, r.control_gain_hi),
                     "cls": "num " + _cls(r.control_gain_significant, r.control_gain_mean)}]
        row.append({"text": str(int(r.n)), "cls": "num"})
        out.append(row)
    return cols, out


def _share_table(ds: str, share: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    sub = share[share["dataset"] == ds]
    cols = ["M", "hidden size", "ensemble test accuracy", "single teacher test accuracy",
            "student from ensemble (best T)", "student from single teacher (best T)",
            "student difference (pp) [CI]", "share of the ensemble's gain [CI]"]
    rows = []
    for r in sub.itertuples(index=False):
        rows.append([{"text": r.level, "cls": "num"}, {"text": str(int(r.student_size)), "cls": "num"},
                     {"text": _pct(r.ensemble_test_accuracy), "cls": "num"},
                     {"text": _pct(r.single_test_accuracy), "cls": "num"},
                     {"text": f"{_pct(r.student_ensemble)} (T = {r.ensemble_temperature or 'n/a'})", "cls": "num"},
                     {"text": f"{_pct(r.student_single)} (T = {r.single_temperature or 'n/a'})", "cls": "num"},
                     {"text": _gain_text(r.student_gain_mean, r.student_gain_lo, r.student_gain_hi),
                      "cls": "num " + _cls(r.student_gain_significant, r.student_gain_mean)},
                     {"text": _share_text(r.share, r.share_lo, r.share_hi) if r.denominator_ok else
                      f"not computed: {r.note}", "cls": "num"}])
    return cols, rows


AXIS_WHAT = {
    "transfer": "What the students learn from, at every temperature: the reference early-stopped teacher's targets "
                "on the training points; the in-sample targets of a teacher trained to convergence; cross-fitted "
                "targets; or an augmented transfer set (label-preserving copies labelled by the teacher). The "
                "augmented set comes with its hard-label control: students trained on the same copies with their "
                "source's label and no teacher.",
    "epochs": "The students' training budget, for the baseline and every distilled cell alike (each level trains "
              "its own baseline).",
    "teacher_width": "The teacher's width multiplier (the same architecture, narrower or wider), with the students "
                     "unchanged; the baseline is the reference's.",
    "ensemble": "The teacher is the mean of M independently seeded teachers' probabilities (Hinton et al. 2015's "
                "original setting); the baseline is the reference's.",
    "label_fraction": "The share of training points (and labels) the students see; the teacher is trained on all of "
                      "them. Each level trains its own baseline on the same subset, for distill.epochs / fraction "
                      "epochs, so that every level takes about as many optimisation steps as the reference.",
}


def _designs_section(designs: pd.DataFrame | None, params: dict | None, figures_dir: Path,
                     confidence: float) -> dict | None:
    if designs is None or designs.empty:
        return None
    conf_pct = int(round(confidence * 100))
    summary = design_stats.level_summary(designs, params=params, confidence=confidence)
    share = design_stats.ensemble_share(designs, confidence=confidence)
    epochs = ((params or {}).get("distill") or {}).get("epochs")
    ref = ("students learn from the teacher early-stopped on validation NLL (width 1, a single teacher), on every "
           "training label, for " + (f"{epochs} epochs (distill.epochs)" if epochs is not None else
                                    "distill.epochs epochs"))
    intro = (f"Each axis below changes ONE factor of the main grid's reference setting ({ref}) and re-trains the "
             f"students at every temperature; each axis also shows its reference level, whose cells are the main "
             f"grid's. Per level and student size the temperature is chosen on the validation split and its gain is "
             f"reported on the test split. All comparisons are paired by seed (every level and model of a student "
             f"size uses the same replicate seeds), with Student-t {conf_pct}% CIs over seeds that are not corrected "
             f"for multiple comparisons: across the many cells of these tables about {100 - conf_pct}% would "
             f"exclude zero by chance alone.")
    axes = []
    for axis in design_stats.axes_present(designs):
        key, title, caption = DESIGN_FIGURE_SPECS[axis]
        blocks = []
        for ds in sorted(designs.loc[designs["axis"] == axis, "dataset"].unique()):
            rows = summary[(summary["dataset"] == ds) & (summary["axis"] == axis)]
            if rows.empty:
                continue
            if axis == "transfer":
                sentences = _transfer_sentences(ds, rows, conf_pct, params)
            elif axis in ("epochs", "label_fraction"):
                sentences = _curve_sentences(ds, axis, rows, conf_pct)
            else:
                sentences = _capacity_sentences(ds, axis, rows, conf_pct)
            share_cols, share_rows = [], []
            if axis == "ensemble":
                sentences += _share_sentences(ds, share)
                share_cols, share_rows = _share_table(ds, share)
            cols, trows = _design_table(axis, rows)
            p = figures_dir / _slug(ds) / f"{key}.png"
            if axis == "transfer":
                figures.plot_design_transfer(summary, ds, p, confidence=confidence)
            elif axis in ("epochs", "label_fraction"):
                figures.plot_design_accuracy(summary, ds, axis, p, confidence=confidence)
            else:
                figures.plot_design_capacity(summary, ds, axis, p, confidence=confidence)
            fig = {"uri": _data_uri(p), "title": f"{title} ({ds})", "alt": f"{title}, dataset {ds}",
                   "caption": caption.format(conf=conf_pct), "path": str(p)}
            blocks.append({"name": ds, "sentences": sentences, "columns": cols, "rows": trows,
                           "share_columns": share_cols, "share_rows": share_rows, "figures": [fig]})
        if blocks:
            axes.append({"axis": axis, "anchor": f"design-{axis}", "title": design_stats.AXIS_TITLES[axis],
                         "what": AXIS_WHAT[axis], "blocks": blocks})
    if not axes:
        return None
    return {"intro": intro, "axes": axes, "share_formula": design_stats.SHARE_FORMULA,
            "headlines": _design_headlines(axes)}


def _design_headlines(axes: list[dict]) -> list[dict]:
    """For the summary at the top: per axis and dataset, its first two sentences that
    carry a number (the gains), linked to the axis's section."""
    out = []
    for ax in axes:
        for block in ax["blocks"]:
            numbered = [s for s in block["sentences"] if " pp " in s or "pp [" in s][:2]
            if numbered:
                out.append({"title": ax["title"], "anchor": ax["anchor"], "sentences": numbered})
    return out


def _design_params(params: dict | None) -> list[tuple[str, str]]:
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


# --------------------------------------------------------------------------- entry point


def build_report(results_csv, walkthrough_csv, walkthrough_pngs: list, params: dict, datasets_meta: list,
                 provenance: dict, benchmarks, out_html, figures_dir, plots_dir=None, *,
                 calibration_csv=None, designs_csv=None, confidence: float = 0.95,
                 title: str = "distillstudy report") -> None:
    """Compute the statistics, write every figure into `figures_dir`, the DVC plot
    table `acc_vs_temperature.csv` into `plots_dir` (default: `plots/` beside
    `out_html`), and the self-contained HTML report to `out_html` (atomically).

    `walkthrough_csv` may be None (the section is then built from the PNGs alone,
    or omitted when there are none); `benchmarks` may be None or empty;
    `calibration_csv` (the evaluate stage's reliability bins) may be None, and the
    reliability diagrams are then left out. `designs_csv` (the evaluate stage's
    reports/designs.csv) adds the "Study designs" section, one subsection per axis
    present; None or a missing file means a study without designs: no section.
    """
    df = stats.load_results(results_csv)
    calibration = None if calibration_csv is None else stats.load_calibration(calibration_csv)
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = Path(out_html).parent / "plots" if plots_dir is None else Path(plots_dir)

    students = df[df["model"] != "teacher"]
    tables = {
        "teacher": stats.teacher_summary(df),
        "best_t": stats.best_temperature(df, confidence=confidence),
        "best_cfg": stats.best_configuration(df, confidence=confidence),
        "gain_acc": stats.paired_gains(df, "accuracy", "test", confidence=confidence),
        "gain_nll": stats.paired_gains(df, "nll", "test", confidence=confidence),
        "gain_ece": stats.paired_gains(df, "ece", "test", confidence=confidence),
        "gain_agr": stats.paired_gains(df, "agreement", "test", confidence=confidence),
        "cells_acc": stats.cell_summary(df, "accuracy", "test", confidence=confidence),
    }
    datasets = [_dataset_section(ds, df, tables, figures_dir, confidence, calibration)
                for ds in sorted(students["dataset"].unique())]
    write_plots_csv(df, plots_dir)
    designs = _designs_section(design_stats.load_designs(designs_csv), params, figures_dir, confidence)

    conf_pct = int(round(confidence * 100))
    method_note = (
        f"How to read the numbers: the best temperature for each student size is selected on the validation split "
        f"(highest mean validation accuracy) and its gain is reported on the test split, which plays no part in any "
        f"choice. Every difference is distilled minus hard-label baseline, paired by seed (same initialisation and "
        f"data order), with a Student-t {conf_pct}% confidence interval over seeds (n − 1 degrees of freedom); for "
        f"NLL and ECE a negative difference is an improvement. Intervals are per cell and not adjusted for multiple "
        f"comparisons: across many cells about {100 - conf_pct}% would exclude zero by chance alone.")
    meta_columns, meta_rows, meta_details = _meta_table(datasets_meta)
    bench_rows, bench_total = _bench_rows(benchmarks)
    html = _environment().get_template(TEMPLATE).render(
        title=title,
        datasets=datasets,
        method_note=method_note,
        conf_pct=conf_pct,
        walkthrough=_walkthrough_section(walkthrough_csv, walkthrough_pngs),
        designs=designs,
        design_params=_design_params(params),
        params_text=_params_text(params),
        meta_columns=meta_columns,
        meta_rows=meta_rows,
        meta_details=meta_details,
        provenance=[(str(k), "" if v is None else str(v)) for k, v in (provenance or {}).items()],
        bench_rows=bench_rows,
        bench_total=bench_total,
    )
    write_text(out_html, html)
