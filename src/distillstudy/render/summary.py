"""The report's first screen: per dataset, one sentence that says whether distillation
helped its students, claiming no more than each confidence interval allows.

    >>> print(dataset_sentence("mnist1d", [
    ...     StudentGain("mlp", 16, "kd", "T4", 0.004, -0.006, 0.014, tuned=True),
    ...     StudentGain("mlp", 64, "dkd", "alpha1_beta8_T4", 0.001, -0.009, 0.011, tuned=True),
    ...     StudentGain("mlp", 256, "kd", "T8", 0.023, 0.002, 0.043, tuned=True)]))  # doctest: +NORMALIZE_WHITESPACE
    mnist1d, against the tuned baseline: distillation helps the H = 256 MLP by +2.3 pp [+0.2, +4.3]
    (kd, T = 8); for the H = 16 and 64 MLPs no objective's gain is distinguishable from zero.

The numbers are those of the "Which objective?" tables (render.objectives, from
analysis.objective_stats): per student (dataset, family, size) the objective best on
validation, its setting and mixing weight chosen on validation, and its test-accuracy gain
over the hard-label baseline of the same student (tuned where distill.tune tuned it),
paired by seed, with the Student-t CI over seeds. A student's verdict:

- helps: the CI lies above zero; hurts: below zero (the gain and CI are quoted);
- not distinguishable: the CI holds zero. "No objective's gain is distinguishable from
  zero" is said only when no objective's CI at that size excludes zero; otherwise the
  sentence speaks of the validation-selected objective alone (an objective that would look
  better on test was not chosen, and quoting it would pick on test);
- one seed: no CI, so nothing is claimed.

Intervals are per student and not adjusted for multiple comparisons (the tables below
offer Holm-adjusted ones). Pure functions on plain values: escaping is the template's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from distillstudy import grid
from distillstudy.render.objectives import best_objectives, table_gain
from distillstudy.render.text import missing
from distillstudy.students import FAMILY_TITLES, size_order, size_value

#: How a setting's hyper-parameters read in a sentence (DKD's own α: the mixing weight is not quoted).
HYPER_SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "temperature": "T"}
HELPS, HURTS, UNCLEAR, NO_CI = "helps", "hurts", "unclear", "no_ci"


@dataclass(frozen=True)
class StudentGain:
    """One student's validation-selected objective and its paired test-accuracy gain
    (fractions, not pp). `others_apart`: some other objective's CI at this size excludes
    zero; `tuned`: the baseline (and every cell) chose its optimiser settings on validation."""
    family: str
    size: int | str
    objective: str
    setting: str
    mean: float
    lo: float
    hi: float
    tuned: bool = False
    others_apart: bool = False


def verdict(gain: StudentGain) -> str:
    """HELPS (CI above zero), HURTS (CI below zero), UNCLEAR (CI holds zero) or NO_CI."""
    if missing(gain.lo) or missing(gain.hi):
        return NO_CI
    return HELPS if gain.lo > 0 else HURTS if gain.hi < 0 else UNCLEAR


def setting_text(setting: str) -> str:
    """A setting name as a reader writes it: 'T4' -> 'T = 4', 'alpha1_beta8_T4' ->
    'α = 1, β = 8, T = 4', '' -> ''. A name that is not of that form is kept as it is."""
    by_abbrev = {abbrev: key for key, abbrev in grid.HYPER_ABBREV.items()}
    parts = []
    for token in filter(None, (setting or "").split("_")):
        match = re.fullmatch(rf"({'|'.join(sorted(by_abbrev, key=len, reverse=True))})([0-9][0-9.e+-]*)", token)
        if not match:
            return setting
        parts.append(f"{HYPER_SYMBOLS[by_abbrev[match[1]]]} = {grid.format_number(match[2])}")
    return ", ".join(parts)


def _listing(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def students_phrase(family: str, sizes: list) -> str:
    """'the H = 256 MLP', 'the H = 16 and 64 MLPs (3 hidden layers)', 'the 8- and 32-channel
    CNNs', 'the resnet8x4 student', 'the tiny_cnn students of sizes 2 and 4'."""
    sizes = [str(s) for s in sorted(sizes, key=size_order)]
    many = len(sizes) > 1
    depth = re.fullmatch(r"mlp([0-9]*)", family)
    if depth:
        layers = f" ({depth[1]} hidden layers)" if depth[1] else ""
        return f"the H = {_listing(sizes)} MLP{'s' if many else ''}{layers}"
    if family == "cnn":
        return f"the {_listing([s + '-' for s in sizes[:-1]] + [sizes[-1]])}-channel CNN{'s' if many else ''}"
    if family == "cifar":
        return f"the {_listing(sizes)} student{'s' if many else ''}"
    title = FAMILY_TITLES.get(family, family)
    return f"the {title} student{'s' if many else ''} of size{'s' if many else ''} {_listing(sizes)}"


def _grouped(gains: list[StudentGain]) -> str:
    """The students of `gains` as one phrase, family by family in the order they come."""
    families = list(dict.fromkeys(g.family for g in gains))
    return _listing([students_phrase(f, [g.size for g in gains if g.family == f]) for f in families])


def _quoted(gain: StudentGain) -> str:
    """'the H = 256 MLP by +2.3 pp [+0.2, +4.3] (kd, T = 8)'."""
    setting = setting_text(gain.setting)
    return (f"{students_phrase(gain.family, [gain.size])} by {table_gain(gain.mean, gain.lo, gain.hi)} "
            f"({gain.objective}{', ' + setting if setting else ''})")


def _baseline(gains: list[StudentGain]) -> str:
    tuned = [g for g in gains if g.tuned]
    if len(tuned) == len(gains):
        return "the tuned baseline"
    if not tuned:
        return "the hard-label baseline"
    return f"the hard-label baseline (tuned for {_grouped(tuned)})"


def dataset_sentence(dataset: str, gains: list[StudentGain]) -> str:
    """The first screen's sentence for one dataset (module docstring): its students by
    verdict, helps first, each group in one clause, the students in the order given. It
    always begins with `dataset` (the page sets that part in bold)."""
    if not gains:
        return f"{dataset}: no distilled students with validation results, so nothing can be said yet."
    by = {v: [g for g in gains if verdict(g) == v] for v in (HELPS, HURTS, UNCLEAR, NO_CI)}
    clauses = []
    if by[HELPS]:
        clauses.append("distillation helps " + _listing([_quoted(g) for g in by[HELPS]]))
    if by[HURTS]:
        clauses.append(("it" if clauses else "distillation") + " hurts " + _listing([_quoted(g) for g in by[HURTS]]))
    none_apart = [g for g in by[UNCLEAR] if not g.others_apart]
    if none_apart:
        clauses.append(f"for {_grouped(none_apart)} no objective's gain is distinguishable from zero")
    for g in (g for g in by[UNCLEAR] if g.others_apart):
        setting = setting_text(g.setting)
        clauses.append(f"for {students_phrase(g.family, [g.size])} the gain of the objective chosen on validation "
                       f"({g.objective}{', ' + setting if setting else ''}: {table_gain(g.mean, g.lo, g.hi)}) "
                       f"is not distinguishable from zero")
    if by[NO_CI]:
        clauses.append(f"for {_grouped(by[NO_CI])} one seed gives no confidence interval, so nothing is claimed")
    return f"{dataset}, against {_baseline(gains)}: {'; '.join(clauses)}."


def student_gains(selection: pd.DataFrame, comparisons: pd.DataFrame, chosen: pd.DataFrame | None = None
                  ) -> list[StudentGain]:
    """One panel's StudentGains (one dataset's students of one family), from the frames of
    objective_stats.select_objectives / compare_objectives (the objectives table's rows) and
    tuning_stats.chosen_settings (None or empty: nothing was tuned), sizes in order."""
    best = best_objectives(selection, comparisons)
    tuned = set()
    if chosen is not None and len(chosen):
        base = chosen[chosen["model"] == grid.BASELINE]
        tuned = {(f, grid.format_number(s)) for f, s in zip(base["family"], base["student_size"])}
    out = []
    for size, g in sorted(selection.groupby("student_size"), key=lambda kv: size_order(kv[0])):
        size = size_value(size)
        row = g[g["objective"] == best[size]].iloc[0]
        apart = bool(g.loc[g["objective"] != best[size], "significant"].any())  # the tables' green/red cells
        out.append(StudentGain(family=row["family"], size=size, objective=row["objective"], setting=row["setting"],
                               mean=row["gain_mean"], lo=row["gain_lo"], hi=row["gain_hi"],
                               tuned=(row["family"], grid.format_number(size)) in tuned, others_apart=apart))
    return out


def note(conf_pct: int) -> str:
    """What the first screen's numbers are, said once below its sentences."""
    return (f"Each number is the test-accuracy gain of the objective chosen on validation (its setting and mixing "
            f"weight α chosen there too) over the hard-label baseline of the same student, paired by seed, in "
            f"percentage points, with its {conf_pct}% CI over seeds: the numbers of the 'Which objective?' tables "
            f"below, where every objective is shown. Intervals are per student and not adjusted for multiple "
            f"comparisons.")
