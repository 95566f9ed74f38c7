"""The report's first screen, "Which objective?": per panel (a dataset's students of one
family) one table (rows: student sizes; columns: objectives in objective_stats.ORDER),
each cell the validation-selected test-accuracy gain over the baseline with its CI, the
selected setting and alpha beneath; the sentences that say which objectives can and cannot be told apart; the same with Holm's
correction folded away; and the figure of the same numbers.

The statistics come from `distillstudy.analysis.objective_stats`; this module only words
and draws them (plain dicts and strings: escaping is the template's job).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from distillstudy.analysis import objective_stats
from distillstudy.analysis.stats import excludes_zero
from distillstudy.render.captions import figure_entry
from distillstudy.render.plotting import empty, figure_title, named_sizes, save, size_colours, size_noun
from distillstudy.render.text import css_class, gain_text, missing, signed, slug
from distillstudy.students import size_order, size_text, size_value

FIGURE = "objectives"
STAR = "★"


def _alpha(a) -> str:
    return "n/a" if missing(a) else f"{a:g}"


def table_gain(mean, lo, hi) -> str:
    """gain_text, with two decimals where one would print an interval that excludes zero
    with a bound of 0.0 (it would read as touching zero)."""
    hides = any(not missing(b) and b != 0 and signed(b, 100.0, 1) == "0.0" for b in (lo, hi))
    return gain_text(mean, lo, hi, digits=2 if hides and excludes_zero(lo, hi) else 1)


def _listing(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def best_objectives(selection: pd.DataFrame, comparisons: pd.DataFrame) -> dict:
    """student_size (students.size_value) -> the objective best on validation (the one
    compare_objectives compared; with a single objective, that one)."""
    best = {size_value(s): g["best"].iloc[0] for s, g in comparisons.groupby("student_size")}
    for s, g in selection.groupby("student_size"):
        best.setdefault(size_value(s), g["objective"].iloc[0])
    return best


def _cell(r, adjusted: bool, is_best: bool) -> dict:
    lo, hi = (r["holm_lo"], r["holm_hi"]) if adjusted else (r["gain_lo"], r["gain_hi"])
    sig = bool(r["holm_significant"] if adjusted else r["significant"])
    star = is_best and sig and r["gain_mean"] > 0  # the best is marked only where its CI lies above zero
    detail = [r["setting"]] if r["setting"] else []
    detail += [f"α = {_alpha(r['alpha'])}", f"best of {int(r['n_candidates'])}"]
    if adjusted:
        detail.append("Holm p = n/a" if missing(r["p_holm"]) else f"Holm p = {r['p_holm']:.3g}")
    text = (STAR + " " if star else "") + table_gain(r["gain_mean"], lo, hi)
    mean, _, ci = text.partition(" [")  # two unbreakable halves: a narrow column wraps between them
    return {"text": text, "mean": mean, "ci": "[" + ci if ci else "", "detail": " · ".join(detail),
            "cls": css_class(sig, r["gain_mean"]) + (" best" if star else "")}


def _rows(sel: pd.DataFrame, columns: list[str], best: dict, adjusted: bool) -> list[dict]:
    rows = []
    for s, g in sel.groupby("student_size", sort=True):
        by = {r["objective"]: r for _, r in g.iterrows()}
        cells = [_cell(by[o], adjusted, best.get(size_value(s)) == o) if o in by
                 else {"text": "not trained", "mean": "not trained", "ci": "", "detail": "", "cls": "nsig"}
                 for o in columns]
        rows.append({"size": size_value(s), "cells": cells})
    return rows


def _diff(r, adjusted: bool, inline: bool = False) -> str:
    """'kd (+0.9 pp [+0.1, +1.7])', or inline 'kd +0.9 pp [+0.1, +1.7]' (inside brackets)."""
    lo, hi = (r["holm_lo"], r["holm_hi"]) if adjusted else (r["diff_lo"], r["diff_hi"])
    text = table_gain(r["diff_mean"], lo, hi)
    return f"{r['other']} {text}" if inline else f"{r['other']} ({text})"


def size_sentences(sel: pd.DataFrame, comparisons: pd.DataFrame, conf_pct: int, adjusted: bool = False
                   ) -> list[str]:
    """Per student size (of one family: `sel` and `comparisons` one panel's rows): the
    validation-best objective, and which others its test accuracy can (paired CI of the
    difference excludes zero) and cannot be told apart from."""
    flag = "holm_significant" if adjusted else "told_apart"
    noun = size_noun(sel)
    noun = noun[:1].upper() + noun[1:]
    ci = "Holm-adjusted interval" if adjusted else f"{conf_pct}% CI"
    here = "for this student" if named_sizes(sel) else "at this size"
    out = []
    for s, g in sel.groupby("student_size", sort=True):
        c = comparisons[comparisons["student_size"] == s]
        if c.empty:
            out.append(f"{size_text(noun, s)}: only {_listing(list(g['objective']))} was trained; there is "
                       f"nothing to compare.")
            continue
        best = c["best"].iloc[0]
        b = g[g["objective"] == best].iloc[0]
        lo, hi = (b["holm_lo"], b["holm_hi"]) if adjusted else (b["gain_lo"], b["gain_hi"])
        head = (f"{size_text(noun, s)}: {best} is best on validation (its test gain over the baseline: "
                f"{table_gain(b['gain_mean'], lo, hi)}).")
        apart, same = c[c[flag]], c[~c[flag]]
        if (c["n"] < 2).all():
            out.append(f"{head} The objectives cannot be told apart {here}: with fewer than two paired "
                       f"seeds there is no confidence interval.")
            continue
        if apart.empty:
            out.append(f"{head} The objectives cannot be told apart {here}: the {ci} of the paired test "
                       f"difference between {best} and each other objective includes zero ({best} minus "
                       f"{'; minus '.join(_diff(r, adjusted, inline=True) for _, r in same.iterrows())}).")
            continue
        parts = []
        ahead, behind = apart[apart["diff_mean"] > 0], apart[apart["diff_mean"] < 0]
        if len(ahead):
            parts.append(f"its test accuracy is higher than that of "
                         f"{_listing([_diff(r, adjusted) for _, r in ahead.iterrows()])}")
        if len(behind):
            parts.append(f"lower than that of {_listing([_diff(r, adjusted) for _, r in behind.iterrows()])}")
        sentence = f"{head} Paired by seed, {' and '.join(parts)}: the {ci} of each difference excludes zero."
        if len(same):
            sentence += (f" It cannot be told apart from {_listing([_diff(r, adjusted) for _, r in same.iterrows()])}"
                         f": those intervals include zero.")
        out.append(sentence)
    return out


def plot_objectives(selection: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                    confidence: float = 0.95, best: dict | None = None, label: str | None = None) -> None:
    """The objectives table as a figure: per objective (x, ORDER) and student size (one
    colour each, side by side) the validation-selected test-accuracy gain over the
    baseline in percentage points with its CI; filled markers where the CI excludes
    zero; a star above the best-on-validation objective of a size where it is marked."""
    sel = selection[selection["dataset"] == dataset]
    noun = size_noun(sel)
    title = figure_title(label or dataset, FIGURE, "pp")
    if sel.empty:
        empty(path, title, "no distilled students with validation results")
        return
    names = objective_stats.objective_order(sel["objective"])
    sizes = sorted((size_value(s) for s in sel["student_size"].unique()), key=size_order)
    colours = size_colours(sizes)
    width = 0.7 / len(sizes)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(names) + 3.5), 4.3))
    ax.axhline(0, color="black", lw=1)
    for k, s in enumerate(sizes):
        g = sel[sel["student_size"] == s]
        for _, r in g.iterrows():
            x = names.index(r["objective"]) + (k - (len(sizes) - 1) / 2) * width
            y, lo, hi = (100 * r[c] for c in ("gain_mean", "gain_lo", "gain_hi"))
            err = [[0 if np.isnan(lo) else y - lo], [0 if np.isnan(hi) else hi - y]]
            ax.errorbar([x], [y], yerr=err, color=colours[s], capsize=3, lw=1.4, zorder=2)
            ax.scatter([x], [y], s=45, zorder=3, edgecolor=colours[s], linewidth=1.6,
                       facecolor=colours[s] if r["significant"] else "white")
            if (best or {}).get(s) == r["objective"] and r["significant"] and r["gain_mean"] > 0:
                ax.annotate(STAR, (x, hi if not np.isnan(hi) else y), textcoords="offset points", xytext=(0, 3),
                            ha="center", va="bottom", fontsize=13, color=colours[s])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.margins(y=0.12)  # room for the stars
    ax.set_xlabel("objective (setting and α chosen on validation)")
    ax.set_ylabel("test-accuracy gain over baseline (pp)")
    ax.grid(True, axis="y", alpha=0.3)
    pct = round(confidence * 100)
    handles = [Line2D([], [], color=colours[s], marker="o", label=size_text(noun, s)) for s in sizes]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", label=f"filled: {pct}% CI excludes 0"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="",
                       label="hollow: CI includes 0"),
                Line2D([], [], color="grey", marker="$★$", markersize=10, linestyle="",
                       label="best on validation, CI above 0")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)  # over the whole figure: the axes leave room for the legend
    fig.tight_layout()
    save(fig, path)


def objectives_section(ds: str, selection: pd.DataFrame, comparisons: pd.DataFrame, figures_dir: Path,
                       conf: float, *, family: str | None = None, label: str | None = None) -> dict:
    """One panel's objectives table (unadjusted CIs), its Holm-adjusted twin, the
    sentences, and the figure (written to figures_dir/<slug(label)>/objectives.png).
    A panel is dataset `ds`'s students of `family` (None: the tables hold one family);
    `label` names it in headings, anchors and figure folders (default: `ds`)."""
    conf_pct = round(conf * 100)
    label = label or ds
    sel = selection[selection["dataset"] == ds]
    cmp = comparisons[comparisons["dataset"] == ds]
    if family is not None:
        sel, cmp = sel[sel["family"] == family], cmp[cmp["family"] == family]
    noun = size_noun(sel)
    # A zoo student is its name: "student" heads its column, and the notes say "student" for "size".
    named = named_sizes(sel)
    header, unit, same, at = (("student", "student", "student", "for that student") if named
                              else (noun, "student size", "size", "at that size"))
    columns = objective_stats.objective_order(sel["objective"])
    best = best_objectives(sel, cmp)
    n_cand = sorted({int(n) for n in sel["n_candidates"]})
    m_gain = int(sel["p_value"].notna().sum())
    m_cmp = int(cmp["p_value"].notna().sum())
    selection_note = (
        f"Each cell is one objective at one {unit}. Its hyper-parameter setting and mixing weight α "
        f"(L = (1 − α) CE + α · term) were chosen on the validation split: the highest mean validation accuracy "
        f"over seeds among the objective's {'–'.join(str(n) for n in (n_cand[0], n_cand[-1]) if n_cand) or 0} "
        f"candidates (ties: lower validation NLL, then smaller setting values, then smaller α). The number is that "
        f"choice's test-accuracy gain over the hard-label baseline of the same {same}, paired by seed, in percentage "
        f"points, with a Student-t {conf_pct}% CI over seeds. The test split played no part in any choice.")
    shown_note = (
        f"Shown: unadjusted {conf_pct}% intervals, one per cell: each alone covers its gain {conf_pct}% of the "
        f"time, but across the {m_gain} cells of this table about {100 - conf_pct}% would exclude zero by chance. "
        f"{STAR} and bold: the objective best on validation {at}, marked only where its CI lies above zero. "
        f"Green/red: the CI excludes zero (better/worse than the baseline); grey: it includes zero. For the "
        f"many-comparisons reading, open the Holm-adjusted table below.")
    holm_note = (
        f"Holm's step-down correction (statsmodels, method \"holm\"; p from scipy's paired t-test), family-wise "
        f"level {100 - conf_pct}% over the {m_gain} gains of this table, and separately over its {m_cmp} "
        f"best-versus-other differences. Each interval is the paired t interval at the level Holm tests that "
        f"comparison (1 − {(1 - conf):g} / (m − k + 1) for the k-th smallest p, held at the step where Holm "
        f"stops), so it excludes zero exactly when Holm rejects. These intervals carry Holm's decisions; they are "
        f"not simultaneous intervals (only Bonferroni's level, that of the first step, covers all gains at once "
        f"with {conf_pct}% probability).")
    folder = figures_dir / slug(label)
    path = folder / f"{FIGURE}.png"
    plot_objectives(sel, ds, path, confidence=conf, best=best, label=label)
    return {"name": label, "dataset": ds, "noun": header, "anchor": "obj-" + folder.name, "columns": columns,
            "rows": _rows(sel, columns, best, adjusted=False), "holm_rows": _rows(sel, columns, best, adjusted=True),
            "selection_note": selection_note, "shown_note": shown_note, "holm_note": holm_note,
            "sentences": size_sentences(sel, cmp, conf_pct), "holm_sentences": size_sentences(sel, cmp, conf_pct, True),
            "figure": figure_entry(FIGURE, label, path, conf_pct)}
