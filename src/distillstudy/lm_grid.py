"""The language-model grid: params.yaml's token objectives and sequence sources as named cells.

A language-model cell is one way of training a student LM on one dataset; its name is the
path segment of its files and the `cell` column of reports/lm_results.csv:

    baseline                       data prefixes, NLL only (alpha = 0): plain LM training
    fkl_T1_data_mix0.5             data prefixes, (1 - alpha) NLL + alpha token_term   (alpha = 0.5)
    jsd_beta0.5_T1_teacher         prefixes sampled from the teacher, the divergence alone
    rkl_T1_student0.5              on-policy with probability lambda = 0.5 each step (the
                                   student's own samples), else a data batch; the divergence
                                   alone (GKD's lambda, Agarwal et al. 2024)

Hyper-parameters are written in TOKEN_OBJECTIVES' order (jsd: beta, then temperature),
abbreviated by TOKEN_HYPER_ABBREV and spelled by spelling.format_number, the one way to
write a number in a name. Every cell of a (dataset, student) shares replicate seeds with
its baseline: gains are paired by seed.
"""

from __future__ import annotations

import re

from distillstudy.grid import BASELINE, MIX, distill_alphas
from distillstudy.spelling import TOKEN_OBJECTIVES, format_number, number_value

#: Where a cell's training prefixes come from (distill.sequences).
SOURCES = ("data", "teacher", "student")
DATA, TEACHER, STUDENT = SOURCES
#: Abbreviations of the token objectives' hyper-parameters in cell names.
TOKEN_HYPER_ABBREV = {"temperature": "T", "beta": "beta", "lam": "lam"}
_NUMBER = r"[0-9][0-9.e+-]*"
_OBJECTIVE = "|".join(sorted(TOKEN_OBJECTIVES, key=len, reverse=True))
_HYPER = "|".join(TOKEN_HYPER_ABBREV.values())
_SOURCE = rf"_{DATA}_{MIX}(?P<alpha>{_NUMBER})|_{TEACHER}|_{STUDENT}(?P<fraction>{_NUMBER})"
#: Snakemake wildcard pattern of a language-model cell.
LM_CELL_PATTERN = rf"{BASELINE}|(?:{_OBJECTIVE})(?:_(?:{_HYPER}){_NUMBER})*(?:_{DATA}_{MIX}{_NUMBER}|_{TEACHER}|_{STUDENT}{_NUMBER})"
_CELL_RE = re.compile(rf"(?P<objective>{_OBJECTIVE})(?P<setting>(?:_(?:{_HYPER}){_NUMBER})*)(?:{_SOURCE})")
_HYPER_RE = re.compile(rf"_({_HYPER})({_NUMBER})")


def token_objectives(distill: dict) -> dict:
    """distill.token_objectives without the objectives set to null (how a --configfile study
    leaves one out); {} when the study has none."""
    return {name: spec for name, spec in (distill.get("token_objectives") or {}).items() if spec is not None}


def token_settings(name: str, spec: dict) -> list[dict]:
    """Every hyper-parameter setting of one token objective: the product of its lists, in
    TOKEN_OBJECTIVES' key order, values in params order."""
    combos = [{}]
    for key in TOKEN_OBJECTIVES[name]:
        if key in spec:
            combos = [{**c, key: float(v)} for c in combos for v in spec[key]]
    return combos


def token_setting_name(name: str, hyper: dict) -> str:
    """'T1' (fkl), 'beta0.5_T1' (jsd), 'lam0.1' (skl), '' (tvd)."""
    return "_".join(f"{TOKEN_HYPER_ABBREV[k]}{format_number(hyper[k])}" for k in TOKEN_OBJECTIVES[name] if k in hyper)


def lm_cell_name(objective: str, hyper: dict, source: str, *, alpha: float | None = None,
                 fraction: float | None = None) -> str:
    setting = token_setting_name(objective, hyper)
    head = f"{objective}{'_' + setting if setting else ''}"
    if source == DATA:
        return f"{head}_{DATA}_{MIX}{format_number(alpha)}"
    if source == STUDENT:
        return f"{head}_{STUDENT}{format_number(fraction)}"
    return f"{head}_{TEACHER}"


def objective_sources(distill: dict, name: str) -> list[str]:
    """The sources an objective trains on: its own `sequences` list where it has one (how the
    default study runs on-policy for two objectives only), else distill.sequences."""
    spec = token_objectives(distill)[name]
    return list(spec.get("sequences") or distill.get("sequences") or [DATA])


def lm_cells(distill: dict) -> list[str]:
    """The cells of every (language-model dataset, student): the baseline, then per objective
    setting, per source: data at each distill.alpha, the teacher's samples once, on-policy at
    each distill.on_policy_fraction."""
    cells = [BASELINE]
    fractions = [float(f) for f in distill.get("on_policy_fraction") or [1.0]]
    for name, spec in token_objectives(distill).items():
        for hyper in token_settings(name, spec):
            for source in objective_sources(distill, name):
                if source == DATA:
                    cells += [lm_cell_name(name, hyper, DATA, alpha=a) for a in distill_alphas(distill)]
                elif source == STUDENT:
                    cells += [lm_cell_name(name, hyper, STUDENT, fraction=f) for f in fractions]
                else:
                    cells.append(lm_cell_name(name, hyper, TEACHER))
    return cells


def parse_lm_cell(cell: str) -> dict:
    """A cell name -> objective ('baseline' for the baseline), hyper, setting, source, alpha
    (the NLL mixing weight on data; 1 on sampled prefixes: the divergence alone) and
    on_policy_fraction (the student source's lambda; 0 elsewhere)."""
    if cell == BASELINE:
        return {"objective": BASELINE, "hyper": {}, "setting": "", "source": DATA, "alpha": 0.0,
                "on_policy_fraction": 0.0}
    match = _CELL_RE.fullmatch(cell)
    if match:
        by_abbrev = {abbrev: key for key, abbrev in TOKEN_HYPER_ABBREV.items()}
        hyper = {by_abbrev[a]: number_value(v) for a, v in _HYPER_RE.findall(match["setting"])}
        source = DATA if match["alpha"] else STUDENT if match["fraction"] else TEACHER
        alpha = number_value(match["alpha"]) if match["alpha"] else 1.0
        fraction = number_value(match["fraction"]) if match["fraction"] else 0.0
        objective = match["objective"]
        if (set(hyper) <= set(TOKEN_OBJECTIVES[objective]) and 0 < alpha <= 1 and 0 <= fraction <= 1
                and cell == lm_cell_name(objective, hyper, source, alpha=alpha, fraction=fraction)):
            return {"objective": objective, "hyper": hyper, "setting": token_setting_name(objective, hyper),
                    "source": source, "alpha": alpha, "on_policy_fraction": fraction}
    raise ValueError(f"language-model cell {cell!r} is not {BASELINE!r} or <objective>[_<setting>] followed by "
                     f"_data_mix<alpha>, _teacher or _student<lambda> (e.g. 'fkl_T1_data_mix0.5', "
                     f"'rkl_T1_student0.5'), numbers spelled canonically")
