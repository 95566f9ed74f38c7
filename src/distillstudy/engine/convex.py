"""Students of a convex teacher's own class, fitted as the teacher is: each replicate by
full-batch L-BFGS to convergence on its cell's loss (born-again generations on the sine
data, whose teacher is logistic regression on sin x, train.fit_convex).

This is the case the seed's argument covers: for alpha = 1 and T = 1 the loss is the
cross-entropy to the teacher's probabilities, minimised within the class by the teacher
itself, so a globally optimised student of the same class reproduces its teacher and
cannot beat it (the data-processing inequality); with alpha < 1 the optimum mixes the
teacher's targets with the labels the teacher was itself fitted to.
"""

from __future__ import annotations

import math

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch.func import functional_call

from distillstudy.engine.cell_loss import Objective
from distillstudy.engine.generic import GenericStack
from distillstudy.errors import TrainingDiverged


def fit_members(stack: GenericStack, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                objective: Objective, run_name: str) -> list[float]:
    """Fit every member of `stack` in place; `teacher_logits` (n, C) for all or (M, n, C) one
    block per member. Returns each member's final loss."""
    losses = []
    for m in range(stack.n_members):
        params = {k: v[m].detach().clone().requires_grad_() for k, v in stack.params.items()}
        buffers = {k: v[m] for k, v in stack.buffers.items()}
        target = teacher_logits[m] if teacher_logits.dim() == 3 else teacher_logits
        optimizer = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=500, tolerance_grad=1e-9,
                                      tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = objective(functional_call(stack.template, {**params, **buffers}, (x,)), target, y)
            loss.backward()
            return loss

        loss = float(optimizer.step(closure).detach())
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{run_name}: the convex fit of seed {stack.seeds[m]} did not converge")
        with torch.no_grad():
            for k, v in params.items():
                stack.params[k][m] = v
        losses.append(loss)
    stack.template.eval()
    return losses
