"""Equal-effort tuning on validation (params.yaml's distill.tune): every cell of a tuned
(dataset, family), the hard-label baseline and each distillation setting alike, picks its
optimiser settings from the SAME grid of candidates, so every cell gets the same number
of tries and the same selection optimism; a distilled student's gain is then measured
against a baseline tuned as carefully as it was.

A candidate is (lr, weight_decay, epochs). The epochs levels of one (lr, weight_decay)
are checkpoints of ONE run of max(epochs) epochs (the logits kept at each level), so a
grid of L learning rates, W decays and E levels costs L * W runs, not L * W * E.

Choice (`choose`): the highest mean validation accuracy over the cell's seeds; ties (to
1e-12) the lower mean validation NLL, then the smaller lr, fewer epochs, smaller decay.
Only the validation split is read: the test labels take no part (tests/test_tuning.py
corrupts them and checks that no choice changes). A candidate whose training diverged
is recorded and left out; a cell where every candidate diverged fails.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import log_softmax

from distillstudy.grid import TUNING_KEYS


def runs(lrs, decays) -> list[tuple[float, float]]:
    """The (lr, weight_decay) runs of a grid, in order: lr, then decay, ascending."""
    return list(itertools.product(sorted(float(v) for v in lrs), sorted(float(v) for v in decays)))


def candidate_name(lr: float, weight_decay: float, epochs: int) -> str:
    return f"lr={lr:g}, weight_decay={weight_decay:g}, epochs={int(epochs)}"


def val_scores(val_logits: np.ndarray, y_val: np.ndarray) -> dict:
    """Mean over seeds of the validation accuracy and NLL of (seeds, n, classes) logits."""
    accuracy = (val_logits.argmax(axis=-1) == y_val[None, :]).mean(axis=1)
    log_p = log_softmax(val_logits.astype(np.float64), axis=-1)
    nll = -np.take_along_axis(log_p, y_val[None, :, None], axis=-1)[..., 0].mean(axis=1)
    return {"val_accuracy": float(accuracy.mean()), "val_nll": float(nll.mean())}


def choose(candidates: list[dict]) -> dict:
    """The candidate (dicts with lr, weight_decay, epochs, val_accuracy, val_nll, and
    `diverged`) chosen on validation, by the rule of the module docstring."""
    alive = [c for c in candidates if not c.get("diverged")]
    if not alive:
        raise ValueError("every tuning candidate diverged")
    return min(alive, key=lambda c: (-round(c["val_accuracy"], 12), round(c["val_nll"], 12), c["lr"], c["epochs"],
                                     c["weight_decay"]))
