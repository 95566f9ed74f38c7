"""The report's born-again generations (designs.generations; analysis/generations.py): per
dataset a sentence per generation, a table and a figure, shaped as a study-design entry
(render/designs.py) so the page lists it with the axes.

A generation "beats its teacher" only where the whole CI of student - teacher is above
zero; "falls short" where it is below; otherwise the data cannot tell.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from distillstudy.analysis import generations
from distillstudy.render.captions import figure_entry
from distillstudy.render.plotting import figure_title, save
from distillstudy.grid import FIXED_TEACHER_KINDS
from distillstudy.render.text import css_class, gain_text, missing, pct, slug

KEY = "design_generations"
TITLE = "Self-distillation: born-again generations"
WHAT = ("Can a student of the teacher's OWN architecture beat its teacher? Generation 1 is the teacher's architecture "
        "distilled from the teacher (KD at T = 1, at α = 1 — the teacher's targets alone — and at the designs' α); "
        "generation k + 1's replicate r learns from generation k's replicate r at α = 1 (Furlanello et al. 2018), "
        "each generation from fresh initial weights. The seed's argument (data-processing inequality): a student of the "
        "same class, globally optimised on the teacher's targets alone, cannot know more about y than its teacher; a "
        "non-convex, finitely trained one may (Allen-Zhu and Li's account of self-distillation).")
NOTE = ("Gain over its teacher: student − its own teacher's test accuracy, paired by replicate (generation 1's teacher "
        "is the single reference teacher, so its CI covers the students' seeds only). Chosen: the α with the highest "
        "mean validation accuracy. Green/red: the CI is above/below zero.")


def verdict(lo: float, hi: float) -> str:
    """'beats', 'short', 'same' (every replicate exactly its teacher's accuracy) or 'unclear';
    a gain's CI, where render/text.ratio_verdict reads a ratio's."""
    if missing(lo) or missing(hi):
        return "unclear"
    return "beats" if lo > 0 else "short" if hi < 0 else "same" if lo == hi == 0 else "unclear"


def sentences(ds: str, rows: pd.DataFrame, kind: str | None) -> list[str]:
    out = []
    for _, r in rows[rows["chosen"]].iterrows():
        v = verdict(r["gain_lo"], r["gain_hi"])
        words = {"beats": "beats its teacher", "short": "falls short of its teacher",
                 "same": "matches its teacher exactly, replicate by replicate",
                 "unclear": "is not distinguishable from its teacher"}[v]
        out.append(f"On {ds}, born-again generation {int(r['generation'])} (α = {r['alpha']}, chosen on validation) "
                   f"{words}: {pct(r['student_mean'])} against {pct(r['teacher_mean'])}, "
                   f"{gain_text(r['gain_mean'], r['gain_lo'], r['gain_hi'])} (95% CI over {int(r['n'])} replicates); "
                   f"against the original teacher {gain_text(r['over_reference_mean'], r['over_reference_lo'], r['over_reference_hi'])}.")
    chosen = rows[rows["chosen"]]
    beats = [int(r["generation"]) for _, r in chosen.iterrows() if verdict(r["gain_lo"], r["gain_hi"]) == "beats"]
    if kind in FIXED_TEACHER_KINDS:  # a convex fit: the teacher's class globally optimised
        why = ("This teacher is a convex fit (logistic regression on sin x, fitted to convergence): the globally "
               "optimised model of its class, the case the seed's argument covers")
    else:
        why = ("This teacher and its students are non-convex networks trained for a finite budget, outside the "
               "seed's argument, which assumes global optimisation")
    out.append(f"{why}; " + (f"generation(s) {', '.join(map(str, beats))} beat their teacher with confidence."
                             if beats else "no generation beats its teacher with confidence."))
    return out


def _table(rows: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    cols = ["generation", "α", "chosen", "student test acc.", "its teacher", "gain over its teacher [CI]",
            "gain over the original teacher [CI]"]
    out = []
    for _, r in rows.iterrows():
        cls = css_class(verdict(r["gain_lo"], r["gain_hi"]) in ("beats", "short"), r["gain_mean"])
        cells = [str(int(r["generation"])), str(r["alpha"]), "✓" if r["chosen"] else "", pct(r["student_mean"]),
                 pct(r["teacher_mean"]), (gain_text(r["gain_mean"], r["gain_lo"], r["gain_hi"]), cls),
                 gain_text(r["over_reference_mean"], r["over_reference_lo"], r["over_reference_hi"])]
        out.append([{"text": c[0], "cls": c[1]} if isinstance(c, tuple) else {"text": c, "cls": ""} for c in cells])
    return cols, out


def plot_generations(rows: pd.DataFrame, dataset: str, path: Path) -> None:
    """Test accuracy against generation (0: the reference teacher), one line per α."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    try:
        reference = float(rows["reference_accuracy"].iloc[0])
        for alpha, g in rows.groupby("alpha", sort=False):
            g = g.sort_values("generation")
            ax.plot([0, *g["generation"]], [100 * reference, *(100 * g["student_mean"])], marker="o",
                    label=f"α = {alpha}")
        ax.axhline(100 * reference, color="grey", ls="--", lw=1, label="the original teacher")
        ax.set_xlabel("generation (0: the teacher)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(range(0, int(rows["generation"].max()) + 1))
        ax.legend(fontsize=8)
        ax.set_title(figure_title(dataset, KEY, "mean over replicates"), fontsize=9)
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def generations_section(frame: pd.DataFrame | None, figures_dir: Path, kinds: dict[str, str],
                        confidence: float = 0.95) -> dict | None:
    """Born-again generations as a study-design entry (None: none were trained)."""
    summary = generations.summary(frame, confidence)
    if summary.empty:
        return None
    blocks = []
    for ds, rows in summary.groupby("dataset", sort=True):
        path = Path(figures_dir) / slug(ds) / f"{KEY}.png"
        plot_generations(rows, ds, path)
        cols, trows = _table(rows)
        blocks.append({"name": ds, "sentences": sentences(ds, rows, kinds.get(ds)), "columns": cols, "rows": trows,
                       "share_columns": [], "share_rows": [],
                       "figures": [figure_entry(KEY, ds, path, int(round(confidence * 100)))]})
    return {"axis": "generations", "anchor": "design-generations", "title": TITLE, "what": WHAT, "note": NOTE,
            "blocks": blocks}


def headline(section: dict | None) -> dict | None:
    if not section:
        return None
    return {"title": TITLE, "anchor": section["anchor"], "sentences": [b["sentences"][-1] for b in section["blocks"]]}
