"""The "Study designs" section of the report: what each axis changes, the sentences
that read its numbers (gains over the baseline and, for the augmented and consistent
transfer sets, over their hard-label control; where the gain peaks; the student's share of
an ensemble's gain), its tables and figures, and the designs' effective parameters.

The statistics come from `distillstudy.analysis.design_stats` (paired by seed,
Student-t CIs, best temperature chosen on validation); this module only words them.
The designs train the reference family's students (the first of distill.students):
their sizes are named by that family's noun (students.family_noun: "hidden width 16",
"channels 8").
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from distillstudy import grid
from distillstudy.analysis import design_stats
from distillstudy.render import design_figures
from distillstudy.render.captions import figure_entry
from distillstudy.render.plotting import design_figure_key, size_noun
from distillstudy.render.text import (css_class, fraction_percent, gain_text, mean_ci_text, missing, num, pct,
                                      share_text, signed, slug)


def level_text(axis: str, level: str, is_reference: bool = False) -> str:
    """A level in tables and sentences: 'augmented', '2× width', 'M = 5', '3% of labels'."""
    v = grid.number_value(level)
    if axis == "transfer" or math.isnan(v):
        text = level
    elif axis == "epochs":
        text = f"{level} epochs"
    elif axis == "teacher_width":
        text = f"{level}× width"
    elif axis == "ensemble":
        text = f"M = {level}"
    else:
        text = f"{fraction_percent(v)} of labels"
    return text + (" (reference)" if is_reference else "")


def _gain_of(r, prefix: str = "gain") -> str:
    return gain_text(r[f"{prefix}_mean"], r[f"{prefix}_lo"], r[f"{prefix}_hi"])


def _no_ci_sentence(rows: pd.DataFrame, conf_pct: int) -> str | None:
    """Said once per axis and dataset when no difference's CI excludes zero."""
    cols = [c for c in ("gain_significant", "over_control_significant", "control_gain_significant") if c in rows]
    if rows.empty or rows[cols].to_numpy().any():
        return None
    return (f"No gain on this axis has a {conf_pct}% CI that excludes zero: the data do not distinguish any of "
            f"these differences from no effect.")


def oracle_share(rows: pd.DataFrame) -> str | None:
    """The share of the oracle's gain the trained teacher delivers at one size: gain(reference) /
    gain(oracle), a ratio of mean gains (no interval), only where the oracle's CI is above zero."""
    ref, oracle = rows[rows["level"] == "early_stopped"], rows[rows["level"] == "oracle"]
    r, o = (ref.iloc[0], oracle.iloc[0]) if len(ref) and len(oracle) else (None, None)
    if r is None or missing(o["gain_mean"]) or missing(r["gain_mean"]):
        return None
    if not (o["gain_significant"] and o["gain_mean"] > 0):
        return (f"the oracle teacher's own gain ({_gain_of(o)}) is not above zero with confidence, so the share of "
                f"it that the trained teacher delivers ({_gain_of(r)}) is not estimated.")
    return (f"the trained teacher delivers {r['gain_mean'] / o['gain_mean']:.0%} of the oracle teacher's gain "
            f"({_gain_of(r)} against {_gain_of(o)}; a ratio of the two mean gains, without an interval).")


def transfer_sentences(ds: str, rows: pd.DataFrame, conf_pct: int, params: dict | None) -> list[str]:
    """Per student size: the gain with each transfer protocol; for those with a hard-label
    control (grid.CONTROLLED), the gain over it and the verdict (teacher or augmentation);
    then the teacher's confidence on the transfer points."""
    out = []
    noun = size_noun(rows)
    factor = ((params or {}).get("transfer") or {}).get("patient_factor", 1)
    labels = {"early_stopped": "the early-stopped teacher (reference)", "in_sample": "in-sample targets",
              "cross_fitted": "cross-fitted targets", "augmented": "the augmented transfer set",
              "oracle": "the oracle teacher (the true p(y | x))",
              "consistent": "consistent teaching (fresh views, the teacher run on each)",
              "patient": f"patient consistent teaching ({factor}× the epochs)"}
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s]
        plain = [r for _, r in rs.iterrows() if r["level"] not in grid.CONTROLLED]
        if plain:
            parts = [f"{_gain_of(r)} with {labels.get(r['level'], r['level'])} at T = {r['best_temperature'] or 'n/a'}"
                     for r in plain]
            out.append(f"On {ds}, the {noun} {s} student's test-accuracy gain over the hard-label baseline "
                       f"(temperature chosen on validation) is " + ", ".join(parts) + ".")
        share = oracle_share(rs)
        if share:
            out.append(f"On {ds}, {noun} {s}: {share}")
        for _, r in rs[rs["level"].isin(grid.CONTROLLED)].iterrows():
            what = "on the same copies" if r["level"] == "augmented" else "on the same fresh views"
            oc, cg = r["over_control_mean"], r["control_gain_mean"]
            if missing(oc):
                out.append(f"On {ds}, with {labels[r['level']]} the {noun} {s} student gains {_gain_of(r)} over "
                           f"the baseline; no hard-label control was found to separate augmentation from distillation.")
                continue
            if r["over_control_significant"] and oc > 0:
                link, verdict = "and", "the teacher adds a gain beyond augmentation"
            elif r["over_control_significant"]:
                link, verdict = "but", f"{what} the hard labels beat the teacher's targets"
            elif not missing(cg) and cg > 0 and (missing(oc) or cg >= oc):
                link, verdict = "but only", "most of the gain is augmentation"
            else:
                link, verdict = "and", "the data cannot separate the teacher's part from augmentation's"
            out.append(f"On {ds}, with {labels[r['level']]} the {noun} {s} student gains {_gain_of(r)} over "
                       f"the baseline, {link} {_gain_of(r, 'over_control')} over the hard-label control trained "
                       f"{what} (the control itself gains {_gain_of(r, 'control_gain')} over the baseline): {verdict}.")
    conf_t = rows.drop_duplicates("level")
    if len(conf_t) and conf_t["teacher_transfer_mmp"].notna().any():
        parts = [f"{r.level} {num(r.teacher_transfer_mmp, 3)}" for r in conf_t.itertuples(index=False)
                 if not missing(r.teacher_transfer_mmp)]
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


def curve_sentences(ds: str, axis: str, rows: pd.DataFrame, conf_pct: int) -> list[str]:
    """epochs and label_fraction: baseline accuracy and gain per level, and where the gain peaks."""
    out = []
    noun = size_noun(rows)
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s].sort_values("level_value")
        parts = []
        for r in rs.itertuples(index=False):
            lv = (f"{r.level} epochs" if axis == "epochs" else f"{fraction_percent(r.level_value)} of the labels"
                  if not missing(r.level_value) else r.level)
            parts.append(f"with {lv}{' (reference)' if r.is_reference else ''} the baseline reaches "
                         f"{pct(r.baseline_mean)} and the best distilled student (T = {r.best_temperature or 'n/a'}) "
                         f"gains {gain_text(r.gain_mean, r.gain_lo, r.gain_hi)}")
        text = f"On {ds}, {noun} {s}: " + "; ".join(parts) + "."
        top = _largest(rs)
        if top is not None and len(rs) > 1:
            lv = f"{top['level']} epochs" if axis == "epochs" else level_text(axis, top["level"])
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


def capacity_sentences(ds: str, axis: str, rows: pd.DataFrame, conf_pct: int) -> list[str]:
    """teacher_width and ensemble: the teacher's accuracy per level, each size's gain per
    level, and (teacher width) whether the gain peaks at an intermediate width."""
    out = []
    noun = _capital(size_noun(rows))
    lv = rows.drop_duplicates("level").sort_values("level_value")
    out.append(f"On {ds}, the teacher's test accuracy is " + ", ".join(
        f"{pct(r.teacher_test_accuracy)} at {level_text(axis, r.level, r.is_reference)}"
        for r in lv.itertuples(index=False)) + ".")
    for s in sorted(int(x) for x in rows["student_size"].unique()):
        rs = rows[rows["student_size"] == s].sort_values("level_value")
        parts = [f"{gain_text(r.gain_mean, r.gain_lo, r.gain_hi)} at {level_text(axis, r.level)}"
                 for r in rs.itertuples(index=False)]
        text = f"{noun} {s}: gain over the baseline " + ", ".join(parts) + "."
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


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def share_sentences(ds: str, share: pd.DataFrame, noun: str = "size") -> list[str]:
    """Ensemble: the students from the ensemble and from the single teacher, and the
    student's share of the ensemble's gain (`design_stats.SHARE_FORMULA`) when defined;
    `noun` names the students' size."""
    out = []
    noun = _capital(noun)
    for r in share[share["dataset"] == ds].itertuples(index=False):
        head = (f"{noun} {r.student_size}, M = {r.level}: the best-on-validation student distilled from the ensemble "
                f"(T = {r.ensemble_temperature or 'n/a'}) reaches {pct(r.student_ensemble)} test accuracy, from the "
                f"single teacher (T = {r.single_temperature or 'n/a'}) {pct(r.student_single)}, a paired difference "
                f"of {gain_text(r.student_gain_mean, r.student_gain_lo, r.student_gain_hi)}")
        if r.denominator_ok and not missing(r.share):
            out.append(head + f"; the ensemble beat the single teacher by "
                              f"{signed(r.teacher_gain, 100, 1)} pp ({pct(r.ensemble_test_accuracy)} vs "
                              f"{pct(r.single_test_accuracy)}), so the student's share of the ensemble's gain is "
                              f"{signed(r.student_gain_mean, 100, 1)} / {signed(r.teacher_gain, 100, 1)} = "
                              f"{share_text(r.share, r.share_lo, r.share_hi)}.")
        elif not r.denominator_ok and not missing(r.teacher_gain):
            out.append(head + f" ({pct(r.ensemble_test_accuracy)} ensemble vs {pct(r.single_test_accuracy)} "
                              f"single teacher); {r.note}, so the student's share of it is not computed.")
        else:
            out.append(head + f"; {r.note}.")
    return out


def design_table(axis: str, rows: pd.DataFrame) -> tuple[list[str], list[list[dict]]]:
    """An axis's table for one dataset: column names and rows of {text, cls} cells; the
    transfer-set and control columns only where some level has them."""
    has_ctrl = bool(rows["over_control_mean"].notna().any() or rows["control_gain_mean"].notna().any())
    has_transfer = bool(rows["teacher_transfer_accuracy"].notna().any())
    cols = ["level", size_noun(rows), "teacher test acc."]
    if has_transfer:
        cols += ["teacher acc. on transfer points", "teacher max-prob. on transfer points"]
    cols += ["baseline test acc. (± CI)", "best T (val)", "best distilled test acc.", "gain over baseline (pp) [CI]"]
    if has_ctrl:
        cols += ["gain over control (pp) [CI]", "control − baseline (pp) [CI]"]
    cols += ["seeds"]
    out = []
    for r in rows.itertuples(index=False):
        row = [{"text": level_text(axis, r.level, r.is_reference), "cls": ""},
               {"text": str(int(r.student_size)), "cls": "num"},
               {"text": pct(r.teacher_test_accuracy), "cls": "num"}]
        if has_transfer:
            row += [{"text": pct(r.teacher_transfer_accuracy), "cls": "num"},
                    {"text": num(r.teacher_transfer_mmp, 3), "cls": "num"}]
        row += [{"text": mean_ci_text(r.baseline_mean, r.baseline_lo, r.baseline_hi), "cls": "num"},
                {"text": r.best_temperature or "n/a", "cls": "num"},
                {"text": pct(r.best_test_mean), "cls": "num"},
                {"text": gain_text(r.gain_mean, r.gain_lo, r.gain_hi),
                 "cls": "num " + css_class(r.gain_significant, r.gain_mean)}]
        if has_ctrl:
            row += [{"text": "—" if missing(r.over_control_mean) else
                     gain_text(r.over_control_mean, r.over_control_lo, r.over_control_hi),
                     "cls": "num " + css_class(r.over_control_significant, r.over_control_mean)},
                    {"text": "—" if missing(r.control_gain_mean) else
                     gain_text(r.control_gain_mean, r.control_gain_lo, r.control_gain_hi),
                     "cls": "num " + css_class(r.control_gain_significant, r.control_gain_mean)}]
        row.append({"text": str(int(r.n)), "cls": "num"})
        out.append(row)
    return cols, out


def share_table(ds: str, share: pd.DataFrame, noun: str = "size") -> tuple[list[str], list[list[dict]]]:
    """The ensemble share table for one dataset, cells as in `design_table` (`noun`: the size's)."""
    sub = share[share["dataset"] == ds]
    cols = ["M", noun, "ensemble test accuracy", "single teacher test accuracy",
            "student from ensemble (best T)", "student from single teacher (best T)",
            "student difference (pp) [CI]", "share of the ensemble's gain [CI]"]
    rows = []
    for r in sub.itertuples(index=False):
        rows.append([{"text": r.level, "cls": "num"}, {"text": str(int(r.student_size)), "cls": "num"},
                     {"text": pct(r.ensemble_test_accuracy), "cls": "num"},
                     {"text": pct(r.single_test_accuracy), "cls": "num"},
                     {"text": f"{pct(r.student_ensemble)} (T = {r.ensemble_temperature or 'n/a'})", "cls": "num"},
                     {"text": f"{pct(r.student_single)} (T = {r.single_temperature or 'n/a'})", "cls": "num"},
                     {"text": gain_text(r.student_gain_mean, r.student_gain_lo, r.student_gain_hi),
                      "cls": "num " + css_class(r.student_gain_significant, r.student_gain_mean)},
                     {"text": share_text(r.share, r.share_lo, r.share_hi) if r.denominator_ok else
                      f"not computed: {r.note}", "cls": "num"}])
    return cols, rows


AXIS_WHAT = {
    "transfer": "What the students learn from, at every temperature: the reference early-stopped teacher's targets "
                "on the training points; the in-sample targets of a teacher trained to convergence; cross-fitted "
                "targets; an augmented transfer set (label-preserving copies labelled by the teacher); or "
                "consistent teaching (Beyer et al. 2022): a fresh view of every point each epoch, the teacher run "
                "on that very view, for distill.epochs (consistent) or transfer.patient_factor times as many "
                "(patient). The augmented and consistent sets come with a hard-label control: students trained on "
                "the same copies or views with their source's label and no teacher.",
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


def designs_section(designs: pd.DataFrame | None, params: dict | None, figures_dir: Path,
                    confidence: float) -> dict | None:
    """The "Study designs" section: per axis present and dataset, its sentences, table
    and figure (written under `figures_dir/<slug>/`), and the headlines for the
    summary at the top. None when there are no designs (None or an empty table)."""
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
    if ((params or {}).get("distill") or {}).get("tune"):
        intro += (" Where distill.tune tunes the main grid, the designs' reference level is trained separately with "
                  "the untuned setting (distill.lr, distill.epochs, distill.weight_decay), as every level is: "
                  "tuning would otherwise be a second change beside each axis's own.")
    axes = []
    for axis in design_stats.axes_present(designs):
        key = design_figure_key(axis)
        blocks = []
        for ds in sorted(designs.loc[designs["axis"] == axis, "dataset"].unique()):
            rows = summary[(summary["dataset"] == ds) & (summary["axis"] == axis)]
            if rows.empty:
                continue
            if axis == "transfer":
                sentences = transfer_sentences(ds, rows, conf_pct, params)
            elif axis in ("epochs", "label_fraction"):
                sentences = curve_sentences(ds, axis, rows, conf_pct)
            else:
                sentences = capacity_sentences(ds, axis, rows, conf_pct)
            share_cols, share_rows = [], []
            if axis == "ensemble":
                sentences += share_sentences(ds, share, size_noun(rows))
                share_cols, share_rows = share_table(ds, share, size_noun(rows))
            cols, trows = design_table(axis, rows)
            p = figures_dir / slug(ds) / f"{key}.png"
            if axis == "transfer":
                design_figures.plot_design_transfer(summary, ds, p, confidence=confidence)
            elif axis in ("epochs", "label_fraction"):
                design_figures.plot_design_accuracy(summary, ds, axis, p, confidence=confidence)
            else:
                design_figures.plot_design_capacity(summary, ds, axis, p, confidence=confidence)
            blocks.append({"name": ds, "sentences": sentences, "columns": cols, "rows": trows,
                           "share_columns": share_cols, "share_rows": share_rows,
                           "figures": [figure_entry(key, ds, p, conf_pct)]})
        if blocks:
            axes.append({"axis": axis, "anchor": f"design-{axis}", "title": design_stats.AXIS_TITLES[axis],
                         "what": AXIS_WHAT[axis], "note": "", "blocks": blocks})
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

