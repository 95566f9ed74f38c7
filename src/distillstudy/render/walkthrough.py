"""The report's walkthrough section: the sine experiment's figures, its test log loss per
n and model with the verdict and the oracle's share, and the bias² + variance table
(reports/walkthrough_variance.csv) with one sentence that claims no more than its CIs.

Each function returns plain dicts and strings for the Jinja template (escaping is the
template's job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from distillstudy.render.captions import data_uri
from distillstudy.render.text import missing, num, ratio_num, ratio_text, ratio_verdict

#: The variance table's columns the section reads (the walkthrough stage writes them).
VARIANCE_NEEDS = {"n_train", "model", "bias2", "variance", "variance_ratio", "ratio_low", "ratio_high"}


def walkthrough_section(walkthrough: pd.DataFrame | None, walkthrough_pngs: Iterable,
                        variance: pd.DataFrame | None = None) -> dict | None:
    """The walkthrough's figures, its test log loss per n and model, whether the
    distilled student beat the hard-label one at every n, and the bias² + variance
    table with its sentence. `walkthrough` is the walkthrough stage's table (None: the
    section is built from the PNGs alone, or omitted when there are none); `variance`
    its walkthrough_variance.csv (None: no variance table)."""
    pngs = [Path(p) for p in (walkthrough_pngs or [])]
    if walkthrough is None and not pngs and variance is None:
        return None
    figs = []
    for p in pngs:
        split = "test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else ""
        title = f"Walkthrough: mean {split} log loss against n" if split else f"Walkthrough figure {p.name}"
        caption = ("Mean log loss over the trials against the number of training points n, for the hard-label "
                   "student, the distilled (logit-matching) student, the same student distilled from the oracle "
                   "teacher (the true logits), the teacher, and the truth (the true probability: the floor). ")
        caption += {"test": "On test data, look for the distilled line below the student's at every n, and the "
                            "teacher lowest.",
                    "train": "On training data, compare with the test figure: a model with a lower training loss "
                             "but a higher test loss is overfitting its few points.",
                    "": ""}[split]
        figs.append({"uri": data_uri(p), "title": title, "alt": title, "caption": caption})

    rows, models, verdict = [], [], "No walkthrough table was provided."
    if walkthrough is not None:
        absent = {"n_train", "model", "split", "log_loss"} - set(walkthrough.columns)
        if absent:
            raise ValueError(f"walkthrough table lacks columns {sorted(absent)}")
        wt = walkthrough.assign(log_loss=pd.to_numeric(walkthrough["log_loss"]))
        test = wt[wt["split"] == "test"].groupby(["n_train", "model"])["log_loss"].mean().unstack("model")
        models = [m for m in ("student", "distilled", "teacher") if m in test.columns]
        models += sorted(m for m in test.columns if m not in models)
        for n, r in test.iterrows():
            rows.append({"n": n, "cells": [num(r[m], 4) for m in models]})
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
        if {"student", "distilled", "oracle_distilled"} <= set(test.columns) and len(test):
            verdict += " " + oracle_sentence(test)
    variance_rows, variance_text = variance_section(variance)
    return {"figures": figs, "rows": rows, "models": models, "verdict": verdict,
            "variance_rows": variance_rows, "variance_sentence": variance_text}


def oracle_sentence(test: pd.DataFrame) -> str:
    """The walkthrough's oracle: the share of the oracle teacher's log-loss gain that the
    trained teacher delivers, (student - distilled) / (student - oracle_distilled), per n
    (mean test log loss over the trials; a ratio of means, no interval)."""
    gain_oracle = test["student"] - test["oracle_distilled"]
    share = (test["student"] - test["distilled"]) / gain_oracle.where(gain_oracle > 0)
    listed = ", ".join(f"n = {n}: {v:.0%}" if pd.notna(v) else f"n = {n}: n/a (no oracle gain)"
                       for n, v in share.items())
    return (f"Distilled from the oracle teacher (the true logits), the same polynomial student's test log loss is "
            f"{num(test['oracle_distilled'].iloc[0], 3)} at n = {test.index[0]} and "
            f"{num(test['oracle_distilled'].iloc[-1], 3)} at n = {test.index[-1]}; the trained teacher delivers this "
            f"share of the oracle's gain over the hard-label student: {listed} (ratios of mean log losses).")


def sig(x) -> str:
    """A bias² or variance: three significant digits ('0.0801', '0.00215')."""
    return "n/a" if missing(x) else f"{x:.3g}"


def _span(values: pd.Series, fmt) -> str:
    """'min–max' of a column's point estimates, or the one value when they agree."""
    lo, hi = fmt(values.min()), fmt(values.max())
    return lo if lo == hi else f"{lo}–{hi}"


def variance_sentence(variance: pd.DataFrame) -> str:
    """One sentence on the distilled student's variance ratio (÷ the hard-label student's)
    per n: "lowered" only where the 95% CI lies below 1, "raised" only where it lies above
    1, "no detectable difference" where it holds 1; the point estimates' range over n, the
    oracle-distilled range beside it, and bias² as point estimates (it has no interval)."""
    by = {m: g.set_index("n_train") for m, g in variance.groupby("model", sort=False)}
    if not {"student", "distilled"} <= set(by):
        return "The variance table lacks the student or distilled model, so they cannot be compared."
    dist = by["distilled"]
    total = len(dist)
    verdicts = pd.Series([ratio_verdict(lo, hi) for lo, hi in zip(dist["ratio_low"], dist["ratio_high"])],
                         index=dist.index)
    clauses = []
    for key, verb, ci in (("lower", "lowered", "95% CI of the variance ratio below 1"),
                          ("none", "made no detectable difference to", "95% CI of the ratio includes 1"),
                          ("higher", "raised", "95% CI of the ratio above 1")):
        ns = list(verdicts.index[verdicts == key])
        if not ns:
            continue
        where = (f"every n ({total} of {total} values of n; {ci})" if len(ns) == total else
                 f"{len(ns)} of {total} values of n (n = {', '.join(map(str, ns))}; {ci})")
        target = "it" if clauses else "the polynomial student's variance across training sets"
        clauses.append(f"{verb} {target} at {where}")
    ratios = _span(dist["variance_ratio"], ratio_num)
    if clauses:
        head = ", ".join(clauses[:-1]) + (" and " if len(clauses) > 1 else "") + clauses[-1]
        text = f"Distilling from the teacher {head}; the ratio ranged {ratios} over n"
    else:
        text = (f"Distilling from the teacher multiplied the polynomial student's variance across training sets by "
                f"{ratios} over n")
    undefined = list(verdicts.index[verdicts == "undefined"])
    if undefined:
        text += f" (no interval at n = {', '.join(map(str, undefined))}: too few trials to resample)"
    if "oracle_distilled" in by:
        text += (f" ({_span(by['oracle_distilled']['variance_ratio'], ratio_num)} distilling from the "
                 f"oracle teacher, the true logits)")
    return (text + f", and the distilled student's bias² was {_span(dist['bias2'], sig)} against the hard-label "
                   f"student's {_span(by['student']['bias2'], sig)} (point estimates, no interval).")


def variance_section(variance: pd.DataFrame | None) -> tuple[list, str]:
    """The variance table's rows (n, model, bias², variance, ratio [CI]) and its sentence;
    ([], "") without a table (an older run, or the walkthrough run without it)."""
    if variance is None:
        return [], ""
    absent = VARIANCE_NEEDS - set(variance.columns)
    if absent:
        raise ValueError(f"walkthrough variance table lacks columns {sorted(absent)}")
    rows = [{"n": r.n_train, "model": r.model, "bias2": sig(r.bias2), "variance": sig(r.variance),
             "ratio": "reference" if r.model == "student" else ratio_text(r.variance_ratio, r.ratio_low, r.ratio_high)}
            for r in variance.itertuples(index=False)]
    return rows, variance_sentence(variance)
