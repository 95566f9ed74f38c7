"""Consistent teaching: a fresh label-preserving view of every training point each epoch,
and the teacher's logits on exactly that view (Beyer, Zhai, Royer, Markeeva, Anil and
Kolesnikov 2022, "Knowledge distillation: a good teacher is patient and consistent",
CVPR; their "consistent teaching" and "function matching" protocols).

Epoch e (1-based) of a training run sees, for every row i of x_train,

    x_e[i] = augment(kind, x_train[i]; Generator(derive_seed(seed, "consistent", e)))
    t_e[i] = teacher(x_e[i])                          (eval mode, no dropout)

and trains on L = (1 - alpha) CE(y_i, s(x_e[i])) + alpha term(s(x_e[i]), t_e[i], y_i): the
hard label y_i stays (the views are label-preserving), the soft target follows the view.
`consistent_views` returns the callable that train.train_stacked and
generic.train_generic take as `epoch_data`:

    views = consistent_views("mnist1d", x_train, teacher, seed=s, noise=0.1, shift=5)
    train_stacked(model, x, y, t, objective, ..., epoch_data=views)

ONE view per point per epoch, shared by all stacked members: each member still meets
every point through a fresh view each epoch, in its own batch order; sharing makes the
teacher's cost one forward of n rows per epoch instead of M n, and keeps the seeds of a
cell paired (replicate r of every cell meets the same views; only its init and batch order
differ from replicate r').

The teacher's outputs are deliberately NOT cached: the protocol's point is that the
soft target is the teacher's answer on the view the student sees, and every epoch's views
are new (caching clean-input logits is the `augmented`/fixed-teacher protocol, the one the
paper finds inferior). Keeping all epochs' views instead would cost epochs x n x (d + C)
floats; recomputing is deterministic (same seed, same thread count -> same bits), so a
rerun, or a second candidate of a tuning grid, meets exactly the same views and targets.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from distillstudy.engine import augment
from distillstudy.engine.seeds import derive_seed
from distillstudy.engine.teachers import factory_from_spec

PAPER = ("Beyer et al. 2022, Knowledge distillation: a good teacher is patient and consistent "
         "(CVPR), consistent teaching")


def view_seed(seed: int, epoch: int) -> int:
    """The seed of epoch e's views (the same for every member and every cell given `seed`)."""
    return derive_seed(seed, "consistent", int(epoch))


@torch.inference_mode()
def teacher_forward(teacher: nn.Module, x: torch.Tensor, block: int = 512) -> torch.Tensor:
    """float32 logits (n, C) of `teacher` (raw inputs -> logits) in eval mode, `block` rows at a
    time (bounds the activations' memory); the teacher's own train/eval mode is restored."""
    was_training = teacher.training
    teacher.eval()
    try:
        out = torch.cat([teacher(x[i:i + block]) for i in range(0, x.shape[0], block)])
    finally:
        teacher.train(was_training)
    return out.float()


class EpochViews:
    """callable(epoch) -> (x_e, t_e): epoch e's views of x_train (float32 (n, d), raw, row i a
    view of row i; mapped by `inputs` when given) and the teacher's logits on them (float32
    (n, C)), on `device`. Counts `epochs_drawn`, `augment_seconds` and `teacher_seconds`."""

    def __init__(self, kind: str, x_train: np.ndarray, teacher: nn.Module, *, seed: int, noise: float,
                 shift: int = 0, pixel_shift: float = 0.0, device: str | torch.device = "cpu", block: int = 512,
                 inputs: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.kind, self.seed, self.noise = kind, int(seed), float(noise)
        self.shift, self.pixel_shift = int(shift), float(pixel_shift)
        self.x_train = np.asarray(x_train, dtype=np.float32)
        self.scale = augment.noise_scale(kind, self.x_train)  # checks the kind, too
        self.teacher, self.device, self.block, self.inputs = teacher, torch.device(device), int(block), inputs
        self.epochs_drawn, self.augment_seconds, self.teacher_seconds = 0, 0.0, 0.0

    def view(self, epoch: int) -> np.ndarray:
        """Epoch e's view of every row of x_train, float32 (n, d) (augment.augment with the
        training split's noise unit and Generator(view_seed(seed, e)))."""
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got {epoch}")
        rng = np.random.default_rng(view_seed(self.seed, epoch))
        return augment.augment(self.kind, self.x_train, rng=rng, noise=self.noise, shift=self.shift,
                               pixel_shift=self.pixel_shift, scale=self.scale)

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        x_e = torch.from_numpy(self.view(epoch)).to(self.device)
        middle = time.perf_counter()
        logits = teacher_forward(self.teacher, x_e, self.block)
        if logits.is_cuda:  # the kernels run asynchronously: wait, or the time means nothing
            torch.cuda.synchronize(logits.device)
        self.augment_seconds += middle - start
        self.teacher_seconds += time.perf_counter() - middle
        self.epochs_drawn += 1
        return (x_e if self.inputs is None else self.inputs(x_e)), logits

    def settings(self) -> dict:
        """The protocol's record: what a view is, its seeds, and what it cost so far."""
        sigma = self.noise * self.scale
        return {"protocol": "consistent", "paper": PAPER, "kind": self.kind,
                "method": describe(self.kind, noise=self.noise, shift=self.shift, pixel_shift=self.pixel_shift),
                "noise": self.noise,
                "noise_sigma": [float(v) for v in np.ravel(sigma)] if self.kind in augment.PER_FEATURE
                else float(sigma),
                "shift": self.shift if self.kind == "mnist1d" else None,
                "pixel_shift": self.pixel_shift if self.kind == "digits" else None,
                "seed_coordinates": "derive_seed(seed, 'consistent', epoch), one view per point per epoch "
                                    "shared by all members",
                "epochs_drawn": self.epochs_drawn, "augment_seconds": self.augment_seconds,
                "teacher_seconds": self.teacher_seconds}


def consistent_views(kind: str, x_train: np.ndarray, teacher: nn.Module, *, seed: int, noise: float,
                     shift: int = 0, pixel_shift: float = 0.0, device: str | torch.device = "cpu",
                     block: int = 512, inputs: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EpochViews:
    """The `epoch_data` of consistent teaching on x_train (raw features, as prepared) with a
    teacher mapping raw inputs to logits (the reference teachers of models.make_teacher
    standardise inside). `inputs` maps a raw view to the student's input space (the
    generic engine's standardise-and-reshape); the teacher always gets the raw view.

    `block`: rows per teacher forward. MNIST-1D's reference CNN (32 channels) on its 3,200
    training rows, one thread: 47 ms per epoch in blocks of 512 or 1024, 103 ms in one
    block of 4096 (its activations leave cache); the view itself costs ~3 ms."""
    return EpochViews(kind, x_train, teacher, seed=seed, noise=noise, shift=shift, pixel_shift=pixel_shift,
                      device=device, block=block, inputs=inputs)


def describe(kind: str, *, noise: float, shift: int = 0, pixel_shift: float = 0.0) -> str:
    """One phrase for records and reports."""
    view = augment.describe(kind, noise=noise, shift=shift, pixel_shift=pixel_shift)
    return f"consistent teaching: a fresh view per point per epoch ({view}), teacher logits on that view"



def reference_teacher(spec: dict, arrays: dict, model_path: str, logits_val: np.ndarray, device, label: str) -> nn.Module:
    """The reference teacher, rebuilt as the transfer stage described it (a consistent set's
    record["consistent"]["teacher"], teachers.factory_from_spec), its weights loaded from
    `model_path` and checked against the cached validation logits."""
    model, _ = factory_from_spec(spec, arrays, device, label).load_reference(model_path, spec["seed"], logits_val)
    return model
