"""The report's language-model section: per dataset, sentences that claim only what the
confidence intervals allow, the teacher (and, on a synthetic language, the oracle), per
student a table of data source x objective of the validation-selected test gain in
per-token NLL over the baseline (and, on synthetic data, in the exact KL to the truth),
and a quality-against-diversity figure of the students' samples.

    >>> html = lm_section(lm_stats.load_lm_results("reports/lm_results.csv"), Path("reports/figures"))

The statistics are analysis.lm_stats'; this module words and draws them. It returns an HTML
fragment (every text escaped here, with html.escape), for the page to insert as it is.
A student's verdict on a gain (baseline minus student, so positive = better):
"improves on the baseline" only where the whole CI lies above zero, "is worse than the
baseline" only where it lies below, "is not distinguishable from the baseline" where it
holds zero, and nothing claimed from one replicate (no CI).
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from distillstudy.analysis import lm_stats
from distillstudy.analysis.stats import excludes_zero
from distillstudy.grid import format_number
from distillstudy.render.captions import data_uri
from distillstudy.render.plotting import empty, save, short
from distillstudy.render.text import css_class, missing, num, signed, slug

SECTION_ID = "language-models"
IMPROVES, WORSE, UNCLEAR, NO_CI = "improves", "worse", "unclear", "no_ci"
#: How a source reads in a sentence.
SOURCE_WORDS = {"data": "data prefixes", "teacher": "the teacher's samples", "student": "the student's own samples"}
#: A setting's hyper-parameter abbreviations (grid's LM cell names) -> how a reader writes them.
HYPER_SYMBOLS = {"T": "T", "beta": "β", "lam": "skew λ"}
SOURCE_MARKERS = {"data": "o", "teacher": "s", "student": "^"}
QUALITY_LABELS = {"sample_true_nll": "true NLL of the samples (nats/token, lower is better)",
                  "sample_teacher_nll": "teacher-judged NLL of the samples (nats/token, lower is better)"}


# --------------------------------------------------------------------------- words


def figure_name(dataset: str) -> str:
    """The PNG of a dataset's quality-diversity figure, under the figures folder:
    'lm-<dataset>-quality-diversity.png' (a name unsafe in a path: text.slug of it)."""
    safe = dataset if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", dataset) else slug(dataset)
    return f"lm-{safe}-quality-diversity.png"


def verdict(lo, hi) -> str:
    """IMPROVES (CI above zero), WORSE (below zero), UNCLEAR (holds zero) or NO_CI."""
    if missing(lo) or missing(hi):
        return NO_CI
    return IMPROVES if lo > 0 else WORSE if hi < 0 else UNCLEAR


def nats(mean, lo, hi) -> str:
    """A gain in nats per token with its CI: '+0.012 [+0.004, +0.020]'; more decimals where
    three would print a bound of an interval that excludes zero as 0.000."""
    if missing(mean):
        return "n/a"
    digits = 3
    while digits < 6 and excludes_zero(lo, hi) and any(b != 0 and round(abs(b), digits) == 0 for b in (lo, hi)):
        digits += 1
    ci = "CI n/a (one replicate)" if missing(lo) else f"[{signed(lo, 1.0, digits)}, {signed(hi, 1.0, digits)}]"
    return f"{signed(mean, 1.0, digits)} {ci}"


def setting_text(setting: str) -> str:
    """'beta0.5_T1' -> 'β = 0.5, T = 1'; 'lam0.1' -> 'skew λ = 0.1'; '' -> ''; a name not
    of that form is kept as it is."""
    parts = []
    for token in filter(None, (setting or "").split("_")):
        match = re.fullmatch(rf"({'|'.join(sorted(HYPER_SYMBOLS, key=len, reverse=True))})([0-9][0-9.e+-]*)", token)
        if not match:
            return setting
        parts.append(f"{HYPER_SYMBOLS[match[1]]} = {format_number(match[2])}")
    return ", ".join(parts)


def choice_text(row) -> str:
    """The chosen cell's setting as the table's small text: 'T = 1 · α = 0.5' (data),
    'T = 1 · on-policy λ = 0.5' (student samples), 'T = 1' (teacher samples)."""
    parts = [setting_text(row["setting"])] if row["setting"] else []
    if row["source"] == "data" and not missing(row["alpha"]):
        parts.append(f"α = {format_number(row['alpha'])}")
    if row["source"] == "student" and not missing(row["on_policy_fraction"]):
        parts.append(f"on-policy λ = {format_number(row['on_policy_fraction'])}")
    return " · ".join(parts)


def _named(row) -> str:
    """'rkl on the student's own samples (T = 1 · on-policy λ = 0.5)'."""
    choice = choice_text(row)
    where = SOURCE_WORDS.get(row["source"], row["source"])
    return f"{row['objective']} on {where}" + (f" ({choice})" if choice else "")


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def student_sentence(dataset: str, student: str, nll: pd.DataFrame, kl: pd.DataFrame | None = None) -> str:
    """One student's sentence: the objective x source whose selected cell is best on
    validation NLL (test plays no part in naming it), its verdict and test-NLL gain; how
    many objective x source pairs improve, are worse, or cannot be told from the baseline;
    on synthetic data (`kl` rows) the exact-KL gain of the same cell."""
    if nll.empty:
        return f"{dataset}, {student}: no distilled cells with validation results, so nothing can be said yet."
    best = nll.loc[min(nll.index, key=lambda i: round(float(nll.at[i, "val_select"]), 12))]
    v = verdict(best["lo"], best["hi"])
    gain = nats(best["gain"], best["lo"], best["hi"])
    words = {IMPROVES: f"improves on the baseline's test NLL by {gain} nats per token",
             WORSE: f"is worse than the baseline's test NLL by {gain} nats per token",
             UNCLEAR: f"is not distinguishable from the baseline in test NLL ({gain} nats per token)",
             NO_CI: "was trained with one replicate, which gives no CI, so nothing is claimed"}[v]
    out = (f"{dataset}, {student}: the objective and source best on validation, {_named(best)}, {words}")
    if kl is not None and len(kl):
        match = kl[(kl["objective"] == best["objective"]) & (kl["source"] == best["source"])]
        if len(match):
            k = match.iloc[0]
            kv = verdict(k["lo"], k["hi"])
            kgain = nats(k["gain"], k["lo"], k["hi"])
            out += {IMPROVES: f"; against the truth, it lowers the exact KL(truth ‖ student) by {kgain} nats per "
                              f"token",
                    WORSE: f"; against the truth, it raises the exact KL(truth ‖ student) ({kgain} nats per token)",
                    UNCLEAR: f"; against the truth, its exact KL(truth ‖ student) is not distinguishable from the "
                             f"baseline's ({kgain})",
                    NO_CI: ""}[kv]
    verdicts = [verdict(lo, hi) for lo, hi in zip(nll["lo"], nll["hi"])]
    better = [f"{r['objective']} on {r['source']}" for (_, r), x in zip(nll.iterrows(), verdicts) if x == IMPROVES]
    n = len(nll)
    if all(x == NO_CI for x in verdicts):
        return out + "."
    counts = [f"{verdicts.count(IMPROVES)} improve{'s' if verdicts.count(IMPROVES) == 1 else ''} on the baseline"
              + (f" ({_listing(better)})" if better else ""),
              f"{verdicts.count(WORSE)} {'is' if verdicts.count(WORSE) == 1 else 'are'} worse",
              f"{verdicts.count(UNCLEAR)} {'is' if verdicts.count(UNCLEAR) == 1 else 'are'} not distinguishable "
              f"from it"]
    return out + (f". Of the {n} objective × source pairs (each at its validation-selected setting), "
                  f"{_listing(counts)}.")


def reference_sentence(dataset: str, refs: pd.DataFrame) -> str:
    """The teacher's test NLL (and, on synthetic data, its exact KL to the truth beside the
    oracle's NLL, the language's entropy rate as estimated on the test sequences)."""
    teacher = refs[refs["student"] == lm_stats.TEACHER]
    oracle = refs[refs["student"] == lm_stats.ORACLE]
    value = lambda frame, metric: (frame[metric].iloc[0] if len(frame) and metric in frame else np.nan)  # noqa: E731
    parts = []
    if len(teacher):
        params = value(teacher, "n_params")
        ppl = value(teacher, "perplexity")
        nll = value(teacher, "nll")
        ppl = float(np.exp(nll)) if missing(ppl) and not missing(nll) else ppl
        head = "the teacher" + (f" ({int(params):,} parameters)" if not missing(params) else "")
        kl = value(teacher, "kl_truth")
        parts.append(f"{head} has test NLL {num(nll)} nats per token (perplexity {num(ppl, 2)})"
                     + ("" if missing(kl) else f" and an exact KL(truth ‖ teacher) of {num(kl, 4)} nats per token on "
                                               f"the test prefixes"))
    if len(oracle):
        parts.append(f"the oracle (the true next-token distribution) has test NLL {num(value(oracle, 'nll'))} nats "
                     f"per token: the language's entropy rate, as estimated on these test sequences, the floor no "
                     f"model can beat in expectation")
    if not parts:
        return f"Reference models on {dataset}: no results."
    return f"Reference models on {dataset}: " + "; ".join(parts) + "."


# --------------------------------------------------------------------------- tables


def gain_table(gains: pd.DataFrame, caption: str) -> str:
    """One student's table: rows data sources (lm_stats.SOURCES that were trained), columns
    objectives, each cell 'gain [lo, hi]' with the chosen setting in small text."""
    objectives = sorted(gains["objective"].unique(), key=lm_stats.objective_key)
    sources = sorted(gains["source"].unique(), key=lm_stats.source_key)
    head = "".join(f"<th>{escape(o)}</th>" for o in objectives)
    body = []
    for source in sources:
        cells = []
        for objective in objectives:
            m = gains[(gains["source"] == source) & (gains["objective"] == objective)]
            if m.empty:
                cells.append('<td class="num nsig">not trained</td>')
                continue
            r = m.iloc[0]
            text = nats(r["gain"], r["lo"], r["hi"])
            mean, _, ci = text.partition(" ")
            detail = choice_text(r)
            cls = css_class(bool(r["significant"]), r["gain"])
            cells.append(f'<td class="num {cls}"><span class="gain">{escape(mean)}</span> '
                         f'<span class="gain">{escape(ci)}</span>'
                         + (f' <small class="detail">{escape(detail)}</small>' if detail else "") + "</td>")
        body.append(f'<tr><th scope="row">{escape(source)}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll">\n<table class="lm-gains">\n<caption class="note">{escape(caption)}</caption>\n'
            f"<thead><tr><th>source</th>{head}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody>\n</table>\n</div>")


def _caption(what: str, g: pd.DataFrame, conf_pct: int) -> str:
    n = int(g["n_pairs"].max()) if len(g) else 0
    base = g["baseline_mean"].dropna()
    base_text = f" (the baseline's mean: {num(base.iloc[0], 3)})" if len(base) else ""
    return (f"{what}{base_text}: the gain of the cell chosen on validation NLL for each objective and data source, "
            f"baseline − student in nats per token (positive = better), paired by replicate, mean [{conf_pct}% CI] "
            f"over {n} replicates. Rows: where the training prefixes come from (data: mixed with the NLL at weight "
            f"α; teacher: the teacher's samples; student: the student's own samples with probability λ per step, "
            f"else data). Small text: the setting chosen on validation. Green / red: the CI lies above / below "
            f"zero; grey: it holds zero.")


# --------------------------------------------------------------------------- figure


def _colours(objectives) -> dict:
    """Objective -> colour, by lm_stats.objective_key position, the same in every figure."""
    order = sorted(set(objectives) | set(lm_stats.OBJECTIVE_ORDER), key=lm_stats.objective_key)
    pal = sns.color_palette("colorblind", len(order))
    return {o: pal[i % len(pal)] for i, o in enumerate(order)}


def quality_metric(means: pd.DataFrame) -> str | None:
    """The samples' quality measure of a dataset: the true NLL where the truth is known,
    else the teacher-judged NLL (None when neither was measured)."""
    for metric in ("sample_true_nll", "sample_teacher_nll"):
        if metric in means and means[metric].notna().any():
            return metric
    return None


def plot_quality_diversity(means: pd.DataFrame, dataset: str, path: Path) -> None:
    """Per trained cell (test means over replicates): the samples' quality (y, lower is
    better) against distinct-2 (x); one panel per student, colour = objective, marker =
    source, the baseline a black star; the teacher's (and oracle's) own samples in grey."""
    title = f"{short(dataset)}: sample quality against diversity"
    trained = means[~means["student"].isin(lm_stats.REFERENCE_STUDENTS)]
    quality = quality_metric(trained)
    if quality is None or "distinct_2" not in trained or trained["distinct_2"].isna().all():
        empty(path, title, "no sample metrics")
        return
    names = lm_stats.students(means, dataset)
    colours = _colours(trained["objective"].unique())
    refs = means[means["student"].isin(lm_stats.REFERENCE_STUDENTS)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names) + 1.7, 3.8), squeeze=False, sharex=True,
                             sharey=True)
    for ax, student in zip(axes[0], names):
        rows = trained[trained["student"] == student]
        for r in rows.itertuples(index=False):
            x, y = getattr(r, "distinct_2"), getattr(r, quality)
            if missing(x) or missing(y):
                continue
            if r.cell == lm_stats.BASELINE:
                ax.scatter([x], [y], marker="*", s=180, color="black", zorder=3)
            else:
                ax.scatter([x], [y], marker=SOURCE_MARKERS.get(r.source, "x"), s=56, color=colours[r.objective],
                           edgecolors="white", linewidths=0.5, zorder=2)
        for r in refs.itertuples(index=False):
            x, y = getattr(r, "distinct_2", np.nan), getattr(r, quality, np.nan)
            if not (missing(x) or missing(y)):
                ax.scatter([x], [y], marker="D" if r.student == lm_stats.TEACHER else "P", s=50, color="0.55",
                           zorder=1)
        ax.set_title(student, fontsize=9)
        ax.set_xlabel("distinct-2 of the samples (higher = more diverse)", fontsize=8)
        ax.grid(True, lw=0.4, alpha=0.5)
    axes[0][0].set_ylabel(QUALITY_LABELS[quality], fontsize=8)
    distilled = trained[trained["cell"] != lm_stats.BASELINE]
    present = sorted(distilled["objective"].unique(), key=lm_stats.objective_key)
    sources = sorted(distilled["source"].unique(), key=lm_stats.source_key)
    handles = [Line2D([], [], ls="", marker="o", color=colours[o], label=o) for o in present]
    handles += [Line2D([], [], ls="", marker=SOURCE_MARKERS.get(s, "x"), color="0.3", label=f"{s} prefixes")
                for s in sources]
    handles.append(Line2D([], [], ls="", marker="*", ms=11, color="black", label="baseline"))
    for who, marker in ((lm_stats.TEACHER, "D"), (lm_stats.ORACLE, "P")):
        if who in set(refs["student"]):
            handles.append(Line2D([], [], ls="", marker=marker, color="0.55", label=f"{who}'s samples"))
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    save(fig, path)


def figure_html(dataset: str, path: Path, quality: str | None) -> str:
    measure = QUALITY_LABELS.get(quality, "sample quality").split(" (")[0]
    alt = (f"Scatter plot, dataset {dataset}: for every trained cell, the {measure} (y, lower is better) against "
           f"the distinct-2 share of the samples (x), one panel per student; colour = objective, marker = source of "
           f"the training prefixes, black star = the baseline.")
    caption = (f"Quality against diversity of each cell's samples (test means over replicates; unpaired, no "
               f"intervals: the tables above hold the tested differences). Down is better quality ({measure}), right "
               f"is more diverse samples (distinct bigrams / all bigrams). The known trade-off: reverse KL is "
               f"mode-seeking, its student puts its mass on the teacher's main modes and drops the rest, so its "
               f"samples tend to score better but repeat themselves (down and to the left); forward KL is "
               f"mode-covering, its student spreads mass over everything the teacher allows, so its samples are more "
               f"diverse but include more low-probability text (up and to the right). Training on the student's own "
               f"samples (on-policy) usually pushes toward the mode-seeking corner. The baseline (black star) "
               f"shows where plain NLL training lands; grey markers are the teacher's (and oracle's) own samples.")
    return (f'<figure>\n<img src="{data_uri(path)}" alt="{escape(alt)}">\n<figcaption>{escape(dataset)}: sample '
            f"quality against diversity</figcaption>\n</figure>\n<p class=\"caption\">{escape(caption)}</p>")


# --------------------------------------------------------------------------- section


def method_note(conf_pct: int) -> str:
    return (f"Causal language models distilled token by token from a teacher. For each student, objective and "
            f"source of the training prefixes, the setting (hyper-parameters, mixing weight α, on-policy fraction "
            f"λ) with the lowest mean validation NLL is chosen; the test split plays no part in any choice. Its test score is "
            f"compared with the baseline's (the same student trained on the data with the plain NLL, α = 0), paired "
            f"by replicate (same seed), as baseline − student: a positive gain is an improvement. Means over "
            f"replicates with Student-t {conf_pct}% confidence intervals (n − 1 degrees of freedom); intervals are "
            f"per comparison and not adjusted for multiple comparisons, so across many pairs about "
            f"{100 - conf_pct}% would exclude zero by chance alone. NLL is per token, in nats. On a synthetic "
            f"language the truth is known: KL(truth ‖ student) is computed exactly on the test prefixes.")


def _dataset_html(dataset: str, df: pd.DataFrame, nll: pd.DataFrame, kl: pd.DataFrame, means: pd.DataFrame,
                  refs: pd.DataFrame, figures_dir: Path, conf_pct: int) -> str:
    names = lm_stats.students(df, dataset)
    sentences = [student_sentence(dataset, s, nll[nll["student"] == s], kl[kl["student"] == s]) for s in names]
    parts = [f'<section id="lm-{escape(slug(dataset))}">',
             f'<details class="fold h3" open><summary><h3>{escape(dataset)}</h3></summary>',
             '<div class="summary">' + "".join(f"<p>{escape(s)}</p>" for s in sentences) + "</div>",
             f"<p>{escape(reference_sentence(dataset, refs[refs['dataset'] == dataset]))}</p>"]
    for student in names:
        g = nll[nll["student"] == student]
        first = means[(means["dataset"] == dataset) & (means["student"] == student)]
        params = first["n_params"].dropna()
        head = student + (f" ({int(params.iloc[0]):,} parameters)" if len(params) else "")
        parts.append(f"<h4>{escape(head)}</h4>")
        if g.empty:
            parts.append("<p>No distilled cells with validation results.</p>")
            continue
        parts.append(gain_table(g, _caption(f"{dataset}, {student}: test NLL", g, conf_pct)))
        k = kl[kl["student"] == student]
        if len(k):
            parts.append(gain_table(k, _caption(f"{dataset}, {student}: exact per-token KL(truth ‖ student) on the "
                                                f"test prefixes", k, conf_pct)))
    path = Path(figures_dir) / figure_name(dataset)
    here = means[means["dataset"] == dataset]
    plot_quality_diversity(here, dataset, path)
    parts.append(figure_html(dataset, path, quality_metric(here[~here["student"].isin(lm_stats.REFERENCE_STUDENTS)])))
    parts.append("</details>\n</section>")
    return "\n".join(parts)


def lm_section(df: pd.DataFrame | None, figures_dir: Path, *, confidence: float = 0.95) -> str:
    """The report's language-model section as an HTML fragment, '<section
    id="language-models">' with its <h2>, one sub-section per dataset (datasets sorted);
    each dataset's figure is written to `figures_dir / figure_name(dataset)` and embedded
    as a data URI, as every report figure is. '' when `df` is None or holds no rows."""
    if df is None or len(df) == 0:
        return ""
    df = lm_stats.normalise_lm_results(df)
    conf_pct = int(round(confidence * 100))
    nll = lm_stats.selected_gains(df, "nll", "nll", confidence)
    kl = lm_stats.selected_gains(df, "kl_truth", "nll", confidence)
    means = lm_stats.cell_means(df, "test")
    refs = lm_stats.reference_rows(df)
    datasets = sorted(df["dataset"].unique())
    body = [_dataset_html(ds, df, nll[nll["dataset"] == ds], kl[kl["dataset"] == ds], means, refs,
                          Path(figures_dir), conf_pct) for ds in datasets]
    return "\n".join([f'<section id="{SECTION_ID}">',
                      '<details class="fold h2" open><summary><h2>Language models: token-level distillation</h2>'
                      "</summary>",
                      f'<p class="note">{escape(method_note(conf_pct))}</p>', *body, "</details>", "</section>"]) + "\n"
