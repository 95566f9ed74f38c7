"""What the report shows with each figure: its heading (the figure's title in
`grid.FIGURE_TITLES`), its caption (how to read it), its alt text, and the PNG itself
embedded as a base64 data URI, so the report is one self-contained file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from distillstudy import grid

#: Study figure key (`plotting.STUDY_FIGURES`) -> caption ({conf}: the CI level in percent).
STUDY_CAPTIONS = {
    "objectives": (
        "The objectives table as a figure: for each objective (x) and student size (colour), the test-accuracy "
        "gain over the hard-label baseline of the setting and α chosen on validation, in percentage points, "
        "with its unadjusted {conf}% CI over seeds (paired by seed). Filled markers: the CI excludes zero; "
        "★: the size's best objective on validation, marked only where its CI lies above zero. Overlapping "
        "intervals of two objectives do not settle whether they differ: their paired difference does (see the "
        "sentences under the table)."),
    "gain_heatmap": (
        "Mean paired difference (distilled minus baseline, same seed) in percentage points of test "
        "accuracy, for every temperature (columns) and student size (rows). Blue cells: distillation "
        "helped; red: it hurt. Bold values with * have a {conf}% CI over seeds that excludes zero. Look "
        "for a band of temperatures that helps every size, and whether the gain shrinks as the student "
        "grows."),
    "accuracy_vs_t": (
        "Mean test accuracy over seeds against temperature (log2 axis), one line per student size with "
        "its {conf}% CI band; dashed lines of the same colour are each size's hard-label baseline, the "
        "black dotted line is the teacher. A line above its dashed baseline means distillation helps at "
        "that temperature; the gap to the dotted line is what the student still lacks. The bands are "
        "unpaired intervals of each mean and include seed-to-seed variation shared with the baseline, so "
        "overlapping bands do not rule out a significant paired gain (see the heatmap and the tables)."),
    "nll_vs_t": (
        "Mean test negative log-likelihood (lower is better) against temperature, same layout as above. "
        "Soft targets often improve calibration and NLL even where accuracy does not move; look for lines "
        "below their dashed baselines."),
    "best_t": (
        "For each student size (columns) the temperature with the highest mean validation accuracy is "
        "circled and the circles are joined; the label above each circle is that choice's paired "
        "test-accuracy gain over the baseline (*, filled circle: its {conf}% CI excludes zero). The cells "
        "show how far every other temperature is below the best of its size on validation, in percentage "
        "points (darker = closer to the best; the colour scale stops at −3). Hinton et al. (2015) found "
        "that small students prefer moderate temperatures (T ≈ 2.5–4) while large ones are flat for T ≥ "
        "8: look whether the line climbs with the size, and whether the large sizes' columns stay dark "
        "across the high temperatures. Differences of a few tenths of a point are within seed-to-seed "
        "noise."),
    "fidelity": (
        "Each point is one cell mean: top-1 agreement with the teacher (x) against test accuracy (y), "
        "coloured by student size; circles are distilled students (labelled with T), crosses hard-label "
        "baselines, squares logit matching. Points up and to the right of their baseline cross mimic the "
        "teacher more closely and generalise better; higher agreement without higher accuracy means the "
        "student copies the teacher's mistakes."),
    "reliability": (
        "Calibration on the test split, pooled over seeds, for the teacher, the hard-label baseline of "
        "the best configuration's size and the best distilled configuration (chosen on validation). Top: "
        "blue bars are the accuracy of the predictions in each confidence bin, the dashed diagonal is "
        "perfect calibration, red hatched bars are the gap to the bin's mean confidence (red above a blue "
        "bar: over-confident; a red part inside the bar: under-confident). Bottom: the share of "
        "predictions in each bin, on a log scale; bins holding few predictions are noisy. Look whether "
        "the distilled student's bars sit closer to the diagonal (lower ECE) than the baseline's, and "
        "whether its confidence spreads out of the top bin like the teacher's."),
}

#: Study-design figure key (`plotting.design_figure_key`) -> caption, as above.
DESIGN_CAPTIONS = {
    "design_transfer": (
        "One panel per student size. Blue circles: the best-on-validation distilled student's paired "
        "test-accuracy gain over the hard-label baseline for each transfer protocol, with its {conf}% CI "
        "over seeds (filled: the CI excludes zero; the temperature chosen on validation is written beside "
        "it). For the augmented transfer set, orange squares are its gain over the hard-label control "
        "trained on the same augmented copies with their source's label and no teacher (what the teacher "
        "adds), grey diamonds the control's own gain over the baseline (what augmentation alone does). A "
        "blue circle far above zero with its orange square near zero means the gain is augmentation, not "
        "distillation."),
    "design_epochs": (
        "One panel per student size: mean test accuracy of the hard-label baseline (dashed, hollow "
        "crosses) and of the best distilled student (solid; its temperature, chosen on validation, is "
        "written beside it) at each training length, with unpaired {conf}% CIs over seeds; the dotted "
        "line is the teacher. A baseline that falls with more epochs is overfitting its hard labels; look "
        "whether the distilled student holds up there. The paired gains are in the table."),
    "design_teacher_width": (
        "The best-on-validation student's paired test-accuracy gain over the baseline (with its {conf}% "
        "CI; filled: excludes zero), one line per student size, against the teacher's width multiplier "
        "(left, log2 axis) and against that teacher's test accuracy (right). Mirzadeh et al. (2019) "
        "report a non-monotone curve: past some size a more accurate teacher teaches a small student "
        "worse. Look whether the line turns down at the right of either panel."),
    "design_ensemble": (
        "Same layout as the capacity-gap figure, with the number M of seeded teachers whose probabilities "
        "are averaged (M = 1 is the reference teacher) in place of the width: the student's paired gain "
        "over the baseline against M (left) and against the ensemble's own test accuracy (right)."),
    "design_label_fraction": (
        "One panel per student size: mean test accuracy of the hard-label baseline (dashed) and of the "
        "best distilled student (solid, T chosen on validation) against the share of training labels the "
        "students see (log axis), with unpaired {conf}% CIs over seeds; the teacher (dotted) is trained "
        "on all labels. Hinton et al. (2015) found soft targets help most when labels are few: look "
        "whether the gap between the lines widens to the left."),
    "design_variance": (
        "Per student size, the variance across bootstrap resamples of the training set of the predicted "
        "probability of the true class, distilled students (T chosen on validation) divided by hard-label "
        "students, geometric mean over seeds with its {conf}% CI (log axis). Below the dashed line at 1 the "
        "distilled students depend less on their training sample; filled markers: the CI excludes 1."),
    "design_generations": (
        "Mean test accuracy over replicates of the students of the teacher's own architecture against their "
        "generation (0: the original teacher, also the dashed line), one line per α. A point above the previous "
        "one means that generation beat its teacher on average; whether it did with confidence ({conf}% CI over "
        "replicates, paired) is in the table."),
}


def data_uri(path: str | os.PathLike) -> str:
    """A PNG file as a data URI, for an <img> that needs no file beside the report."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_entry(key: str, dataset: str, path: str | os.PathLike, conf_pct: int) -> dict:
    """The template's view of one written figure: uri, title, alt text and caption."""
    title = grid.FIGURE_TITLES[key]
    title = title[:1].upper() + title[1:]  # grid's titles are lower case, for labels and PNG titles
    caption = STUDY_CAPTIONS[key] if key in STUDY_CAPTIONS else DESIGN_CAPTIONS[key]
    return {"uri": data_uri(path), "title": f"{title} ({dataset})", "alt": f"{title}, dataset {dataset}",
            "caption": caption.format(conf=conf_pct)}
