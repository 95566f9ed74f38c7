"""Study designs: the axes of params.yaml's `designs` section, as named variants.

The temperature x size grid runs at the REFERENCE: students learn from the teacher
early-stopped on validation, on every training label, for `distill.epochs` epochs.
Each axis of `designs` changes ONE of those factors, one level at a time, and re-trains
the students of `designs.sizes` on `designs.datasets` at every temperature:

    axis            reference       variant name        what changes
    transfer        early_stopped   transfer-augmented  the transfer set / teacher targets (oracle: true
                                                        p(y | x), sine only; consistent, patient:
                                                        fresh views, teacher run on each, docs/designs.md)
    epochs          distill.epochs  epochs-100          the students' training budget
    teacher_width   1               width-0.25          the teacher's width multiplier
    ensemble        1               ensemble-5          M seeded teachers, probabilities averaged
    label_fraction  1               labels-0.1          the share of training points (and labels),
                                                        trained for epochs / fraction (same steps)

and one that is not a one-factor change but R replicates of the whole study:

    resamples       (the split)     resample-3          bootstrap resample r of the training split, its
                                                        teacher refitted on it: the students' variance
                                                        across training sets (analysis/variance.py)
    generations     (the teacher)   generation-2        born-again students of the teacher's own
                                                        architecture; generation k + 1 learns from
                                                        generation k, replicate by replicate

A variant's files live under models/students/{dataset}/{variant}/...; the reference's
directly under models/students/{dataset}/ (its name here is "reference").
Every cell of every variant of a (dataset, size) uses the same replicate seeds as the
reference grid, so gains are paired across variants too.
"""

from __future__ import annotations

import math
import re

from distillstudy.spelling import FIGURE_TITLES, factory_file, format_number, number_value  # noqa: F401  (re-exported)
from distillstudy.students import reference_family

#: The prepared splits, in this order everywhere (files, tables, reports).
#: The stages, in DAG order: each is a module of distillstudy.stages, a CLI subcommand, a
#: Snakemake rule and a DVC stage of the same name.
STAGES = ("prepare", "teacher", "transfer", "distill", "evaluate", "walkthrough", "report")
SPLITS = ("train", "val", "test")
REFERENCE = "reference"
PROTOCOLS = ("early_stopped", "in_sample", "cross_fitted", "augmented", "oracle", "consistent", "patient")
#: Protocols whose students meet a fresh augmented view of every point each epoch, with the
#: reference teacher's logits on exactly that view (engine/consistent.py; Beyer et al. 2022).
CONSISTENT = ("consistent", "patient")
#: Protocols trained with a hard-label control on the same inputs (augmentation without a teacher).
CONTROLLED = ("augmented", *CONSISTENT)
#: Protocols that exist only for some dataset kinds: the oracle teacher knows the true
#: p(y | x), which only a synthetic distribution has (sine: 0.4 sin x + 0.5).
PROTOCOL_KINDS = {"oracle": ("sine",)}
#: axis -> (prefix of its variant names, the reference level)
AXES = {
    "transfer": ("transfer", "early_stopped"),
    "epochs": ("epochs", None),  # the reference level is distill.epochs
    "teacher_width": ("width", 1.0),
    "ensemble": ("ensemble", 1),
    "label_fraction": ("labels", 1.0),
}
#: The variance design's replicates (not an axis: no level is compared with a reference).
RESAMPLES = "resamples"
#: Born-again generations (Furlanello et al. 2018): students of the teacher's own architecture
#: (path name SELF_STUDENT: family "teacher", size 1 = the teacher's width), KD at T = 1.
GENERATIONS, SELF_STUDENT, BORN_AGAIN_T = "generations", "teacher-1", 1.0
PREFIX_AXIS = {**{prefix: axis for axis, (prefix, _) in AXES.items()}, "resample": RESAMPLES,
               "generation": GENERATIONS}
#: Snakemake wildcard pattern of a variant name ("labels-0.1", "transfer-augmented").
#: The designs' own reference level, trained untuned, where distill.tune tunes the main grid
#: of a design dataset: each axis must change one factor, and tuning would be a second.
UNTUNED = "untuned"
VARIANT_PATTERN = rf"(?:{UNTUNED}|(?:{'|'.join(PREFIX_AXIS)})-[A-Za-z0-9_.+-]+)"
#: Axes whose variants need a transfer set of their own (the `transfer` stage).
NEEDS_TRANSFER_SET = ("transfer", "teacher_width", "ensemble", "label_fraction", RESAMPLES, GENERATIONS)
#: Axes whose hard-label baseline differs from the reference's (it is trained per level).
OWN_BASELINE = ("epochs", "label_fraction", RESAMPLES)
#: Dataset kinds whose teacher has no width and no seed dependence (a convex fit).
FIXED_TEACHER_KINDS = ("sine",)


# ---- objectives: the distillation terms a student cell may add (distillstudy.objectives) --

#: Objective names and their hyper-parameters, in the order a setting spells them
#: (distillstudy.objectives implements each; these names are the params keys).
OBJECTIVES = ("kd", "logit_mse", "dkd", "dist", "ls_kd", "nkd")
OBJECTIVE_HYPER = {
    "kd": ("temperature",),
    "logit_mse": (),
    "dkd": ("alpha", "beta", "temperature"),
    "dist": ("beta", "gamma", "temperature"),
    "ls_kd": ("temperature",),
    "nkd": ("gamma", "temperature"),
}
#: How a hyper-parameter is spelled in a setting name ("alpha1_beta8_T4").
HYPER_ABBREV = {"alpha": "alpha", "beta": "beta", "gamma": "gamma", "temperature": "T"}
#: results.csv column of each hyper-parameter (DKD's own alpha is not the mixing weight).
HYPER_COLUMN = {"alpha": "dkd_alpha", "beta": "beta", "gamma": "gamma", "temperature": "temperature"}
#: results.csv `model` of each objective's students ("distilled" is KD, as before objectives).
OBJECTIVE_MODEL = {name: ("distilled" if name == "kd" else name) for name in OBJECTIVES}


def distill_objectives(distill: dict) -> dict:
    """params.yaml's distill.objectives, or the shorthand it replaces:
    `temperatures: [...]` = `kd: {temperature: [...]}`, `logit_mse: true` = `logit_mse: {}`.
    An objective set to null is off: Snakemake merges a --configfile key by key, so null is
    how a study of yours leaves out an objective params.yaml lists."""
    if "objectives" in distill:
        return {name: hyper for name, hyper in distill["objectives"].items() if hyper is not None}
    objectives = {"kd": {"temperature": list(distill.get("temperatures", []))}}
    if distill.get("logit_mse", False):
        objectives["logit_mse"] = {}
    return objectives


def tuned(distill: dict, dataset: str, family: str, variant: str = "reference") -> bool:
    """Whether distill.tune tunes the cells of (dataset, family label): the main grid's
    only (a study design's variant keeps the untuned setting: its axis is the one change).
    Absent lists mean every dataset / family; names the study lacks match nothing (skipped,
    as design_datasets says)."""
    tune = distill.get("tune")
    return bool(tune) and variant == REFERENCE and dataset in (tune.get("datasets") or [dataset]) \
        and family in (tune.get("families") or [family])


def distill_alphas(distill: dict) -> list[float]:
    """distill.alpha as a list (a single number is shorthand for a one-level sweep)."""
    alpha = distill["alpha"]
    return [float(a) for a in (alpha if isinstance(alpha, list) else [alpha])]


def objective_settings(objectives: dict) -> list[tuple[str, dict]]:
    """Every (objective, hyper-parameters) setting: the product of each objective's
    lists, objectives in OBJECTIVES order, values in params order."""
    settings = []
    for name in OBJECTIVES:
        if name not in objectives:
            continue
        keys = OBJECTIVE_HYPER[name]
        combos = [{}]
        for key in keys:
            combos = [{**c, key: float(v)} for c in combos for v in objectives[name][key]]
        settings += [(name, combo) for combo in combos]
    return settings


def setting_name(objective: str, hyper: dict) -> str:
    """'T4' (kd), '' (logit_mse), 'alpha1_beta8_T4' (dkd): the hyper-parameters in
    OBJECTIVE_HYPER order, each abbreviated and spelled by format_number."""
    return "_".join(f"{HYPER_ABBREV[k]}{format_number(hyper[k])}" for k in OBJECTIVE_HYPER[objective])


# ---- cells: one Snakemake job, all seeds of one (dataset, [variant,] size, cell) -------

BASELINE = "baseline"    # hard labels only (alpha = 0), the pairing reference of every cell
CONTROL = "control"      # hard labels on a transfer set's inputs (the augmented variant's control)
#: results.csv `model` of a tuned baseline's untuned twin (distill.lr, epochs, weight_decay).
UNTUNED_BASELINE = "baseline_untuned"
#: The optimiser settings distill.tune spans, in a candidate's order (and results.csv's
#: split-"all" metrics recording a tuned cell's choice).
TUNING_KEYS = ("lr", "weight_decay", "epochs")
#: A distillation cell is "<objective>[_<setting>]_mix<alpha>": kd_T4_mix0.9,
#: logit_mse_mix0.9, dkd_alpha1_beta8_T4_mix0.5 (alpha: the mixing weight).
MIX = "mix"
_NUMBER = r"[0-9][0-9.e+-]*"
_OBJECTIVE = "|".join(sorted(OBJECTIVES, key=len, reverse=True))
_HYPER = "|".join(HYPER_ABBREV.values())
#: Snakemake wildcard pattern of a cell name.
CELL_PATTERN = rf"{BASELINE}|{CONTROL}|(?:{_OBJECTIVE})(?:_(?:{_HYPER}){_NUMBER})*_{MIX}{_NUMBER}"
_CELL_RE = re.compile(rf"(?P<objective>{_OBJECTIVE})(?P<setting>(?:_(?:{_HYPER}){_NUMBER})*)_{MIX}(?P<alpha>{_NUMBER})")
_HYPER_RE = re.compile(rf"_({_HYPER})({_NUMBER})")


def cell_name(objective: str, hyper: dict, alpha) -> str:
    setting = setting_name(objective, hyper)
    return f"{objective}{'_' + setting if setting else ''}_{MIX}{format_number(alpha)}"


def grid_cells(objectives: dict, alphas: list[float]) -> list[str]:
    """Every distillation cell of the grid: each objective setting at each alpha."""
    return [cell_name(name, hyper, alpha) for name, hyper in objective_settings(objectives) for alpha in alphas]


def study_cells(params: dict) -> list[str]:
    """The main grid's cells of every (dataset, size): the baseline, then each objective
    setting at each alpha."""
    distill = params["distill"]
    return [BASELINE, *grid_cells(distill_objectives(distill), distill_alphas(distill))]


def design_temperature_cells(params: dict) -> list[str]:
    """The distillation cells every study-design variant trains: KD at each of its
    temperatures, at each of designs.alpha (default: every distill.alpha). The designs
    vary the teacher and the transfer set, so they hold the objective fixed (KD)."""
    objectives = distill_objectives(params["distill"])
    alphas = params.get("designs", {}).get("alpha") or distill_alphas(params["distill"])
    kd = {"kd": objectives["kd"]} if "kd" in objectives else {}
    return grid_cells(kd, [float(a) for a in alphas])


def hyper_columns(hyper: dict) -> dict:
    """Every hyper-parameter column of results.csv: the setting's values, None elsewhere."""
    return {column: hyper.get(key) for key, column in HYPER_COLUMN.items()}


def parse_cell(cell: str) -> dict:
    """A cell name -> its model label, objective, setting, mixing alpha and hyper-parameters
    (`hyper`; `temperature` also on its own, None where the objective has none)."""
    if cell in (BASELINE, CONTROL):
        return {"model": cell, "objective": "", "setting": "", "alpha": 0.0, "hyper": {}, "temperature": None}
    match = _CELL_RE.fullmatch(cell)
    problem = "" if match else "does not match <objective>[_<setting>]_mix<alpha>"
    if match:
        objective = match["objective"]
        found = _HYPER_RE.findall(match["setting"])
        by_abbrev = {abbrev: key for key, abbrev in HYPER_ABBREV.items()}
        keys = [by_abbrev[a] for a, _ in found]
        hyper = {by_abbrev[a]: number_value(v) for a, v in found}
        alpha = number_value(match["alpha"])
        if keys != list(OBJECTIVE_HYPER[objective]):
            problem = f"{objective} takes {', '.join(OBJECTIVE_HYPER[objective]) or 'no hyper-parameters'}"
        elif any(math.isnan(v) for v in hyper.values()) or not 0 < alpha <= 1:
            problem = "a number is not valid (alpha must be in (0, 1])"
        elif cell != cell_name(objective, hyper, alpha):
            problem = f"numbers are not spelled canonically ({cell_name(objective, hyper, alpha)!r})"
        else:
            return {"model": OBJECTIVE_MODEL[objective], "objective": objective,
                    "setting": setting_name(objective, hyper), "alpha": alpha, "hyper": hyper,
                    "temperature": hyper.get("temperature")}
    raise ValueError(f"cell {cell!r}: {problem} (cells are {BASELINE!r}, {CONTROL!r} or e.g. "
                     f"'kd_T4_mix0.9', 'logit_mse_mix0.9', 'dkd_alpha1_beta8_T4_mix0.5')")


# ---- variants: the study designs' one-factor changes -----------------------------------

def variant_name(axis: str, level) -> str:
    return f"{AXES[axis][0]}-{format_number(level)}"


def parse_variant(name: str) -> dict:
    """'labels-0.1' -> {'axis': 'label_fraction', 'level': '0.1', 'value': 0.1}."""
    if name in (REFERENCE, UNTUNED):
        return {"axis": None, "level": None, "value": None}
    prefix, _, level = name.partition("-")
    if prefix not in PREFIX_AXIS or not level:
        raise ValueError(f"variant {name!r} is not {REFERENCE!r} or one of "
                         f"{', '.join(p + '-<level>' for p in PREFIX_AXIS)}")
    axis = PREFIX_AXIS[prefix]
    if axis == "transfer":
        if level not in PROTOCOLS:
            raise ValueError(f"variant {name!r}: unknown transfer protocol {level!r} (one of {', '.join(PROTOCOLS)})")
        value = level
    elif axis in ("epochs", "ensemble", RESAMPLES, GENERATIONS):
        value = int(level)
    else:
        value = float(level)
    return {"axis": axis, "level": level, "value": value}


#: The reference teacher's architecture: every transfer set rebuilds it (to load its
#: weights, or to train more of its kind).
TEACHER_ARCHITECTURE = ("teacher.cnn_channels", "teacher.mlp_width", "teacher.dropout")
#: How a teacher is trained, for the variants that train teachers of their own.
TEACHER_TRAINING = ("teacher.max_epochs", "teacher.patience", "teacher.batch_size", "teacher.lr",
                    "teacher.weight_decay")
AUGMENTATION = ("transfer.copies", "transfer.noise", "transfer.shift", "transfer.pixel_shift")


def variant_settings(variant: str) -> tuple[str, ...]:
    """The params keys ("section.key") a variant's transfer set is built from, and only
    those: the transfer rule passes exactly these, so changing another setting (say
    transfer.copies for a cross-fitted set) re-runs nothing."""
    parsed = parse_variant(variant)
    if parsed["level"] == "oracle":
        return ()  # the true distribution: no teacher is built
    keys = TEACHER_ARCHITECTURE
    if parsed["axis"] in ("teacher_width", "ensemble", RESAMPLES) or parsed["level"] in ("in_sample", "cross_fitted"):
        keys += TEACHER_TRAINING
    if parsed["level"] == "cross_fitted":
        keys += ("transfer.folds",)
    if parsed["level"] == "augmented":
        keys += AUGMENTATION
    if parsed["level"] in CONSISTENT:  # views drawn in the distill job; copies do not apply
        keys += tuple(k for k in AUGMENTATION if k != "transfer.copies")
    return keys


def reference_level(axis: str, params: dict) -> str:
    if axis == "epochs":
        return format_number(params["distill"]["epochs"])
    return format_number(AXES[axis][1])


def axis_levels(axis: str, params: dict) -> list[str]:
    """Every level of an axis, the reference first, in params order, without repeats."""
    levels = [reference_level(axis, params)]
    for value in params.get("designs", {}).get(axis, []):
        level = format_number(value)
        if level not in levels:
            levels.append(level)
    return levels


def applies(axis: str, kind: str, teacher: dict | None = None) -> bool:
    """Teacher width and ensembles mean nothing for a convex, seed-free teacher, and width
    nothing for your factory teacher (`teacher`: prepare.datasets[*].teacher), which has no
    width knob."""
    if axis == "teacher_width" and teacher and "factory" in teacher:
        return False
    return not (axis in ("teacher_width", "ensemble") and kind in FIXED_TEACHER_KINDS)


def design_datasets(params: dict) -> list[str]:
    """designs.datasets that prepare.datasets has, in order. Lists that pick datasets apply
    where the study has them: a --configfile's own study keeps the default study's lists
    (Snakemake merges key by key), and their names it lacks are skipped
    (params.check_params refuses a name that is no dataset kind: a typo)."""
    names = {d["name"] for d in params["prepare"]["datasets"]}
    return [name for name in params.get("designs", {}).get("datasets", []) if name in names]


def generation_datasets(params: dict) -> list[str]:
    """The design datasets the born-again generations run on: designs.generation_datasets
    (default all of design_datasets) where design_datasets has them."""
    designed = design_datasets(params)
    return [name for name in params.get("designs", {}).get("generation_datasets", designed) if name in designed]


def resample_datasets(params: dict) -> list[str]:
    """The design datasets the variance design (designs.resamples) runs on:
    designs.resample_datasets (default all of design_datasets) where design_datasets has them."""
    designed = design_datasets(params)
    return [name for name in params.get("designs", {}).get("resample_datasets", designed) if name in designed]


def dataset_variants(params: dict, dataset: dict) -> list[str]:
    """The non-reference variants trained for one dataset entry of prepare.datasets."""
    designs = params.get("designs", {})
    if dataset["name"] not in design_datasets(params):
        return []
    names = []
    for axis in AXES:
        if not applies(axis, dataset["kind"], dataset.get("teacher")):
            continue
        names += [variant_name(axis, level) for level in axis_levels(axis, params)[1:]
                  if dataset["kind"] in PROTOCOL_KINDS.get(level, (dataset["kind"],))]
    if dataset["name"] in resample_datasets(params):
        names += [f"resample-{r}" for r in range(1, int(designs.get(RESAMPLES, 0)) + 1)]
    if dataset["name"] in generation_datasets(params):
        names += [f"generation-{k}" for k in range(1, int(designs.get(GENERATIONS, 0)) + 1)]
    if names and tuned(params["distill"], dataset["name"], reference_family(params)["label"]):
        names.insert(0, UNTUNED)  # the designs' reference level, untuned as every variant
    return names



def generation_plan(params: dict) -> tuple[list[str], list[str]]:
    """The students and cells of every born-again generation: the teacher's own architecture,
    KD at T = 1 at alpha = 1 (pure teacher targets, the chain's link) and at designs.alpha."""
    alphas = sorted({1.0, *(float(a) for a in params.get("designs", {}).get("alpha") or distill_alphas(params["distill"]))})
    return [SELF_STUDENT], [cell_name("kd", {"temperature": BORN_AGAIN_T}, a) for a in reversed(alphas)]


def variant_cells(variant: str, temperature_cells: list[str]) -> list[str]:
    """Cells trained under a non-reference variant (the reference's are the main grid's; a
    generation's: generation_plan)."""
    axis = parse_variant(variant)["axis"]
    cells = list(temperature_cells)
    if axis in OWN_BASELINE or variant == UNTUNED:
        cells = [BASELINE, *cells]
    if axis == "transfer" and parse_variant(variant)["level"] in CONTROLLED:
        cells = [CONTROL, *cells]  # the same inputs (copies, or fresh views) with hard labels only
    return cells


def variant_epochs(variant: str, reference_epochs: int, patient_factor: int = 1) -> int:
    """A variant's student budget in epochs. A label-fraction level trains for
    reference_epochs / fraction epochs, so that its students take about as many
    optimisation steps as the reference's: with a fixed number of epochs a 3% subset
    would get 3% of the steps, and the curve would measure under-training, not how
    soft targets fare with few labels. Patient consistent teaching trains
    `patient_factor` (transfer.patient_factor) times as long: the paper's long schedules."""
    parsed = parse_variant(variant)
    if parsed["axis"] == "epochs":
        return parsed["value"]
    if parsed["level"] == "patient":
        return reference_epochs * int(patient_factor)
    if parsed["axis"] == "label_fraction":
        return max(1, round(reference_epochs / parsed["value"]))
    return reference_epochs


def variant_dir(variant: str) -> str:
    """The path segment of a variant: '' for the reference, 'labels-0.1/' otherwise."""
    return "" if variant == REFERENCE else f"{variant}/"
