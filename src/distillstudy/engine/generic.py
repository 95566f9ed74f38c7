"""The generic student path: any family's module, all seeds of a cell stacked in one
process, trained on a cell's loss (engine/cell_loss.py), for families without a
closed-form backward (the MLP keeps train.train_stacked).

Member m is `torch.manual_seed(seed_m); factory()`; the members' parameters are stacked
along a new leading axis and run through vmap(functional_call) (engine/stacked.py, which
also gives each member its own dropout stream). Each step takes the loss's gradient with
respect to the logits from cell_loss.loss_grad, exactly as the closed-form engine does
(closed form for kd, logit_mse and the hard-label loss, objectives.value_and_grad for the
others), and back-propagates it through the network with autograd:

    dL/dtheta_m = (ds_m/dtheta_m)^T dL/ds_m,    L = sum_m L_m (each member's batch mean),

then one element-wise fused Adam over the stacked tensors (train.FusedAdam). Batch order:
Generator([seed_m, 1]), as train_stacked. tests/test_generic.py proves this path equal to
the closed-form one on MLPs (float64, same init and order) and bit-identical across reruns.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
from typing import Callable

import numpy as np
import torch
from torch import nn

from distillstudy.engine.cell_loss import Objective, epoch_loss_terms, loss_grad
from distillstudy.engine.stacked import (dropout_generator, dropout_sites, fill_masks, stacked_forward,
                                         stacked_template)
from distillstudy.engine.train import EpochData, FusedAdam, epoch_inputs, member_orders, target_table
from distillstudy.errors import TrainingDiverged


class GenericStack:
    """M members of one family: the template module (for functional_call), the stacked
    parameters (M, ...) and buffers, and each member's dropout generator."""

    def __init__(self, factory: Callable[[], nn.Module], seeds: list[int], sample: torch.Tensor, name: str,
                 dtype: torch.dtype = torch.float32):
        models = []
        for seed in seeds:
            torch.manual_seed(int(seed))  # the replicate's seed, set before the factory runs
            models.append(factory().to(device=sample.device, dtype=dtype))
        self.seeds, self.name = list(seeds), name
        self.sites = dropout_sites(models[0], sample[:2].to(dtype), name)
        self.template = stacked_template(models[0], self.sites, name)
        named = [dict(m.named_parameters()) for m in models]
        self.params = {k: torch.stack([n[k].detach() for n in named]).requires_grad_() for k in named[0]}
        self.buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in models])
                        for k, _ in models[0].named_buffers()}
        self.generators = [dropout_generator(s) for s in seeds]

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """(M, n, classes) logits of every member on the same inputs, eval mode."""
        self.template.eval()
        forward = stacked_forward(self.template, self.name, member_inputs=False)
        return torch.cat([forward(self.params, self.buffers, x[i:i + batch]) for i in range(0, len(x), batch)], dim=1)


def train_generic(stack: GenericStack, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                  objective: Objective, *, epochs: int, batch_size: int, lr: float, weight_decay: float,
                  run_name: str, on_epoch=None, epoch_data: EpochData | None = None) -> list[float]:
    """Train every member of `stack` on standardised inputs x (n, *input_shape); return the
    mean training loss per epoch (as train_stacked: the members' mean of their epoch losses).
    `epoch_data(epoch)`, as in train_stacked, gives each epoch's inputs (in x's space: the
    caller maps raw views to it) and the teacher's logits on them; the labels y stay.
    `teacher_logits` (M, n, C) gives each member its own teacher (born-again generations:
    member m of generation k + 1 learns from member m of generation k); (n, C) one for all."""
    params = list(stack.params.values())
    dtype, device = params[0].dtype, x.device
    n, m, n_classes = x.shape[0], stack.n_members, teacher_logits.shape[-1]
    per_member = teacher_logits.dim() == 3
    if per_member and (teacher_logits.shape[0] != m or epoch_data is not None):
        raise ValueError(f"{run_name}: per-member teacher logits {tuple(teacher_logits.shape)} need one (n, C) "
                         f"block per member ({m}) and no epoch_data")
    optimizer = FusedAdam([p.detach() for p in params], lr=lr, weight_decay=weight_decay)
    forward = stacked_forward(stack.template, run_name, member_inputs=True)
    orders = member_orders(stack.seeds)
    rows = min(batch_size, n)
    uniforms = {s: torch.empty((m, rows, *shape)) for s, (_, shape) in stack.sites.items()}
    masks = {s: torch.empty((m, rows, *shape), dtype=dtype, device=device) for s, (_, shape) in stack.sites.items()}
    x_in, x = x, x.to(dtype)
    with torch.no_grad():
        if per_member:  # (M, n, k*C) tables, one loss constant per member
            parts = [target_table(objective, t, y, dtype) for t in teacher_logits]
            table, names = torch.stack([p[0] for p in parts]), parts[0][1]
            const = torch.tensor([float(p[2]) for p in parts], dtype=dtype, device=device)
        else:
            table, names, const = target_table(objective, teacher_logits, y, dtype)  # (n, k*C)
    history = []
    stack.template.train()
    for epoch in range(1, epochs + 1):
        if epoch_data is not None:  # consistent teaching: this epoch's views (engine/consistent.py)
            x_e, t_e = epoch_inputs(epoch_data, epoch, x_in, teacher_logits)
            x = x_e.to(dtype)
            with torch.no_grad():
                table, _, const = target_table(objective, t_e, y, dtype)
        perm = torch.from_numpy(np.stack([rng.permutation(n) for rng in orders])).to(device)  # (M, n)
        xs = x[perm]  # (M, n, *input_shape), each member in its own order
        rows_of = table[torch.arange(m, device=device)[:, None], perm] if per_member else table[perm]
        ts = rows_of.transpose(1, 2)  # (M, k*C, n), the closed-form engine's layout
        sums: dict[int, dict] = {}
        for start in range(0, n, batch_size):
            xb = xs[:, start:start + batch_size]
            b = xb.shape[1]
            tb = dict(zip(names, ts[:, :, start:start + b].split(n_classes, dim=1)))
            step_buffers = {**stack.buffers, **fill_masks(masks, uniforms, stack.sites, stack.generators, b)}
            logits = forward(stack.params, step_buffers, xb)  # (M, b, C)
            with torch.no_grad():
                g = loss_grad(logits.detach().transpose(1, 2), tb, objective, sums.setdefault(b, {}))
            grads = torch.autograd.grad(logits, params, grad_outputs=g.transpose(1, 2))
            optimizer.step(list(grads))
        with torch.no_grad():
            total = sum(epoch_loss_terms(acc, objective) for acc in sums.values())
            epoch_loss = (total + const) / n
        bad = torch.nonzero(~torch.isfinite(epoch_loss)).flatten().tolist()
        if bad:
            raise TrainingDiverged(f"{run_name}: loss is not finite at epoch {epoch} for seed(s) "
                                   f"{[stack.seeds[i] for i in bad]}; lower distill.lr or check the data")
        history.append(float(epoch_loss.mean()))
        if on_epoch is not None:  # checkpoints of one run (the tuning's epochs levels)
            on_epoch(epoch)
            stack.template.train()
    stack.template.eval()
    return history
