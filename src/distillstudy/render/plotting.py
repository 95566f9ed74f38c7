"""What every report figure shares: its key and title (from `grid.FIGURE_TITLES`), the
headless matplotlib backend, one colour per student size, atomic PNG writes without
metadata (identical inputs give identical bytes), and the placeholder drawn when a
figure has no data."""

from __future__ import annotations

import os

import matplotlib

# Headless: the report runs on machines and cluster nodes without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from distillstudy import grid  # noqa: E402
from distillstudy.students import family_noun, size_order, size_value  # noqa: E402
from distillstudy.artifacts import atomic_path  # noqa: E402


def design_figure_key(axis: str) -> str:
    """The figure key of a study-design axis: 'transfer' -> 'design_transfer'."""
    return f"design_{axis}"


#: The per-dataset study figures (every key that is not a design axis's), in the report's order.
STUDY_FIGURES = tuple(k for k in grid.FIGURE_TITLES if not k.startswith(design_figure_key("")))


def save(fig, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG atomically and close it (also on failure)."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            # No "Software" entry: the bytes must not depend on the matplotlib version.
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def size_colours(sizes) -> dict:
    """Student size (students.size_value: a number or a zoo model's name) -> colour
    (colour-blind palette), in students.size_order, the same order in every figure."""
    sizes = sorted((size_value(s) for s in sizes), key=size_order)
    pal = sns.color_palette("colorblind", max(len(sizes), 1))
    return {s: pal[i % len(pal)] for i, s in enumerate(sizes)}


def short(name: str, n: int = 60) -> str:
    """A dataset name cut to fit a figure title."""
    return name if len(name) <= n else name[: n - 1] + "…"


def size_noun(frame) -> str:
    """What the sizes of the students in `frame` count (family_noun of their one
    family; "size" when there are none). A figure draws one family's students: two
    families' sizes mean different things, and two students of the same size would be
    drawn as one, so a frame with several families is refused (select one first)."""
    students = frame[frame["model"] != "teacher"] if "model" in frame.columns else frame
    families = sorted(set(students["family"]) - {""}) if "family" in students.columns else []
    if len(families) > 1:
        raise ValueError(f"a figure draws one student family; this frame has {families}: select one")
    return family_noun(families[0]) if families else "size"


def named_sizes(frame) -> bool:
    """Whether the students of `frame` are named rather than sized (zoo models such as
    "resnet8x4"): the report's words then say "student" where they would say "size"."""
    students = frame[frame["model"] != "teacher"] if "model" in frame.columns else frame
    return any(isinstance(size_value(s), str) for s in students["student_size"].dropna().unique())


def figure_title(dataset: str, key: str, context: str = "") -> str:
    """A PNG's title: '<dataset>: <grid.FIGURE_TITLES[key]>', then `context` in brackets
    (`dataset` is the report's panel label: the dataset, or "<dataset> · <family> students")."""
    return f"{short(dataset)}: {grid.FIGURE_TITLES[key]}" + (f" ({context})" if context else "")


def empty(path, title: str, message: str) -> None:
    """A small figure with only a title and a message, for a dataset without the data."""
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    save(fig, path)
