"""The per-dataset study figures of the report: accuracy gain heatmap, accuracy and
NLL against temperature, best temperature against student size, fidelity against
generalisation, and reliability diagrams.

Each function takes the long results table (as from `stats.load_results`), a
dataset name and an output path, writes one PNG atomically and closes its
figure. The table's students must be of one family (the report passes one panel's
rows: `plotting.size_noun` refuses several); `label` titles the figure (default: the
dataset) and the family's noun (students.family_noun) names the sizes. PNGs carry no
timestamp or software metadata, so identical inputs give identical bytes.

    >>> from distillstudy.analysis import stats
    >>> from distillstudy.render import figures
    >>> df = stats.load_results("reports/results.csv")
    >>> figures.plot_gain_heatmap(df, "mnist1d", "reports/figures/gain.png")
"""

from __future__ import annotations

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from distillstudy.grid import number_value
from distillstudy.analysis import stats
from distillstudy.render.plotting import empty, figure_title, save, size_colours, size_noun
from distillstudy.students import size_order, size_text, size_value

#: The metrics drawn against temperature (figure keys "<metric>_vs_t") -> y-axis label.
METRIC_LABELS = {
    "accuracy": "test accuracy",
    "nll": "test NLL (lower is better)",
}


def _alpha_label(a) -> str:
    return "" if a is None or np.isnan(a) else f"α={a:g}"


def plot_gain_heatmap(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                      confidence: float = 0.95, label: str | None = None) -> None:
    """Mean paired test-accuracy gain (distilled - baseline, percentage points)
    over temperature (x) x student size (y); '*' and bold mark cells whose CI
    excludes zero. Diverging colours centred at 0 (blue = distillation helps)."""
    g = stats.paired_gains(results_df, "accuracy", "test", confidence=confidence, models=("distilled",))
    g = g[g["dataset"] == dataset]
    noun = size_noun(g)
    title = figure_title(label or dataset, "gain_heatmap", "pp")
    if g.empty:
        empty(path, title, "no paired distilled/baseline results")
        return
    multi_alpha = g["alpha"].nunique(dropna=False) > 1
    g = g.assign(tnum=g["temperature"].map(number_value))
    cols = (g[["temperature", "alpha", "tnum"]].drop_duplicates().sort_values(["tnum", "alpha"])
            .itertuples(index=False))
    cols = [(c.temperature, c.alpha) for c in cols]
    sizes = sorted((size_value(s) for s in g["student_size"].unique()), key=size_order, reverse=True)
    val = np.full((len(sizes), len(cols)), np.nan)
    sig = np.zeros_like(val, dtype=bool)
    for r in g.itertuples(index=False):
        i = sizes.index(size_value(r.student_size))
        j = next(k for k, c in enumerate(cols) if c[0] == r.temperature and
                 (c[1] == r.alpha or (np.isnan(c[1]) and np.isnan(r.alpha))))
        val[i, j] = 100.0 * r.mean
        sig[i, j] = bool(r.significant)
    xlabels = [f"{t}\n{_alpha_label(a)}" if multi_alpha else t for t, a in cols]
    vmax = max(float(np.nanmax(np.abs(val))) if np.isfinite(val).any() else 0.0, 0.5)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(cols) + 2.5), max(3.0, 0.6 * len(sizes) + 1.8)))
    with warnings.catch_warnings():  # seaborn 0.13 calls the deprecated Colormap.set_bad
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(pd.DataFrame(val, index=sizes, columns=xlabels), ax=ax, cmap="RdBu", center=0,
                    vmin=-vmax, vmax=vmax, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": "mean gain (percentage points)"})
    ax.set_facecolor("#dddddd")
    for i in range(len(sizes)):
        for j in range(len(cols)):
            v = val[i, j]
            if np.isnan(v):
                continue
            txt = f"{v:+.1f}" + ("*" if sig[i, j] else "")
            colour = "white" if abs(v) > 0.6 * vmax else "black"
            ax.text(j + 0.5, i + 0.5, txt, ha="center", va="center", color=colour,
                    fontweight="bold" if sig[i, j] else "normal", fontsize=10)
    ax.set_xlabel("temperature T")
    ax.set_ylabel(f"student {noun}")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title + f"\n* = {int(confidence * 100)}% CI over seeds excludes 0", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def plot_metric_vs_temperature(results_df: pd.DataFrame, dataset: str, metric: str, path: str | os.PathLike, *,
                               confidence: float = 0.95, label: str | None = None) -> None:
    """Test `metric` (a key of METRIC_LABELS) against temperature (log2 axis), one
    line per student size with a CI band over seeds; each size's hard-label baseline
    as a dashed horizontal line of the same colour; the teacher as a black dotted line."""
    cs = stats.cell_summary(results_df, metric, "test", confidence=confidence)
    cs = cs[cs["dataset"] == dataset]
    noun = size_noun(cs)
    title = figure_title(label or dataset, f"{metric}_vs_t")
    label = METRIC_LABELS[metric]
    dist = cs[cs["model"] == "distilled"].assign(tnum=lambda d: d["temperature"].map(number_value))
    dist = dist[dist["tnum"] > 0]
    if dist.empty:
        empty(path, title, "no distilled results")
        return
    base = cs[cs["model"] == "baseline"]
    teacher = cs[cs["model"] == "teacher"]
    sizes = sorted({size_value(s) for s in dist["student_size"].unique()}
                   | {size_value(s) for s in base["student_size"].dropna()}, key=size_order)
    colours = size_colours(sizes)
    alphas = sorted(dist["alpha"].dropna().unique())
    styles = ["-", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    handles = []
    for s in sizes:
        c = colours[s]
        for k, a in enumerate(alphas or [np.nan]):
            d = dist[(dist["student_size"] == s) & ((dist["alpha"] == a) | (np.isnan(a) & dist["alpha"].isna()))]
            d = d.sort_values("tnum")
            if d.empty:
                continue
            ax.plot(d["tnum"], d["mean"], marker="o", color=c, linestyle=styles[k % len(styles)], lw=1.8)
            band = d.dropna(subset=["lo", "hi"])
            if len(band):
                ax.fill_between(band["tnum"], band["lo"], band["hi"], color=c, alpha=0.18, lw=0)
        b = base[base["student_size"] == s]
        if len(b):
            ax.axhline(float(b["mean"].mean()), color=c, linestyle="--", lw=1.2)
        handles.append(Line2D([], [], color=c, marker="o", label=size_text(noun, s)))
    if len(teacher):
        ax.axhline(float(teacher["mean"].mean()), color="black", linestyle=":", lw=1.8)
    if len(alphas) > 1:
        handles += [Line2D([], [], color="grey", linestyle=styles[k % len(styles)], label=f"distilled, α={a:g}")
                    for k, a in enumerate(alphas)]
    handles += [Line2D([], [], color="grey", linestyle="--", label="hard-label baseline"),
                Line2D([], [], color="black", linestyle=":", label="teacher"),
                Patch(color="grey", alpha=0.25, label=f"{int(confidence * 100)}% CI over seeds")]
    ts = sorted(dist[["temperature", "tnum"]].drop_duplicates().itertuples(index=False), key=lambda r: r.tnum)
    ax.set_xscale("log", base=2)
    ax.set_xticks([r.tnum for r in ts])
    ax.set_xticklabels([r.temperature for r in ts])
    ax.minorticks_off()
    ax.set_xlabel("temperature T (log2 scale)")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    save(fig, path)


def plot_fidelity(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *, split: str = "test",
                  label: str | None = None) -> None:
    """Fidelity vs generalisation: mean agreement with the teacher (x) against
    mean accuracy (y), one point per (size, temperature) cell, coloured by size;
    hard-label baselines as crosses, logit matching as squares; a thin line joins
    the temperatures of one size in increasing T."""
    acc = stats.cell_summary(results_df, "accuracy", split)
    agr = stats.cell_summary(results_df, "agreement", split)
    m = acc.merge(agr, on=stats.CELL, suffixes=("_acc", "_agr"))
    m = m[(m["dataset"] == dataset) & (m["model"] != "teacher")]
    noun = size_noun(m)
    title = figure_title(label or dataset, "fidelity", split)
    if m.empty:
        empty(path, title, "no agreement results")
        return
    colours = size_colours(m["student_size"].dropna().unique())
    markers = {"distilled": "o", "baseline": "X", "logit_mse": "s"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dist = m[m["model"] == "distilled"].assign(tnum=lambda d: d["temperature"].map(number_value))
    for (s, _a), d in dist.groupby(["student_size", "alpha"], dropna=False):
        d = d.sort_values("tnum")  # thin path through the temperatures of one size, in T order
        ax.plot(d["mean_agr"], d["mean_acc"], color=colours[size_value(s)], lw=0.8, alpha=0.5, zorder=2)
    for r in m.sort_values(["student_size", "model"]).itertuples(index=False):
        c = colours[size_value(r.student_size)]
        ax.scatter(r.mean_agr, r.mean_acc, color=c, marker=markers.get(r.model, "D"), s=55,
                   edgecolor="black", linewidth=0.5, zorder=3)
        if r.model == "distilled":
            ax.annotate(f"T={r.temperature}", (r.mean_agr, r.mean_acc), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#333333")
    handles = [Line2D([], [], color=colours[s], marker="o", linestyle="", label=size_text(noun, s))
               for s in colours]
    present = set(m["model"])
    names = {"distilled": "distilled (label: T)", "baseline": "hard-label baseline", "logit_mse": "logit matching"}
    handles += [Line2D([], [], color="grey", marker=markers[k], linestyle="", markeredgecolor="black", label=names[k])
                for k in ("distilled", "baseline", "logit_mse") if k in present]
    teacher = acc[(acc["dataset"] == dataset) & (acc["model"] == "teacher")]
    if len(teacher):
        ax.axhline(float(teacher["mean"].mean()), color="black", linestyle=":", lw=1.5)
        handles.append(Line2D([], [], color="black", linestyle=":", label="teacher accuracy"))
    ax.set_xlabel(f"{split} top-1 agreement with teacher (mean over seeds)")
    ax.set_ylabel(f"{split} accuracy (mean over seeds)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    save(fig, path)


def plot_best_temperature(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                          confidence: float = 0.95, label: str | None = None) -> None:
    """Best temperature (chosen on validation) against student size.

    Background: for every student size (x) and temperature (y) the mean
    validation accuracy minus that size's best, in percentage points (0 = the
    best cell; darker = closer to it), so a column that is dark over a range of
    temperatures is flat there. A black line joins the selected temperature of
    each size; its label is that choice's paired *test* gain over the baseline
    ('*' when the CI excludes zero; filled marker = significant)."""
    title = figure_title(label or dataset, "best_t", "on validation")
    va = stats.cell_summary(results_df, "accuracy", "val", confidence=confidence)
    va = va[(va["dataset"] == dataset) & (va["model"] == "distilled")]
    noun = size_noun(va)
    bt = stats.best_temperature(results_df, confidence=confidence)
    bt = bt[bt["dataset"] == dataset]
    if va.empty or bt.empty:
        empty(path, title, "no distilled students with validation results")
        return
    multi_alpha = va["alpha"].nunique(dropna=False) > 1
    va = va.assign(tnum=va["temperature"].map(number_value))
    rows = [(r.temperature, r.alpha) for r in
            va[["temperature", "alpha", "tnum"]].drop_duplicates().sort_values(["tnum", "alpha"], ascending=False)
            .itertuples(index=False)]
    sizes = sorted((size_value(s) for s in va["student_size"].unique()), key=size_order)
    gap = np.full((len(rows), len(sizes)), np.nan)
    for j, s in enumerate(sizes):
        col = va[va["student_size"] == s]
        best = col["mean"].max()
        for r in col.itertuples(index=False):
            i = next(k for k, c in enumerate(rows) if c[0] == r.temperature and
                     (c[1] == r.alpha or (np.isnan(c[1]) and np.isnan(r.alpha))))
            gap[i, j] = 100.0 * (r.mean - best)
    ylabels = [f"T={t}, {_alpha_label(a)}" if multi_alpha else t for t, a in rows]
    # Clipped at -3 pp: what matters is which temperatures are near the best; exact values are printed.
    vmin = min(max(float(np.nanmin(gap)) if np.isfinite(gap).any() else -1.0, -3.0), -0.5)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(sizes) + 3.0), max(3.2, 0.55 * len(rows) + 1.9)))
    with warnings.catch_warnings():  # seaborn 0.13 calls the deprecated Colormap.set_bad
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(pd.DataFrame(gap, index=ylabels, columns=[str(s) for s in sizes]), ax=ax, cmap="Blues",
                    vmin=vmin, vmax=0, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": "val. accuracy minus best of its size (pp)", "extend": "min"})
    ax.set_facecolor("#dddddd")
    for i in range(len(rows)):
        for j in range(len(sizes)):
            if not np.isnan(gap[i, j]):
                ax.text(j + 0.5, i + 0.5, f"{gap[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if gap[i, j] > 0.5 * vmin else "black", alpha=0.8)
    xs, ys = [], []
    for j, s in enumerate(sizes):
        r = bt[bt["student_size"] == s]
        if r.empty:
            continue
        r = r.iloc[0]
        i = next(k for k, c in enumerate(rows) if c[0] == r["temperature"] and
                 (c[1] == r["alpha"] or (np.isnan(c[1]) and np.isnan(r["alpha"]))))
        xs.append(j + 0.5)
        ys.append(i + 0.5)
        sig = bool(r["significant"])
        ax.scatter(j + 0.5, i + 0.5, s=260, marker="o", facecolor="#e69f00" if sig else "white",
                   edgecolor="black", linewidth=1.5, zorder=4)
        gain = "n/a" if np.isnan(r["gain_mean"]) else f"{100 * r['gain_mean']:+.1f} pp" + ("*" if sig else "")
        ax.annotate(f"test {gain}", (j + 0.5, i + 0.5), textcoords="offset points", xytext=(0, 13),
                    ha="center", fontsize=8, fontweight="bold", zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    ax.plot(xs, ys, color="black", lw=1.5, zorder=3)
    ax.set_xlabel(f"student {noun}")
    ax.set_ylabel("temperature T")
    ax.tick_params(axis="y", rotation=0)
    handles = [Line2D([], [], color="black", marker="o", markerfacecolor="white", markersize=9,
                      label="best T on validation"),
               Line2D([], [], color="black", marker="o", markerfacecolor="#e69f00", markersize=9, linestyle="",
                      label=f"its test gain: {int(confidence * 100)}% CI excludes 0")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def plot_reliability(calibration_df: pd.DataFrame, dataset: str, panels: list[dict], path: str | os.PathLike, *,
                     label: str | None = None) -> None:
    """Reliability diagrams, one column per model in `panels` (dicts with label,
    model, student_size, temperature, alpha and, for a student, its family), pooled
    over seeds on the test split.

    Top: accuracy per confidence bin (blue bars) against the diagonal of perfect
    calibration, the gap to each bin's mean confidence in red (red above a bar:
    over-confident; red inside it: under-confident), pooled ECE in the title.
    Bottom: share of test predictions per bin (log scale)."""
    title = figure_title(label or dataset, "reliability", "test, pooled over seeds")
    pooled = [(p, stats.pooled_reliability(calibration_df, dataset, p["model"], p.get("student_size"),
                                           p.get("temperature", ""), p.get("alpha"),
                                           setting=p.get("setting"), family=p.get("family")))
              for p in panels]
    pooled = [(p, r) for p, r in pooled if len(r) and r["count"].sum() > 0]
    if not pooled:
        empty(path, title, "no calibration data")
        return
    n = len(pooled)
    fig, axes = plt.subplots(2, n, figsize=(3.4 * n + 0.6, 4.9), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.1], "hspace": 0.08})
    for k, (p, r) in enumerate(pooled):
        top, bottom = axes[0, k], axes[1, k]
        width = r["bin_upper"] - r["bin_lower"]
        centre = (r["bin_upper"] + r["bin_lower"]) / 2
        filled = r["count"] > 0
        top.bar(centre[filled], r["accuracy"][filled], width=width[filled], color="#0072b2", alpha=0.85,
                edgecolor="white", linewidth=0.6, label="accuracy")
        gap_lo = np.minimum(r["accuracy"], r["mean_confidence"])[filled]
        gap_h = (r["mean_confidence"] - r["accuracy"]).abs()[filled]
        top.bar(centre[filled], gap_h, bottom=gap_lo, width=width[filled], color="#d55e00", alpha=0.45,
                edgecolor="#d55e00", linewidth=0.6, hatch="//", label="gap to mean confidence")
        top.plot([0, 1], [0, 1], color="black", linestyle="--", lw=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.grid(True, alpha=0.3)
        top.set_title(f"{p['label']}\nECE {r.attrs['ece']:.3f} · {r.attrs['n_seeds']} seed"
                      f"{'' if r.attrs['n_seeds'] == 1 else 's'}, n = {r.attrs['n']:,}", fontsize=9)
        share = r["count"] / r["count"].sum()
        bottom.bar(centre[filled], share[filled], width=width[filled], color="#777777", edgecolor="white",
                   linewidth=0.6)
        bottom.set_yscale("log")  # near one-hot models put almost everything in the top bin
        bottom.set_ylim(min(0.5 / r.attrs["n"], 0.01), 1.5)
        bottom.set_xticks([0, 0.25, 0.5, 0.75, 1])
        bottom.set_xticklabels(["0", "0.25", "0.5", "0.75", "1"])
        bottom.set_xlabel("confidence (top-1 probability)")
        bottom.grid(True, alpha=0.3)
        if k == 0:
            top.set_ylabel("accuracy in bin")
            bottom.set_ylabel("share of\npredictions\n(log scale)", fontsize=8)
        else:
            top.tick_params(labelleft=False)
            bottom.tick_params(labelleft=False)
    axes[0, 0].legend(loc="upper left", fontsize=7, frameon=True)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.82, bottom=0.13, wspace=0.12)
    save(fig, path)
