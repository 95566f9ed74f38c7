"""How numbers and factories are spelled in names, paths and tables: the lowest layer of the
vocabulary (grid.py re-exports these; they are defined here alone)."""

from __future__ import annotations

import math
from types import MappingProxyType


def factory_file(spec: str) -> str:
    """The file of a factory "<file>.py:<function>" (relative to the repository root)."""
    return spec.rsplit(":", 1)[0]


def format_number(value) -> str:
    """THE spelling of a number in cell and variant names, paths and tables.

    1, 1.0 and "1.0" -> "1"; 0.50 -> "0.5"; 100.0 -> "100"; 1e-05 -> "1e-05" (12
    significant digits, so float noise never makes two names). None, NaN, pandas' NA and
    "" (an empty table cell) -> ""; text that is not a number (a transfer protocol) is
    kept, stripped.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return text
    try:
        value = float(value)
    except (TypeError, ValueError):  # None, pandas.NA
        return ""
    return "" if math.isnan(value) else format(value, ".12g")


def number_value(text) -> float:
    """The numeric value of a spelled number, for sorting and plotting (NaN if none)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


#: Figure key -> human title, the one place both live: the report's figure headings
#: and PNG titles, and the labels of `snakemake --report`. A figure is written to
#: <figures dir>/<dataset slug>/<key>.png; a study-design axis's key is "design_<axis>".
FIGURE_TITLES = {
    "objectives": "objective comparison: validation-selected test gain",
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
    "design_variance": "study design: variance across training sets",
    "design_generations": "study design: born-again generations",
}


#: Each token objective's hyper-parameters and their defaults (the params keys of
#: distill.token_objectives); read-only.
TOKEN_OBJECTIVES = MappingProxyType({
    "fkl": MappingProxyType({"temperature": 1.0}),
    "rkl": MappingProxyType({"temperature": 1.0}),
    "jsd": MappingProxyType({"beta": 0.5, "temperature": 1.0}),
    "tvd": MappingProxyType({}),
    "skl": MappingProxyType({"lam": 0.1}),
    "srkl": MappingProxyType({"lam": 0.1}),
})
