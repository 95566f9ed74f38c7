"""Figures for the distillation report (one set per dataset).

Each function takes the long results table (as from `stats.load_results`), a
dataset name and an output path, writes one PNG atomically and closes its
figure. PNGs carry no timestamp or software metadata, so identical inputs give
identical bytes.

    >>> from distillstudy import figures, stats
    >>> df = stats.load_results("reports/results.csv")
    >>> figures.plot_gain_heatmap(df, "mnist1d", "reports/figures/gain.png")
"""

from __future__ import annotations

import os
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from distillstudy.analysis import stats  # noqa: E402
from distillstudy.artifacts import atomic_path  # noqa: E402

METRIC_LABELS = {
    "accuracy": "test accuracy",
    "nll": "test NLL (lower is better)",
    "ece": "test ECE (lower is better)",
    "brier": "test Brier score (lower is better)",
    "agreement": "top-1 agreement with teacher",
    "kl_teacher": "KL(teacher || student)",
}


def _save(fig, path: str | os.PathLike) -> None:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def _size_colours(sizes) -> dict:
    sizes = sorted(int(s) for s in sizes)
    pal = sns.color_palette("colorblind", max(len(sizes), 1))
    return {s: pal[i % len(pal)] for i, s in enumerate(sizes)}


def _short(name: str, n: int = 60) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _alpha_label(a) -> str:
    return "" if a is None or np.isnan(a) else f"α={a:g}"


def _empty(path, title: str, message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)


def plot_gain_heatmap(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                      confidence: float = 0.95) -> None:
    """Mean paired test-accuracy gain (distilled - baseline, percentage points)
    over temperature (x) x student size (y); '*' and bold mark cells whose CI
    excludes zero. Diverging colours centred at 0 (blue = distillation helps)."""
    g = stats.paired_gains(results_df, "accuracy", "test", confidence=confidence, models=("distilled",))
    g = g[g["dataset"] == dataset]
    title = f"{_short(dataset)}: test-accuracy gain over baseline (pp)"
    if g.empty:
        _empty(path, title, "no paired distilled/baseline results")
        return
    multi_alpha = g["alpha"].nunique(dropna=False) > 1
    g = g.assign(tnum=g["temperature"].map(stats.temperature_value))
    cols = (g[["temperature", "alpha", "tnum"]].drop_duplicates().sort_values(["tnum", "alpha"])
            .itertuples(index=False))
    cols = [(c.temperature, c.alpha) for c in cols]
    sizes = sorted((int(s) for s in g["student_size"].unique()), reverse=True)
    val = np.full((len(sizes), len(cols)), np.nan)
    sig = np.zeros_like(val, dtype=bool)
    for r in g.itertuples(index=False):
        i = sizes.index(int(r.student_size))
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
    ax.set_ylabel("student hidden size")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title + f"\n* = {int(confidence * 100)}% CI over seeds excludes 0", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_metric_vs_temperature(results_df: pd.DataFrame, dataset: str, metric: str, path: str | os.PathLike, *,
                               split: str = "test", confidence: float = 0.95) -> None:
    """`metric` on `split` against temperature (log2 axis), one line per student
    size with a CI band over seeds; each size's hard-label baseline as a dashed
    horizontal line of the same colour; the teacher as a black dotted line."""
    cs = stats.cell_summary(results_df, metric, split, confidence=confidence)
    cs = cs[cs["dataset"] == dataset]
    label = METRIC_LABELS.get(metric, metric)
    if split != "test":
        label = label.replace("test ", f"{split} ")
    title = f"{_short(dataset)}: {label} vs temperature"
    dist = cs[cs["model"] == "distilled"].assign(tnum=lambda d: d["temperature"].map(stats.temperature_value))
    dist = dist[dist["tnum"] > 0]
    if dist.empty:
        _empty(path, title, "no distilled results")
        return
    base = cs[cs["model"] == "baseline"]
    teacher = cs[cs["model"] == "teacher"]
    sizes = sorted(set(int(s) for s in dist["student_size"].unique()) | set(int(s) for s in base["student_size"].dropna()))
    colours = _size_colours(sizes)
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
        handles.append(Line2D([], [], color=c, marker="o", label=f"hidden {s}"))
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
    _save(fig, path)


def plot_fidelity(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *, split: str = "test") -> None:
    """Fidelity vs generalisation: mean agreement with the teacher (x) against
    mean accuracy (y), one point per (size, temperature) cell, coloured by size;
    hard-label baselines as crosses, logit matching as squares; a thin line joins
    the temperatures of one size in increasing T."""
    acc = stats.cell_summary(results_df, "accuracy", split)
    agr = stats.cell_summary(results_df, "agreement", split)
    m = acc.merge(agr, on=stats.CELL, suffixes=("_acc", "_agr"))
    m = m[(m["dataset"] == dataset) & (m["model"] != "teacher")]
    title = f"{_short(dataset)}: fidelity vs generalisation ({split})"
    if m.empty:
        _empty(path, title, "no agreement results")
        return
    colours = _size_colours(m["student_size"].dropna().unique())
    markers = {"distilled": "o", "baseline": "X", "logit_mse": "s"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dist = m[m["model"] == "distilled"].assign(tnum=lambda d: d["temperature"].map(stats.temperature_value))
    for (s, _a), d in dist.groupby(["student_size", "alpha"], dropna=False):
        d = d.sort_values("tnum")  # thin path through the temperatures of one size, in T order
        ax.plot(d["mean_agr"], d["mean_acc"], color=colours[int(s)], lw=0.8, alpha=0.5, zorder=2)
    for r in m.sort_values(["student_size", "model"]).itertuples(index=False):
        c = colours[int(r.student_size)]
        ax.scatter(r.mean_agr, r.mean_acc, color=c, marker=markers.get(r.model, "D"), s=55,
                   edgecolor="black", linewidth=0.5, zorder=3)
        if r.model == "distilled":
            ax.annotate(f"T={r.temperature}", (r.mean_agr, r.mean_acc), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#333333")
    handles = [Line2D([], [], color=colours[s], marker="o", linestyle="", label=f"hidden {s}") for s in colours]
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
    _save(fig, path)


def plot_best_temperature(results_df: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                          confidence: float = 0.95) -> None:
    """Best temperature (chosen on validation) against student size.

    Background: for every student size (x) and temperature (y) the mean
    validation accuracy minus that size's best, in percentage points (0 = the
    best cell; darker = closer to it), so a column that is dark over a range of
    temperatures is flat there. A black line joins the selected temperature of
    each size; its label is that choice's paired *test* gain over the baseline
    ('*' when the CI excludes zero; filled marker = significant)."""
    title = f"{_short(dataset)}: best temperature (on validation) by student size"
    va = stats.cell_summary(results_df, "accuracy", "val", confidence=confidence)
    va = va[(va["dataset"] == dataset) & (va["model"] == "distilled")]
    bt = stats.best_temperature(results_df, confidence=confidence)
    bt = bt[bt["dataset"] == dataset]
    if va.empty or bt.empty:
        _empty(path, title, "no distilled students with validation results")
        return
    multi_alpha = va["alpha"].nunique(dropna=False) > 1
    va = va.assign(tnum=va["temperature"].map(stats.temperature_value))
    rows = [(r.temperature, r.alpha) for r in
            va[["temperature", "alpha", "tnum"]].drop_duplicates().sort_values(["tnum", "alpha"], ascending=False)
            .itertuples(index=False)]
    sizes = sorted(int(s) for s in va["student_size"].unique())
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
    ax.set_xlabel("student hidden size")
    ax.set_ylabel("temperature T")
    ax.tick_params(axis="y", rotation=0)
    handles = [Line2D([], [], color="black", marker="o", markerfacecolor="white", markersize=9,
                      label="best T on validation"),
               Line2D([], [], color="black", marker="o", markerfacecolor="#e69f00", markersize=9, linestyle="",
                      label=f"its test gain: {int(confidence * 100)}% CI excludes 0")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_reliability(calibration_df: pd.DataFrame, dataset: str, panels: list[dict], path: str | os.PathLike) -> None:
    """Reliability diagrams, one column per model in `panels` (dicts with label,
    model, student_size, temperature, alpha), pooled over seeds on the test split.

    Top: accuracy per confidence bin (blue bars) against the diagonal of perfect
    calibration, the gap to each bin's mean confidence in red (red above a bar:
    over-confident; red inside it: under-confident), pooled ECE in the title.
    Bottom: share of test predictions per bin (log scale)."""
    title = f"{_short(dataset)}: reliability diagrams (test, pooled over seeds)"
    pooled = [(p, stats.pooled_reliability(calibration_df, dataset, p["model"], p.get("student_size"),
                                           p.get("temperature", ""), p.get("alpha")))
              for p in panels]
    pooled = [(p, r) for p, r in pooled if len(r) and r["count"].sum() > 0]
    if not pooled:
        _empty(path, title, "no calibration data")
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
    _save(fig, path)


# --------------------------------------------------------------------------- study designs
#
# These take the per-level table of `design_stats.level_summary` (accuracies as
# fractions), not the raw designs.csv: every number drawn is one printed in the
# report's tables.

DESIGN_LEVEL_LABELS = {"transfer": "transfer protocol", "epochs": "student training epochs",
                       "teacher_width": "teacher width multiplier", "ensemble": "teachers in the ensemble (M)",
                       "label_fraction": "fraction of training labels (log scale)"}


def _design_rows(summary: pd.DataFrame, dataset: str, axis: str) -> pd.DataFrame:
    if summary is None or summary.empty:
        return pd.DataFrame(columns=[] if summary is None else summary.columns)
    return summary[(summary["dataset"] == dataset) & (summary["axis"] == axis)]


def _errorbar(ax, x, mean, lo, hi, *, colour, marker, significant, label=None, size=7, linestyle="none"):
    """Points with CI error bars (in pp); filled where the CI excludes zero."""
    y = 100 * np.asarray(mean, dtype=float)
    lo = 100 * np.asarray(lo, dtype=float)
    hi = 100 * np.asarray(hi, dtype=float)
    err = np.vstack([np.where(np.isnan(lo), 0, y - lo), np.where(np.isnan(hi), 0, hi - y)])
    ax.errorbar(x, y, yerr=err, color=colour, marker="none", linestyle=linestyle, capsize=3, lw=1.3, zorder=2)
    for xi, yi, sig in zip(np.atleast_1d(x), y, np.atleast_1d(significant)):
        ax.scatter(xi, yi, marker=marker, s=size ** 2, facecolor=colour if sig else "white", edgecolor=colour,
                   linewidth=1.6, zorder=3)
    if label:
        ax.plot([], [], color=colour, marker=marker, linestyle="none", label=label)


def plot_design_transfer(summary: pd.DataFrame, dataset: str, path: str | os.PathLike, *,
                         confidence: float = 0.95) -> None:
    """Transfer protocols: one panel per student size; per protocol the best-on-
    validation student's paired test-accuracy gain over the hard-label baseline
    (blue circles) and, for the augmented transfer set, its gain over the hard-label
    control trained on the same copies (orange squares) and the control's own gain
    over the baseline (grey diamonds), each with its CI over seeds; filled markers:
    the CI excludes zero."""
    d = _design_rows(summary, dataset, "transfer")
    title = f"{_short(dataset)}: gain by transfer protocol (test accuracy, pp)"
    if d.empty:
        _empty(path, title, "no transfer-protocol results")
        return
    from distillstudy.analysis import design_stats

    levels = design_stats.sort_levels("transfer", d["level"])
    sizes = sorted(int(s) for s in d["student_size"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(4.2, 1.0 * len(levels) + 1.0) * len(sizes) + 0.8, 4.3),
                             sharey=True, squeeze=False)
    blue, orange, grey = "#0072b2", "#d55e00", "#777777"
    for k, s in enumerate(sizes):
        ax = axes[0, k]
        ds = d[d["student_size"] == s]
        for i, lv in enumerate(levels):
            r = ds[ds["level"] == lv]
            if r.empty:
                continue
            r = r.iloc[0]
            has_ctrl = not np.isnan(r["control_gain_mean"]) or not np.isnan(r["over_control_mean"])
            off = -0.22 if has_ctrl else 0.0
            _errorbar(ax, [i + off], [r["gain_mean"]], [r["gain_lo"]], [r["gain_hi"]], colour=blue, marker="o",
                      significant=[r["gain_significant"]])
            if has_ctrl:
                _errorbar(ax, [i], [r["over_control_mean"]], [r["over_control_lo"]], [r["over_control_hi"]],
                          colour=orange, marker="s", significant=[r["over_control_significant"]])
                _errorbar(ax, [i + 0.22], [r["control_gain_mean"]], [r["control_gain_lo"]], [r["control_gain_hi"]],
                          colour=grey, marker="D", significant=[r["control_gain_significant"]], size=6)
            if r["best_temperature"]:
                ax.annotate(f"T={r['best_temperature']}", (i + off, 100 * r["gain_mean"]), textcoords="offset points",
                            xytext=(-6, 0), ha="right", va="center", fontsize=7, color="#333333")
        ax.axhline(0, color="black", lw=1)
        ax.set_xticks(range(len(levels)))
        refs = set(ds.loc[ds["is_reference"], "level"])
        ax.set_xticklabels([lv.replace("_", "-") + ("\n(reference)" if lv in refs else "") for lv in levels],
                           fontsize=9)
        ax.set_xlim(-0.6, len(levels) - 0.4)
        ax.set_title(f"hidden {s}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.set_ylabel("test-accuracy difference (pp)")
    handles = [Line2D([], [], color=blue, marker="o", linestyle="none", label="distilled − baseline"),
               Line2D([], [], color=orange, marker="s", linestyle="none",
                      label="distilled − hard-label control (same copies)"),
               Line2D([], [], color=grey, marker="D", linestyle="none",
                      label="control − baseline (augmentation alone)"),
               Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="none",
                      label=f"hollow: {int(confidence * 100)}% CI includes 0")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title + " — best T chosen on validation", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    _save(fig, path)


def plot_design_capacity(summary: pd.DataFrame, dataset: str, axis: str, path: str | os.PathLike, *,
                         confidence: float = 0.95) -> None:
    """Capacity gap (axis teacher_width or ensemble): the best-on-validation
    student's paired test-accuracy gain over the baseline against the level (left,
    log2 axis) and against the level's teacher test accuracy (right), one line per
    student size with CI error bars; filled markers: the CI excludes zero."""
    d = _design_rows(summary, dataset, axis)
    what = "teacher width" if axis == "teacher_width" else "ensemble size"
    title = f"{_short(dataset)}: distillation gain against {what} and teacher accuracy"
    if d.empty:
        _empty(path, title, f"no {axis} results")
        return
    d = d[d["level_value"] > 0].sort_values("level_value")
    sizes = sorted(int(s) for s in d["student_size"].unique())
    colours = _size_colours(sizes)
    levels = sorted(d["level_value"].unique())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.3), sharey=True)
    spread = 1.04  # sizes side by side on the log axis
    for k, s in enumerate(sizes):
        ds = d[d["student_size"] == s]
        c = colours[s]
        shift = spread ** (k - (len(sizes) - 1) / 2)
        _errorbar(left, ds["level_value"] * shift, ds["gain_mean"], ds["gain_lo"], ds["gain_hi"], colour=c,
                  marker="o", significant=ds["gain_significant"], label=f"hidden {s}", linestyle="-")
        ta = 100 * ds["teacher_test_accuracy"] + 0.04 * (k - (len(sizes) - 1) / 2)
        _errorbar(right, ta, ds["gain_mean"], ds["gain_lo"], ds["gain_hi"], colour=c, marker="o",
                  significant=ds["gain_significant"], linestyle="-")
    first = d[d["student_size"] == sizes[0]]
    for r in first.itertuples(index=False):
        right.annotate(f"{r.level}×" if axis == "teacher_width" else f"M={r.level}",
                       (100 * r.teacher_test_accuracy, 100 * r.gain_mean), textcoords="offset points",
                       xytext=(5, 6), fontsize=8, color="#333333")
    for ax in (left, right):
        ax.axhline(0, color="black", lw=1)
        ax.grid(True, alpha=0.3)
    left.set_xscale("log", base=2)
    left.set_xticks(levels)
    left.set_xticklabels([f"{v:g}" + (" (ref)" if bool(first.loc[first["level_value"] == v, "is_reference"].any())
                                       else "") for v in levels])
    left.minorticks_off()
    left.margins(x=0.1)
    right.margins(x=0.12)
    left.set_xlabel(DESIGN_LEVEL_LABELS[axis] + " (log2 scale)")
    left.set_ylabel("test-accuracy gain over baseline (pp)")
    right.set_xlabel("the level's teacher: test accuracy (%)")
    left.legend(fontsize=8, frameon=False, loc="best")
    fig.suptitle(title + f"\nbest T chosen on validation; filled: {int(confidence * 100)}% CI over seeds excludes 0",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_design_accuracy(summary: pd.DataFrame, dataset: str, axis: str, path: str | os.PathLike, *,
                         confidence: float = 0.95) -> None:
    """Learning curve (axis label_fraction, log x) or training length (axis
    epochs): one panel per student size, the hard-label baseline's and the best-on-
    validation distilled student's mean test accuracy against the level, each with
    its (unpaired) CI over seeds; the teacher's test accuracy as a dotted line."""
    d = _design_rows(summary, dataset, axis)
    what = "fraction of labels" if axis == "label_fraction" else "training epochs"
    title = f"{_short(dataset)}: test accuracy against {what}"
    if d.empty:
        _empty(path, title, f"no {axis} results")
        return
    d = d[d["level_value"] > 0].sort_values("level_value")
    sizes = sorted(int(s) for s in d["student_size"].unique())
    colours = _size_colours(sizes)
    levels = sorted(d["level_value"].unique())
    log = axis == "label_fraction" or (len(levels) > 1 and levels[-1] / levels[0] >= 8)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes) + 1.0, 4.2), sharey=True, squeeze=False)
    for k, s in enumerate(sizes):
        ax = axes[0, k]
        ds = d[d["student_size"] == s]
        c = colours[s]
        for col, style, marker, shift in (("baseline", "--", "X", 0.985), ("best_test", "-", "o", 1.015)):
            x = ds["level_value"] * (shift if log else 1.0)
            y = 100 * ds[f"{col}_mean"]
            err = np.vstack([(y - 100 * ds[f"{col}_lo"]).fillna(0), (100 * ds[f"{col}_hi"] - y).fillna(0)])
            ax.errorbar(x, y, yerr=err, color=c, linestyle=style, marker=marker, capsize=3, lw=1.5,
                        markerfacecolor="white" if col == "baseline" else c, markersize=7)
        for r in ds.itertuples(index=False):
            if r.best_temperature:
                ax.annotate(f"T={r.best_temperature}", (r.level_value * (1.015 if log else 1), 100 * r.best_test_mean),
                            textcoords="offset points", xytext=(4, 6), fontsize=7, color="#333333")
        t = ds["teacher_test_accuracy"].dropna()
        if len(t):
            ax.axhline(100 * float(t.mean()), color="black", linestyle=":", lw=1.5)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(levels)
        refs = set(ds.loc[ds["is_reference"], "level_value"])
        fmt = (lambda v: f"{100 * v:g}%") if axis == "label_fraction" else (lambda v: f"{v:g}")
        ax.set_xticklabels([fmt(v) + ("\n(ref)" if v in refs else "") for v in levels])
        ax.minorticks_off()
        ax.margins(x=0.12)
        ax.set_xlabel(DESIGN_LEVEL_LABELS[axis])
        ax.set_title(f"hidden {s}", fontsize=10)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.set_ylabel("test accuracy (%)")
    handles = [Line2D([], [], color="grey", linestyle="--", marker="X", markerfacecolor="white",
                      label="hard-label baseline"),
               Line2D([], [], color="grey", linestyle="-", marker="o", label="best distilled (T chosen on validation)"),
               Line2D([], [], color="black", linestyle=":", label="teacher"),
               Line2D([], [], color="grey", marker="|", linestyle="none", markersize=10,
                      label=f"{int(confidence * 100)}% CI over seeds (unpaired)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    _save(fig, path)
