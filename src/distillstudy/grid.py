"""Study designs: the axes of params.yaml's `designs` section, as named variants.

The temperature x size grid runs at the REFERENCE: students learn from the teacher
early-stopped on validation, on every training label, for `distill.epochs` epochs.
Each axis of `designs` changes ONE of those factors, one level at a time, and re-trains
the students of `designs.sizes` on `designs.datasets` at every temperature:

    axis            reference       variant name        what changes
    transfer        early_stopped   transfer-augmented  the transfer set / teacher targets
    epochs          distill.epochs  epochs-100          the students' training budget
    teacher_width   1               width-0.25          the teacher's width multiplier
    ensemble        1               ensemble-5          M seeded teachers, probabilities averaged
    label_fraction  1               labels-0.1          the share of training points (and labels),
                                                        trained for epochs / fraction (same steps)

A variant's files live under models/students/{dataset}/{variant}/...; the reference's
directly under models/students/{dataset}/ (its name here is "reference").
Every cell of every variant of a (dataset, size) uses the same replicate seeds as the
reference grid, so gains are paired across variants too.
"""

from __future__ import annotations

#: The prepared splits, in this order everywhere (files, tables, reports).
SPLITS = ("train", "val", "test")
REFERENCE = "reference"
PROTOCOLS = ("early_stopped", "in_sample", "cross_fitted", "augmented")
#: axis -> (prefix of its variant names, the reference level)
AXES = {
    "transfer": ("transfer", "early_stopped"),
    "epochs": ("epochs", None),  # the reference level is distill.epochs
    "teacher_width": ("width", 1.0),
    "ensemble": ("ensemble", 1),
    "label_fraction": ("labels", 1.0),
}
PREFIX_AXIS = {prefix: axis for axis, (prefix, _) in AXES.items()}
#: Axes whose variants need a transfer set of their own (the `transfer` stage).
NEEDS_TRANSFER_SET = ("transfer", "teacher_width", "ensemble", "label_fraction")
#: Axes whose hard-label baseline differs from the reference's (it is trained per level).
OWN_BASELINE = ("epochs", "label_fraction")
#: Dataset kinds whose teacher has no width and no seed dependence (a convex fit).
FIXED_TEACHER_KINDS = ("sine",)


def format_temperature(value: float | int | str) -> str:
    """The one spelling of a temperature in file names and tables: 1 and 1.0 -> "1"."""
    return format(float(value), ".12g")


def cell_name(temperature: float | int | str) -> str:
    return "T" + format_temperature(temperature)


def format_level(value) -> str:
    """The one spelling of a level in names and tables: 0.50 -> "0.5", 100.0 -> "100"."""
    if isinstance(value, str):
        return value
    return format(float(value), ".12g")


def variant_name(axis: str, level) -> str:
    return f"{AXES[axis][0]}-{format_level(level)}"


def parse_variant(name: str) -> dict:
    """'labels-0.1' -> {'axis': 'label_fraction', 'level': '0.1', 'value': 0.1}."""
    if name == REFERENCE:
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
    elif axis in ("epochs", "ensemble"):
        value = int(level)
    else:
        value = float(level)
    return {"axis": axis, "level": level, "value": value}


def reference_level(axis: str, params: dict) -> str:
    if axis == "epochs":
        return format_level(params["distill"]["epochs"])
    return format_level(AXES[axis][1])


def axis_levels(axis: str, params: dict) -> list[str]:
    """Every level of an axis, the reference first, in params order, without repeats."""
    levels = [reference_level(axis, params)]
    for value in params.get("designs", {}).get(axis, []):
        level = format_level(value)
        if level not in levels:
            levels.append(level)
    return levels


def applies(axis: str, kind: str) -> bool:
    """Teacher width and ensembles mean nothing for a convex, seed-free teacher."""
    return not (axis in ("teacher_width", "ensemble") and kind in FIXED_TEACHER_KINDS)


def dataset_variants(params: dict, dataset: dict) -> list[str]:
    """The non-reference variants trained for one dataset entry of prepare.datasets."""
    designs = params.get("designs", {})
    if dataset["name"] not in designs.get("datasets", []):
        return []
    names = []
    for axis in AXES:
        if not applies(axis, dataset["kind"]):
            continue
        names += [variant_name(axis, level) for level in axis_levels(axis, params)[1:]]
    return names


def variant_cells(variant: str, temperature_cells: list[str]) -> list[str]:
    """Cells trained under a non-reference variant (the reference's are the main grid's)."""
    axis = parse_variant(variant)["axis"]
    cells = list(temperature_cells)
    if axis in OWN_BASELINE:
        cells = ["baseline", *cells]
    if variant == variant_name("transfer", "augmented"):
        cells = ["control", *cells]  # the augmented copies with their source's hard label
    return cells


def variant_epochs(variant: str, reference_epochs: int) -> int:
    """A variant's student budget in epochs. A label-fraction level trains for
    reference_epochs / fraction epochs, so that its students take about as many
    optimisation steps as the reference's: with a fixed number of epochs a 3% subset
    would get 3% of the steps, and the curve would measure under-training, not how
    soft targets fare with few labels."""
    parsed = parse_variant(variant)
    if parsed["axis"] == "epochs":
        return parsed["value"]
    if parsed["axis"] == "label_fraction":
        return max(1, round(reference_epochs / parsed["value"]))
    return reference_epochs


def variant_dir(variant: str) -> str:
    """The path segment of a variant: '' for the reference, 'labels-0.1/' otherwise."""
    return "" if variant == REFERENCE else f"{variant}/"


#: Figure key -> human title, the one place both live: the report's figure headings
#: and PNG titles, and the labels of `snakemake --report`. A figure is written to
#: <figures dir>/<dataset slug>/<key>.png; a study-design axis's key is "design_<axis>".
FIGURE_TITLES = {
    "gain_heatmap": "test-accuracy gain heatmap",
    "accuracy_vs_t": "test accuracy vs temperature",
    "nll_vs_t": "test NLL vs temperature",
    "best_t": "best temperature vs student size",
    "fidelity": "fidelity vs generalisation",
    "reliability": "reliability diagrams",
    "design_transfer": "study design: transfer protocols",
    "design_epochs": "study design: training length",
    "design_teacher_width": "study design: teacher width",
    "design_ensemble": "study design: ensemble teacher",
    "design_label_fraction": "study design: labelled fraction",
}
