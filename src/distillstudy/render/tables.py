"""The report's tables and per-panel sections (a panel: one dataset's students of one
family, with the dataset's teacher): summary sentences, the per-size and
all-cells gain tables with their figures, the datasets' metadata, and the wall time
per rule (the walkthrough's section: render.walkthrough).

Each function returns plain dicts and strings for the Jinja template (escaping is
the template's job); only `dataset_section` writes files (its figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillstudy.analysis import objective_stats, stats, tuning_stats
from distillstudy.grid import setting_name
from distillstudy.render import figures
from distillstudy.render.captions import figure_entry
from distillstudy.render.plotting import STUDY_FIGURES, named_sizes, size_noun
from distillstudy.render.text import css_class, gain_text, mean_ci_text, missing, num, pct, slug
from distillstudy.students import size_order, size_text, size_value

#: A teacher whose mean max-probability on its training points reaches this is
#: near one-hot there: its soft targets add little to the hard labels.
ONEHOT_THRESHOLD = 0.99
META_COLUMNS = ["name", "kind", "n_train", "n_val", "n_test", "n_features", "n_classes", "sha256"]


def summary_tables(df: pd.DataFrame, confidence: float) -> dict:
    """The statistics behind the dataset sections of `df` (the report passes one panel's rows)."""
    selection = objective_stats.select_objectives(df, confidence=confidence)
    return {
        "objectives": selection,
        "objective_cmp": objective_stats.compare_objectives(df, selection, confidence=confidence),
        "teacher": stats.teacher_summary(df),
        "best_t": stats.best_temperature(df, confidence=confidence),
        "best_cfg": stats.best_configuration(df, confidence=confidence),
        "gain_acc": stats.paired_gains(df, "accuracy", "test", confidence=confidence),
        "gain_nll": stats.paired_gains(df, "nll", "test", confidence=confidence),
        "gain_ece": stats.paired_gains(df, "ece", "test", confidence=confidence),
        "gain_agr": stats.paired_gains(df, "agreement", "test", confidence=confidence),
        "cells_acc": stats.cell_summary(df, "accuracy", "test", confidence=confidence),
        "tuned_baseline": tuning_stats.baseline_tuning(df, confidence=confidence),
        "chosen": tuning_stats.chosen_settings(df),
    }


def _lookup(df: pd.DataFrame, **kw) -> pd.Series | None:
    """The first row whose columns equal every `kw` value (a missing value matches NaN), or None."""
    m = pd.Series(True, index=df.index)
    for k, v in kw.items():
        if missing(v):
            m &= df[k].isna()
        else:
            m &= df[k] == v
    sub = df[m]
    return None if sub.empty else sub.iloc[0]


def reliability_panels(best, noun: str = "size") -> list[dict]:
    """Teacher, then the baseline of the best configuration's student (its family and
    size; `noun` names the size) and that configuration."""
    panels = [{"label": "teacher", "model": "teacher", "student_size": None, "temperature": "", "alpha": None}]
    if best is not None:
        size, family = size_value(best["student_size"]), best["family"]
        panels.append({"label": f"hard-label baseline, {size_text(noun, size)}", "model": "baseline",
                       "student_size": size, "temperature": "", "alpha": None, "family": family})
        panels.append({"label": f"best distilled: {size_text(noun, size)}, T = {best['temperature']}",
                       "model": "distilled",
                       "student_size": size, "temperature": best["temperature"], "alpha": best["alpha"],
                       "setting": setting_name("kd", {"temperature": best["temperature"]}), "family": family})
    return panels


def settings_text(row) -> str:
    """'lr 0.01 · 80 epochs' (and the weight decay when not 0) of a tuned cell; '' if untuned."""
    if row is None or missing(row.get("lr")):
        return ""
    decay = "" if not row.get("weight_decay") else f" · weight decay {row['weight_decay']:g}"
    return f"lr {row['lr']:g} · {int(row['epochs'])} epochs{decay}"


def tuning_rows(summaries: dict, ds: str) -> list[dict]:
    """Per size: the tuned baseline (its chosen settings) against its untuned twin."""
    tab = summaries["tuned_baseline"]
    rows = []
    for r in tab[tab["dataset"] == ds].itertuples(index=False):
        rows.append({"size": size_value(r.student_size), "tuned": pct(r.tuned), "untuned": pct(r.untuned),
                     "chosen": settings_text(r._asdict()), "n": int(r.n),
                     "diff": gain_text(r.diff_mean, r.diff_lo, r.diff_hi),
                     "diff_sig": css_class(r.significant, r.diff_mean)})
    return rows


def dataset_section(ds: str, df: pd.DataFrame, summaries: dict, figures_dir: Path, conf: float,
                    calibration: pd.DataFrame | None = None, *, label: str | None = None) -> dict:
    """One panel's summary sentences, per-size and all-cells tables, and figures
    (written under `figures_dir/<slug(label)>/`). `df` holds dataset `ds`'s students of
    ONE family (and its teacher; the report's panel), `summaries` its statistics
    (`summary_tables`); `label` names the panel (default `ds`); `calibration` None leaves
    out the reliability diagrams."""
    conf_pct = int(round(conf * 100))
    label = label or ds
    noun = size_noun(df[df["dataset"] == ds])
    # A zoo student is its name: "student" heads its column, and the sentences say "student" for "size".
    named = named_sizes(df[df["dataset"] == ds])
    header, same, per, units = ("student", "student", "per-student", "students") if named else (
        noun, "size", "per-size", "student sizes")
    teach = _lookup(summaries["teacher"], dataset=ds)
    t_acc = teach["test_accuracy"] if teach is not None else float("nan")
    t_mmp = teach["train_mean_max_prob"] if teach is not None else float("nan")
    warning = ""
    if not missing(t_mmp) and t_mmp >= ONEHOT_THRESHOLD:
        warning = (f"Warning: the teacher is near one-hot on its training points (mean max-probability "
                   f"{t_mmp:.4f} ≥ {ONEHOT_THRESHOLD}), so its soft targets on those points carry almost nothing "
                   f"beyond the hard labels; small or null distillation gains are expected on this dataset.")

    bt = summaries["best_t"][summaries["best_t"]["dataset"] == ds]
    best = _lookup(summaries["best_cfg"], dataset=ds)
    summary = []
    if best is None:
        summary.append(f"{label}: no distilled students with validation results, so no configuration could be "
                       f"selected.")
    else:
        sig_word = ("its CI excludes zero" if best["significant"] else "its CI includes zero, so the difference is "
                    "not statistically distinguishable from no effect")
        summary.append(
            f"{label}: the best distilled configuration on the validation split is "
            f"{size_text(noun, best['student_size'])}"
            f" at temperature T = {best['temperature']} (validation accuracy {pct(best['val_accuracy'])}). On the test "
            f"split its accuracy gain over the hard-label baseline of the same {same} is "
            f"{gain_text(best['gain_mean'], best['gain_lo'], best['gain_hi'])} ({conf_pct}% CI, paired over "
            f"{int(best['n'])} seeds); {sig_word}.")
        n_sig = int(bt["significant"].sum())
        if n_sig == 0:
            summary.append(f"None of the {len(bt)} {per} best-on-validation temperatures gives a test-accuracy "
                           f"gain whose {conf_pct}% CI excludes zero: no significant effect of distillation on "
                           f"accuracy was found here.")
        else:
            pos = int(((bt["significant"]) & (bt["gain_mean"] > 0)).sum())
            summary.append(f"{n_sig} of {len(bt)} {units} have a best-on-validation gain whose CI excludes "
                           f"zero ({pos} positive, {n_sig - pos} negative).")
    summary.append(f"Teacher: test accuracy {pct(t_acc)}; mean max-probability on its training points "
                   f"{num(t_mmp, 4)}.")

    acc_g = summaries["gain_acc"][summaries["gain_acc"]["dataset"] == ds]
    nll_g = summaries["gain_nll"][summaries["gain_nll"]["dataset"] == ds]
    ece_g = summaries["gain_ece"][summaries["gain_ece"]["dataset"] == ds]
    agr_g = summaries["gain_agr"][summaries["gain_agr"]["dataset"] == ds]
    base = summaries["cells_acc"]
    base = base[(base["dataset"] == ds) & (base["model"] == "baseline")]
    sizes = sorted({size_value(s) for s in acc_g["student_size"].dropna()}
                   | {size_value(s) for s in base["student_size"].dropna()}, key=size_order)
    has_lmse = bool((acc_g["model"] == "logit_mse").any())
    # The alpha of a row's best T (and logit matching's alpha) are chosen on validation; say which when several.
    multi_alpha = acc_g.loc[acc_g["model"] == "distilled", "alpha"].nunique() > 1
    chosen = summaries["objectives"][summaries["objectives"]["dataset"] == ds]
    size_rows = []
    for s in sizes:
        b = _lookup(base, student_size=s)
        r = _lookup(bt, student_size=s)
        row = {"size": s, "baseline": mean_ci_text(*(b[["mean", "lo", "hi"]] if b is not None else [np.nan] * 3)),
               "best_t": "n/a", "val_acc": "n/a", "gain": "n/a", "gain_sig": "nsig", "nll_gain": "n/a",
               "nll_sig": "nsig", "lmse_gain": "n/a", "lmse_sig": "nsig",
               "n": int(b["n"]) if b is not None else 0}
        if r is not None:
            row.update(best_t=r["temperature"] + (f", α = {r['alpha']:g}" if multi_alpha else ""),
                       val_acc=pct(r["val_accuracy"]),
                       gain=gain_text(r["gain_mean"], r["gain_lo"], r["gain_hi"]),
                       gain_sig=css_class(r["significant"], r["gain_mean"]))
            nl = _lookup(nll_g, student_size=s, model="distilled", temperature=r["temperature"], alpha=r["alpha"])
            if nl is not None:
                row.update(nll_gain=gain_text(nl["mean"], nl["lo"], nl["hi"], scale=1.0, digits=3, unit=""),
                           nll_sig=css_class(nl["significant"], nl["mean"], False))
        lm = _lookup(chosen, student_size=s, objective="logit_mse")
        if lm is not None:
            row.update(lmse_gain=gain_text(lm["gain_mean"], lm["gain_lo"], lm["gain_hi"]),
                       lmse_sig=css_class(lm["significant"], lm["gain_mean"]))
        size_rows.append(row)

    chosen = summaries["chosen"][summaries["chosen"]["dataset"] == ds]
    cells = []
    for c in acc_g.itertuples(index=False):
        key = dict(student_size=c.student_size, model=c.model, temperature=c.temperature, alpha=c.alpha)
        key["setting"] = c.setting
        model = c.model if c.model == "distilled" or not c.setting else f"{c.model} ({c.setting})"
        out = {"size": size_value(c.student_size), "model": model, "t": c.temperature or "—",
               "alpha": "—" if missing(c.alpha) else f"{c.alpha:g}", "n": int(c.n),
               "acc": gain_text(c.mean, c.lo, c.hi), "acc_sig": css_class(c.significant, c.mean),
               "tuned": settings_text(_lookup(chosen, **key))}
        for name, tab, scale, digits, unit, up in (("nll", nll_g, 1.0, 3, "", False), ("ece", ece_g, 1.0, 3, "", False),
                                                   ("agr", agr_g, 100.0, 1, " pp", True)):
            x = _lookup(tab, **key)
            out[name] = "n/a" if x is None else gain_text(x["mean"], x["lo"], x["hi"], scale=scale, digits=digits,
                                                           unit=unit)
            out[name + "_sig"] = "nsig" if x is None else css_class(x["significant"], x["mean"], up)
        cells.append(out)

    folder = figures_dir / slug(label)
    draw = {
        "gain_heatmap": lambda p: figures.plot_gain_heatmap(df, ds, p, confidence=conf, label=label),
        "accuracy_vs_t": lambda p: figures.plot_metric_vs_temperature(df, ds, "accuracy", p, confidence=conf,
                                                                      label=label),
        "nll_vs_t": lambda p: figures.plot_metric_vs_temperature(df, ds, "nll", p, confidence=conf, label=label),
        "best_t": lambda p: figures.plot_best_temperature(df, ds, p, confidence=conf, label=label),
        "fidelity": lambda p: figures.plot_fidelity(df, ds, p, label=label),
        "reliability": lambda p: figures.plot_reliability(calibration, ds, reliability_panels(best, noun), p,
                                                          label=label),
    }
    figs = []
    for key in STUDY_FIGURES:
        if key == "objectives" or (key == "reliability" and calibration is None):
            continue  # the objectives figure is drawn with its table (render.objectives)
        draw[key](folder / f"{key}.png")
        figs.append(figure_entry(key, label, folder / f"{key}.png", conf_pct))

    return {"name": label, "dataset": ds, "noun": header, "anchor": "ds-" + folder.name,
            "tuning_rows": tuning_rows(summaries, ds), "tuned": bool(len(chosen)), "summary": summary, "onehot_warning": warning,
            "teacher_acc": pct(t_acc), "teacher_nll": num(teach["test_nll"] if teach is not None else np.nan),
            "teacher_mmp": num(t_mmp, 4),
            "teacher_params": "" if teach is None or missing(teach["n_params"]) else f"{int(teach['n_params']):,}",
            "size_rows": size_rows, "has_logit_mse": has_lmse, "cells": cells, "figures": figs}


def _scalar(v) -> bool:
    """A metadata value that fits in a table cell (lists and dicts go to the details)."""
    return v is None or isinstance(v, (str, int, float, bool, np.integer, np.floating))


def meta_table(datasets_meta: list) -> tuple[list, list, list]:
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
            numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            row.append({"text": "" if v is None else (f"{v:,}" if isinstance(v, (int, np.integer)) and not
                                                      isinstance(v, bool) else str(v)),
                        "cls": "mono hash" if c == "sha256" else ("num" if numeric else "")})
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


def bench_rows(benchmarks) -> tuple[list, str]:
    """Wall seconds and job count per rule (columns rule, wall_s, optionally jobs), and their total."""
    if benchmarks is None or len(benchmarks) == 0:
        return [], ""
    b = pd.DataFrame(benchmarks)
    if not {"rule", "wall_s"} <= set(b.columns):
        raise ValueError("benchmarks must have columns rule, wall_s")
    walls = pd.to_numeric(b["wall_s"], errors="coerce")
    jobs = b["jobs"] if "jobs" in b.columns else pd.Series([np.nan] * len(b))
    rows = [{"rule": str(r), "wall_s": num(w, 1), "jobs": "" if missing(j) else str(int(j))}
            for r, w, j in zip(b["rule"], walls, jobs)]
    total = num(float(walls.sum()), 1) if walls.notna().any() else ""
    return rows, total

