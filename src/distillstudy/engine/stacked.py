"""Several teachers of one architecture trained as ONE stacked model, in one process:
any torch.nn.Module made by a factory `f() -> nn.Module`, with early stopping per member.

    members = train_stack(factory, seeds, [(x_0, y_0), (x_1, y_1), ...], (x_val, y_val),
                          max_epochs=200, patience=20, batch_size=128, lr=3e-3,
                          weight_decay=0.0, run_name="fold teachers")

Member m is built by `torch.manual_seed(seed_m); factory()` (the initial weights of
teachers.TeacherFactory.build), its batches are drawn from Generator([seed_m, 1]) as in
train.train_teacher, and it trains on its own (x_m, y_m). The members' parameters are
stacked along a new leading axis and run through
`vmap(functional_call(template, ...))`, or the module's own written-out `forward_stacked`
(the CNN teachers, models.py; stacked_forward); each step minimises

    L = sum_m mean_{i in batch_m} CE(f_m(x_i), y_i),

so member m's gradient is exactly the gradient of its own batch-mean loss, and one
element-wise Adam (train.FusedAdam) over the stacked tensors equals one Adam per member.
Training with M = 1 is "training alone": tests/test_stacked.py proves a member of a
stack equals it (float64, 1e-10) and that reruns are bit-identical.

Dropout: vmap cannot give each member its own random stream, so every nn.Dropout of the
template becomes a MaskedDropout that multiplies by a mask the trainer draws each step
from the member's own torch.Generator, seeded with derive_seed(seed_m, "dropout")
(uniforms u in float32, mask = [u < 1 - p] / (1 - p), one (batch, *features) draw per
dropout site, in the template's module order). Any other random operation in the forward
pass fails (vmap randomness="error"), naming the model. Modules whose buffers change in
training (BatchNorm) are refused: buffers are stacked as constants.

Members can only share a stack when their training sets are the same size (same number
and sizes of batches); train_stack groups them by size and trains each group as a stack.
select="best": each member keeps the weights of its epoch of lowest validation NLL and
stops `patience` epochs after it; a stopped member is sliced out of the stack (its
parameters and Adam moments), so it costs nothing more. select="last": max_epochs epochs,
last kept.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import copy
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from distillstudy.engine.seeds import derive_seed
from distillstudy.engine.train import FusedAdam, fit_record, member_orders
from distillstudy.errors import TrainingDiverged

#: Rows per validation forward (as train.predict batches it).
VAL_BLOCK = 4096


@dataclass
class StackedFit:
    """One member's outcome: its module (best or last weights loaded, eval mode), its fit
    record (train.train_teacher's keys) and its validation NLL after every epoch it ran."""
    model: nn.Module
    fit: dict
    val_nll: list[float]


class MaskedDropout(nn.Module):
    """nn.Dropout(p) whose keep-mask, already scaled by 1 / (1 - p), is the buffer `mask`,
    filled (or passed to functional_call) by the trainer; identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x):
        return x * self.mask if self.training else x


def dropout_generator(seed: int) -> torch.Generator:
    """The member's own dropout stream: independent of its init and batch-order streams."""
    return torch.Generator().manual_seed(derive_seed(int(seed), "dropout"))


def dropout_sites(model: nn.Module, sample: torch.Tensor, name: str) -> dict[str, tuple[float, tuple]]:
    """{module name: (p, feature shape)} of every nn.Dropout with p > 0, found by one forward
    of `sample` with hooks (the mask of a batch of b rows is (b, *feature shape))."""
    shapes: dict[str, list] = {}
    hooks = [module.register_forward_pre_hook(lambda _, args, site=site: shapes.setdefault(site, []).append(
        tuple(args[0].shape))) for site, module in model.named_modules()
        if isinstance(module, nn.Dropout) and module.p > 0]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    sites = {}
    for site, calls in shapes.items():
        if len(calls) != 1 or calls[0][0] != len(sample):
            raise ValueError(f"{name}: dropout {site!r} must run once per forward on a (batch, ...) input to be "
                             f"stacked; it ran on {calls}")
        sites[site] = (float(model.get_submodule(site).p), calls[0][1:])
    return sites


def unstackable(model: nn.Module, sample: torch.Tensor, name: str) -> str | None:
    """Why the stacked engines cannot train `model` (None when they can): they treat
    buffers as constants and draw only nn.Dropout's masks themselves."""
    for sub in model.modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            return f"{type(sub).__name__} updates its buffers while training"
    try:
        dropout_sites(model, sample, name)
    except ValueError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  (the user's forward: check_output reports it)
        return f"its forward fails on a batch shaped {tuple(sample.shape)}: {type(exc).__name__}: {exc}"
    return None


def stacked_template(model: nn.Module, sites: dict, name: str) -> nn.Module:
    """A copy of `model` for functional_call: MaskedDropout at every dropout site, Identity
    for nn.Dropout(0)."""
    for sub in model.modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            raise ValueError(f"{name}: {type(sub).__name__} updates its buffers while training; "
                             "the stacked trainer treats buffers as constants")
    template = copy.deepcopy(model)
    for site, sub in list(template.named_modules()):
        if isinstance(sub, nn.Dropout):
            template.set_submodule(site, MaskedDropout(sub.p) if site in sites else nn.Identity())
    return template


class _Stack:
    """The members still training: stacked parameters (leaves), buffers, Adam moments, their
    data, batch orders and dropout generators; `keep` slices them to fewer members."""

    def __init__(self, members: list[int], params, buffers, adam, xs, ys, orders, generators):
        self.members, self.params, self.buffers, self.adam = members, params, buffers, adam
        self.xs, self.ys, self.orders, self.generators = xs, ys, orders, generators

    def keep(self, rows: list[int], lr: float, weight_decay: float) -> None:
        index = torch.tensor(rows, device=self.xs.device)
        self.params = {k: p.detach()[index].requires_grad_() for k, p in self.params.items()}
        self.buffers = {k: b[index] for k, b in self.buffers.items()}
        adam = FusedAdam([p.detach() for p in self.params.values()], lr=lr, weight_decay=weight_decay)
        old = self.adam
        if old.fallback is None:
            adam.exp_avg = [t[index] for t in old.exp_avg]
            adam.exp_avg_sq = [t[index] for t in old.exp_avg_sq]
            adam.step_count.copy_(old.step_count)
        else:  # torch.optim.Adam's per-parameter state, sliced the same way
            for before, after in zip(old.params, adam.params):
                state = old.fallback.state.get(before, {})
                adam.fallback.state[after] = {k: v[index] if v.dim() else v.clone() for k, v in state.items()}
        self.adam = adam
        self.members = [self.members[r] for r in rows]
        self.xs, self.ys = self.xs[index], self.ys[index]
        self.orders = [self.orders[r] for r in rows]
        self.generators = [self.generators[r] for r in rows]


def stacked_forward(template: nn.Module, name: str, member_inputs: bool):
    """vmap over members of functional_call(template): params and buffers stacked on dim 0,
    inputs per member (training batches) or shared (validation). A module whose own class
    writes out `forward_stacked(params, x[, buffers])` (x (M, batch, ...): the built-in cnn
    family; the CNN teachers, which take the stacked buffers: standardisation, dropout masks)
    runs that instead; a subclass that redefines `forward` without it goes through vmap."""
    if "forward_stacked" in vars(type(template)):
        written_out = template.forward_stacked
        takes_buffers = "buffers" in inspect.signature(written_out).parameters
        def run_written_out(params, buffers, x):
            if not member_inputs:
                x = x.expand(next(iter(params.values())).shape[0], *x.shape)
            return written_out(params, x, buffers) if takes_buffers else written_out(params, x)
        return run_written_out

    def call(params, buffers, x):
        return functional_call(template, (params, buffers), (x,))

    batched = vmap(call, in_dims=(0, 0, 0 if member_inputs else None), randomness="error")

    def run(params, buffers, x):
        try:
            return batched(params, buffers, x)
        except RuntimeError as exc:
            if "randomness" not in str(exc):  # vmap: "called random operation while in randomness error mode"
                raise
            raise ValueError(f"{name}: the model {type(template).__name__} draws random numbers in its forward "
                             "pass outside nn.Dropout; stacked members cannot have their own stream for it "
                             f"(only nn.Dropout is replaced by per-member masks). vmap said: {exc}") from None
    return run


def fill_masks(masks: dict, uniforms: dict, sites: dict, generators: list, rows: int) -> dict:
    """This step's masks {site.mask: (M, rows, *features)}: member by member, site by site."""
    out = {}
    for site, (p, shape) in sites.items():
        u = uniforms[site][:len(generators), :rows]
        for i, generator in enumerate(generators):
            torch.rand((rows, *shape), generator=generator, out=u[i])
        mask = masks[site][:len(generators), :rows]
        mask.copy_(u.lt(1.0 - p))  # on the device, in the model's dtype
        out[f"{site}.mask"] = mask.mul_(1.0 / (1.0 - p))
    return out


def _val_nll(forward, stack: _Stack, x_val: torch.Tensor, y_val: torch.Tensor) -> torch.Tensor:
    """(M,) validation NLL of every member: mean cross-entropy over x_val, eval mode."""
    with torch.no_grad():
        logits = torch.cat([forward(stack.params, stack.buffers, x_val[i:i + VAL_BLOCK])
                            for i in range(0, len(x_val), VAL_BLOCK)], dim=1)  # (M, n_val, C)
        m, n = logits.shape[:2]
        return F.cross_entropy(logits.flatten(0, 1), y_val.repeat(m), reduction="none").view(m, n).mean(1)


def _train_group(factory, seeds, xs, ys, x_val, y_val, *, max_epochs, batch_size, lr, weight_decay,
                 patience, select, run_name) -> list[StackedFit]:
    """One stack: members whose training sets have the same size."""
    models = []
    for seed in seeds:
        torch.manual_seed(int(seed))  # member m's init = the teacher built alone from seed_m
        models.append(factory())
    names = [dict(m.named_parameters()) for m in models]
    shapes = [{k: tuple(p.shape) for k, p in n.items()} for n in names]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{run_name}: the factory built members of different architectures; they cannot be stacked")
    sites = dropout_sites(models[0], xs[0][:2], run_name)
    template = stacked_template(models[0], sites, run_name)
    params = {k: torch.stack([n[k].detach() for n in names]).requires_grad_() for k in names[0]}
    buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in models]) for k, _ in models[0].named_buffers()}
    stack = _Stack(list(range(len(seeds))), params, buffers,
                   FusedAdam([p.detach() for p in params.values()], lr=lr, weight_decay=weight_decay),
                   torch.stack(xs), torch.stack(ys), member_orders(seeds), [dropout_generator(s) for s in seeds])
    train_forward = stacked_forward(template, run_name, member_inputs=True)
    val_forward = stacked_forward(template, run_name, member_inputs=False)
    m, n, dtype, device = len(seeds), len(ys[0]), params[next(iter(params))].dtype, xs[0].device
    rows_per_batch = min(batch_size, n)
    # Dropout draws in float32 whatever the model's dtype, so float32 and float64 runs share masks.
    uniforms = {s: torch.empty((m, rows_per_batch, *shape)) for s, (_, shape) in sites.items()}
    masks = {s: torch.empty((m, rows_per_batch, *shape), dtype=dtype, device=device) for s, (_, shape) in sites.items()}
    history: list[list[float]] = [[] for _ in seeds]
    # select="best" starts from the initial weights, as train_teacher (epoch 0 if none is better).
    best = [{"val_nll": float("inf"), "epoch": 0,
             "state": {k: p[i].detach().clone() for k, p in params.items()} if select == "best" else None}
            for i in range(m)]
    final: dict[int, dict] = {}
    for epoch in range(1, max_epochs + 1):
        template.train()
        perms = torch.from_numpy(np.stack([rng.permutation(n) for rng in stack.orders])).to(device)
        each = torch.arange(len(perms), device=device).unsqueeze(1)
        x_epoch, y_epoch = stack.xs[each, perms], stack.ys[each, perms]  # (M, n, ...) in each one's order
        for start in range(0, n, batch_size):
            xb, yb = x_epoch[:, start:start + batch_size], y_epoch[:, start:start + batch_size]
            rows = yb.shape[1]
            step_buffers = {**stack.buffers, **fill_masks(masks, uniforms, sites, stack.generators, rows)}
            logits = train_forward(stack.params, step_buffers, xb)  # (M, rows, C)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(-1, rows).mean(1)
            if not bool(torch.isfinite(losses).all()):
                bad = [seeds[stack.members[i]] for i in torch.nonzero(~torch.isfinite(losses)).flatten().tolist()]
                raise TrainingDiverged(f"{run_name}: teacher loss is not finite at epoch {epoch} for seed(s) {bad}; "
                                       "lower teacher.lr")
            grads = torch.autograd.grad(losses.sum(), list(stack.params.values()))
            stack.adam.step(list(grads))
        template.eval()
        nll = _val_nll(val_forward, stack, x_val, y_val).tolist()
        stopped = []
        for row, member in enumerate(stack.members):
            history[member].append(nll[row])
            if select == "last":
                continue
            if nll[row] < best[member]["val_nll"]:
                best[member] = {"val_nll": nll[row], "epoch": epoch,
                                "state": {k: p[row].detach().clone() for k, p in stack.params.items()}}
            elif epoch - best[member]["epoch"] >= patience:
                stopped.append(row)
        if select == "best":
            if len(stopped) == len(stack.members):
                break
            if stopped:
                stack.keep([r for r in range(len(stack.members)) if r not in stopped], lr, weight_decay)
    for row, member in enumerate(stack.members):  # still in the stack at the end: the last epoch
        final[member] = {k: p[row].detach().clone() for k, p in stack.params.items()}
    out = []
    for i, model in enumerate(models):
        state = best[i]["state"] if select == "best" else final[i]
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(state[k])
        model.eval()
        out.append(StackedFit(model, fit_record(select, max_epochs, best[i], history[i]), history[i]))
    return out


def train_stack(factory: Callable[[], nn.Module], seeds: list[int],
                train_sets: list[tuple[torch.Tensor, torch.Tensor]], val: tuple[torch.Tensor, torch.Tensor], *,
                max_epochs: int, batch_size: int, lr: float, weight_decay: float, run_name: str,
                patience: int | None = None, select: str = "best") -> list[StackedFit]:
    """Train member m = (seeds[m], train_sets[m]) of `factory`'s architecture, validated on
    `val`, all in stacks of equal training-set size (module docstring); results in input order."""
    if select not in ("best", "last"):
        raise ValueError(f"{run_name}: select must be 'best' or 'last', got {select!r}")
    if select == "best" and patience is None:
        raise ValueError(f"{run_name}: early stopping (select='best') needs a patience")
    if len(seeds) != len(train_sets) or not seeds:
        raise ValueError(f"{run_name}: one training set per seed, got {len(seeds)} seeds, {len(train_sets)} sets")
    groups: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(train_sets):
        groups.setdefault(len(y), []).append(i)
    results: list[StackedFit | None] = [None] * len(seeds)
    for members in groups.values():
        fits = _train_group(factory, [seeds[i] for i in members], [train_sets[i][0] for i in members],
                            [train_sets[i][1] for i in members], *val, max_epochs=max_epochs,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                            select=select, run_name=run_name)
        for i, fit in zip(members, fits):
            fit.fit["stack_size"] = len(members)
            results[i] = fit
    return results
