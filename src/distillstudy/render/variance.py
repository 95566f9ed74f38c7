"""The report's variance design (designs.resamples; analysis/variance.py): per dataset, a
sentence per student size, a table and a figure, in the shape of a study-design axis
(render/designs.py) so the page lists it with the axes.

The sentences claim only what the intervals allow: "lower" where the whole 95% CI of the
ratio soft / hard is below 1, "higher" where it is above, and otherwise that the data
cannot tell.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import pandas as pd

from distillstudy.analysis import variance
from distillstudy.render.captions import figure_entry
from distillstudy.render.plotting import figure_title, save, size_colours
from distillstudy.render.text import css_class, gain_text, missing, num, ratio_text, slug
from distillstudy.render.text import ratio_verdict as verdict  # 'lower' / 'higher' / 'none' / 'undefined' 
from distillstudy.students import family_noun

KEY = "design_variance"
TITLE = "Variance across training sets"
WHAT = ("Does distillation lower the variance of the learned predictor, as the seed's explanation says? Each of R "
        "bootstrap resamples of the training split gets its own teacher, refitted on it, and the hard-label and KD "
        "students are retrained on it with the same replicate seeds. Per replicate, the variance across resamples "
        "of the predicted probability of each test point's true class (and of its log loss), averaged over the test "
        "points, measures how much the student depends on its training sample; a ratio below 1 (soft / hard) means "
        "the distilled students vary less. The KD temperature is chosen on validation (mean over resamples).")
NOTE = ("Ratio: soft / hard variance, geometric mean over seeds with a Student-t 95% CI on the log ratios (paired by "
        "seed: each seed's resamples share its initial weights). Green/red: the CI is below/above 1. Bias² and "
        "variance (sine only) are of the predicted p(y = 1 | x) against the true 0.4 sin x + 0.5, averaged over test "
        "points (population variance over the R resamples, so bias² + variance = mean squared error).")


def sentence(ds: str, r, noun: str) -> str:
    where = f"On {ds}, {noun} {int(r['student_size'])}"
    ratio = (f"{ratio_text(r['ratio'], r['ratio_lo'], r['ratio_hi'])} times the hard-label students' variance "
             f"(95% CI over {int(r['n_seeds'])} seeds, {int(r['n_resamples'])} resamples)")
    gain = gain_text(r["gain_mean"], r["gain_lo"], r["gain_hi"])
    v = verdict(r["ratio_lo"], r["ratio_hi"])
    gained = not missing(r["gain_lo"]) and r["gain_lo"] > 0
    if v == "lower":
        tail = ("so distillation's test-accuracy gain here (" + gain + ") comes with lower variance, as the seed's "
                "explanation predicts" if gained else "lower variance, as the seed's explanation predicts, though "
                f"the test-accuracy gain on these resamples ({gain}) is not above zero with confidence")
    elif v == "higher":
        tail = (f"higher variance: here the refitted teacher adds more variance than it removes (the seed's caveat); "
                f"test-accuracy gain {gain}")
    else:
        tail = f"the data cannot tell whether distillation changes the variance (test-accuracy gain {gain})"
    text = (f"{where}: the distilled students' (T = {r['temperature']}, chosen on validation) predicted probability of "
            f"the true class varies across training sets {ratio}: {tail}.")
    if not missing(r["bias2_hard"]):
        text += (f" Against the true p(y | x): bias² {num(r['bias2_hard'], 4)} (hard) vs {num(r['bias2_soft'], 4)} "
                 f"(distilled), variance {num(r['variance_hard'], 4)} vs {num(r['variance_soft'], 4)}.")
    return text


def _table(rows: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    cols = ["size", "best T", "variance, hard", "variance, distilled", "ratio [CI]", "log-loss variance ratio [CI]",
            "test accuracy gain"]
    truth = rows["bias2_hard"].notna().any()
    if truth:
        cols += ["bias², hard", "bias², distilled", "MSE, hard", "MSE, distilled"]
    out = []
    for _, r in rows.iterrows():
        v = verdict(r["ratio_lo"], r["ratio_hi"])  # a lower variance is the better
        cls = css_class(v in ("lower", "higher"), 1 - r["ratio"])
        cells = [str(int(r["student_size"])), str(r["temperature"]), num(r["var_hard"], 5), num(r["var_soft"], 5),
                 (ratio_text(r["ratio"], r["ratio_lo"], r["ratio_hi"]), cls),
                 ratio_text(r["ll_ratio"], r["ll_ratio_lo"], r["ll_ratio_hi"]),
                 gain_text(r["gain_mean"], r["gain_lo"], r["gain_hi"])]
        if truth:
            cells += [num(r[k], 5) for k in ("bias2_hard", "bias2_soft", "mse_hard", "mse_soft")]
        out.append([{"text": c[0], "cls": c[1]} if isinstance(c, tuple) else {"text": c, "cls": ""} for c in cells])
    return cols, out


def plot_variance(rows: pd.DataFrame, dataset: str, noun: str, path: str | os.PathLike) -> None:
    """Per student size, the variance ratio soft / hard with its CI (log scale, 1 = no
    change); filled where the CI excludes 1."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    try:
        sizes = [int(s) for s in rows["student_size"]]
        colours = size_colours(sizes)
        for i, (_, r) in enumerate(rows.iterrows()):
            c = colours[int(r["student_size"])]
            lo, hi = r["ratio_lo"], r["ratio_hi"]
            if not missing(lo):
                ax.errorbar([i], [r["ratio"]], yerr=[[r["ratio"] - lo], [hi - r["ratio"]]], color=c, capsize=4)
            ax.scatter([i], [r["ratio"]], s=60, color=c if verdict(lo, hi) in ("lower", "higher") else "white",
                       edgecolor=c, linewidth=1.6, zorder=3)
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.8, not 8 x 10^-1
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel(noun)
        ax.set_ylabel("variance ratio, distilled / hard")
        ax.set_title(figure_title(dataset, KEY, "95% CI"), fontsize=9)
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def variance_section(frame: pd.DataFrame | None, figures_dir: Path, confidence: float = 0.95) -> dict | None:
    """The variance design as an axis entry of the "Study designs" section (None: no resamples)."""
    summary = variance.summary(frame, confidence)
    if summary.empty:
        return None
    blocks = []
    conf_pct = int(round(confidence * 100))
    for (ds, family), rows in summary.groupby(["dataset", "family"], sort=True):
        noun = family_noun(family)
        path = Path(figures_dir) / slug(ds) / f"{KEY}.png"
        plot_variance(rows, ds, noun, path)
        cols, trows = _table(rows)
        blocks.append({"name": ds, "sentences": [sentence(ds, r, noun) for _, r in rows.iterrows()],
                       "columns": cols, "rows": trows, "share_columns": [], "share_rows": [],
                       "figures": [figure_entry(KEY, ds, path, conf_pct)]})
    return {"axis": "variance", "anchor": "design-variance", "title": TITLE, "what": WHAT, "note": NOTE,
            "blocks": blocks}


def headline(section: dict | None) -> dict | None:
    """The first sentence of each dataset, for the summary at the top of the page."""
    if not section:
        return None
    return {"title": TITLE, "anchor": section["anchor"], "sentences": [b["sentences"][0] for b in section["blocks"]]}

