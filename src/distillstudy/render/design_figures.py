"""The study-design figures of the report: one per axis of params.yaml's `designs`
(transfer protocols, training length, teacher width, ensemble teacher, labelled
fraction), per dataset.

They take the per-level table of `design_stats.level_summary` (accuracies as
fractions), not the raw designs.csv: every number drawn is one printed in the
report's tables. Each function writes one PNG atomically and closes its figure.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from distillstudy import grid
from distillstudy.analysis import design_stats
from distillstudy.render.plotting import design_figure_key, empty, figure_title, save, size_colours, size_noun
from distillstudy.render.text import fraction_percent

#: x-axis label of each axis drawn against its level (transfer protocols are categories).
DESIGN_LEVEL_LABELS = {"epochs": "student training epochs", "teacher_width": "teacher width multiplier",
                       "ensemble": "teachers in the ensemble (M)",
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
    noun = size_noun(d)  # the reference family's: the designs train its students
    title = figure_title(dataset, design_figure_key("transfer"), "test-accuracy gain, pp")
    if d.empty:
        empty(path, title, "no transfer-protocol results")
        return
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
        ax.set_title(f"{noun} {s}", fontsize=10)
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
    save(fig, path)


def _levels_by_size(summary: pd.DataFrame, dataset: str, axis: str, path, title: str):
    """(rows with a positive level sorted by it, student sizes, their colours, levels) of a
    numeric axis; None, with an empty figure written to `path`, when there are none."""
    d = _design_rows(summary, dataset, axis)
    if d.empty:
        empty(path, title, f"no {axis} results")
        return None
    d = d[d["level_value"] > 0].sort_values("level_value")
    sizes = sorted(int(s) for s in d["student_size"].unique())
    return d, sizes, size_colours(sizes), sorted(d["level_value"].unique())


def plot_design_capacity(summary: pd.DataFrame, dataset: str, axis: str, path: str | os.PathLike, *,
                         confidence: float = 0.95) -> None:
    """Capacity gap (axis teacher_width or ensemble): the best-on-validation
    student's paired test-accuracy gain over the baseline against the level (left,
    log2 axis) and against the level's teacher test accuracy (right), one line per
    student size with CI error bars; filled markers: the CI excludes zero."""
    what = "teacher width" if axis == "teacher_width" else "ensemble size"
    title = figure_title(dataset, design_figure_key(axis), f"gain against {what} and teacher accuracy")
    rows = _levels_by_size(summary, dataset, axis, path, title)
    if rows is None:
        return
    d, sizes, colours, levels = rows
    noun = size_noun(d)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.3), sharey=True)
    spread = 1.04  # sizes side by side on the log axis
    for k, s in enumerate(sizes):
        ds = d[d["student_size"] == s]
        c = colours[s]
        shift = spread ** (k - (len(sizes) - 1) / 2)
        _errorbar(left, ds["level_value"] * shift, ds["gain_mean"], ds["gain_lo"], ds["gain_hi"], colour=c,
                  marker="o", significant=ds["gain_significant"], label=f"{noun} {s}", linestyle="-")
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
    refs = set(first.loc[first["is_reference"], "level_value"])
    left.set_xticklabels([grid.format_number(v) + (" (ref)" if v in refs else "") for v in levels])
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
    save(fig, path)


def plot_design_accuracy(summary: pd.DataFrame, dataset: str, axis: str, path: str | os.PathLike, *,
                         confidence: float = 0.95) -> None:
    """Learning curve (axis label_fraction, log x) or training length (axis
    epochs): one panel per student size, the hard-label baseline's and the best-on-
    validation distilled student's mean test accuracy against the level, each with
    its (unpaired) CI over seeds; the teacher's test accuracy as a dotted line."""
    title = figure_title(dataset, design_figure_key(axis), "test accuracy")
    rows = _levels_by_size(summary, dataset, axis, path, title)
    if rows is None:
        return
    d, sizes, colours, levels = rows
    noun = size_noun(d)
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
        fmt = fraction_percent if axis == "label_fraction" else grid.format_number
        ax.set_xticklabels([fmt(v) + ("\n(ref)" if v in refs else "") for v in levels])
        ax.minorticks_off()
        ax.margins(x=0.12)
        ax.set_xlabel(DESIGN_LEVEL_LABELS[axis])
        ax.set_title(f"{noun} {s}", fontsize=10)
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
    save(fig, path)
