"""Training loops: a teacher (early stopping on validation NLL, or the last of a fixed
number of epochs) and a stacked grid cell of students (all seeds at once, fixed budget,
last epoch reported).

Batches are index slices of tensors already in memory (no DataLoader): each
member draws its own permutation per epoch from its own seed.

The student engine (`train_stacked`) is written for speed and proven equal to
plain autograd training of each member alone (tests/test_train.py): batched
matmuls over the members, the backward pass written out (three matmuls each
way, no autograd graph), the loss gradient in closed form, fused Adam, and no
allocation or host-device synchronisation inside an epoch. Measurements behind
each choice: benchmarks/README.md.
"""

from __future__ import annotations

import copy
from typing import Callable

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.cell_loss import Objective, epoch_loss_terms, loss_grad
from distillstudy.errors import TrainingDiverged


def member_orders(seeds: list[int]) -> list[np.random.Generator]:
    # Offset from the init seed so data order and initial weights are independent streams.
    return [np.random.default_rng([int(s), 1]) for s in seeds]


def make_optimizer(params, lr: float, weight_decay: float, device: str) -> torch.optim.Optimizer:
    """The teacher's optimiser: plain torch.optim.Adam (one per dataset, so its import cost is paid once)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=device == "cuda")


class FusedAdam:
    """torch.optim.Adam's update (L2 weight decay, bias-corrected moments) through its
    fused kernel: one call per step for all tensors, gradients passed explicitly.

    Calls `torch._fused_adam_` directly because constructing any torch.optim
    optimiser imports torch._dynamo: measured 1.2 s per process, more than a small
    cell's whole training. Falls back to torch.optim.Adam(fused=True) if a torch
    lacks the kernel. tests/test_train.py checks it equals torch.optim.Adam bit for bit.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.hyper = {"lr": lr, "beta1": betas[0], "beta2": betas[1], "weight_decay": weight_decay, "eps": eps}
        self.fallback = None
        if not hasattr(torch, "_fused_adam_"):
            self.fallback = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                             fused=True)
            return
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # torch.optim.Adam(fused=True) keeps the step count as a float32 tensor on the device,
        # one per parameter, all equal. The kernel only reads them, so one tensor serves all:
        # one add_ per step instead of a foreach add (measured 20 us of a 245 us H = 32 step).
        self.step_count = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.steps = [self.step_count] * len(params)

    def step(self, grads: list[torch.Tensor]) -> None:
        if self.fallback is not None:
            for p, g in zip(self.params, grads):
                p.grad = g
            self.fallback.step()
            return
        # The kernel walks a gradient's memory in its parameter's (contiguous) order: a
        # strided gradient (autograd through vmap returns transposed views) would be read
        # scrambled. The engine's own gradient buffers are contiguous: no copy there.
        grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
        self.step_count.add_(1)
        torch._fused_adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.steps,
                           amsgrad=False, maximize=False, grad_scale=None, found_inf=None, **self.hyper)


#: `epoch_data(epoch)` -> (x_e, teacher_logits_e): an epoch's inputs and the teacher's logits on them.
EpochData = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def target_table(objective: Objective, teacher_logits: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype) -> tuple[torch.Tensor, list[str], float]:
    """Objective.targets as one (n, k*C) table (its k per-example tensors side by side),
    their names in column order, and the loss's constant sum over the n examples."""
    per_example, const = objective.targets(teacher_logits.to(dtype), y)
    names = list(per_example)
    return torch.cat([per_example[k] for k in names], dim=1), names, const


def epoch_inputs(epoch_data: EpochData, epoch: int, x: torch.Tensor,
                 teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """epoch_data(epoch), checked against the shapes of the training run's own x and logits."""
    x_e, t_e = epoch_data(epoch)
    if x_e.shape != x.shape or t_e.shape != teacher_logits.shape:
        raise ValueError(f"epoch_data({epoch}) gave inputs {tuple(x_e.shape)} and logits {tuple(t_e.shape)}; "
                         f"expected {tuple(x.shape)} and {tuple(teacher_logits.shape)}")
    return x_e.to(x.device), t_e.to(x.device)


def train_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                  objective: Objective, *, epochs: int, batch_size: int, lr: float,
                  weight_decay: float, run_name: str, on_epoch=None,
                  epoch_data: EpochData | None = None) -> list[float]:
    """Train every member of a StackedMLP; return the mean training loss per epoch.
    `on_epoch(epoch)`, when given, is called after each epoch (checkpoints of one run).
    `epoch_data(epoch)`, when given, is called at the start of each epoch (1-based) and
    returns that epoch's RAW inputs x_e (shaped as x) and the teacher's logits on them
    (consistent teaching, engine/consistent.py): the epoch trains on x_e with the targets
    Objective.targets(t_e, y); the labels y stay. Without it every epoch uses (x, teacher_logits).

    The step minimises the SUM of the members' batch-mean losses, so each member
    receives exactly the gradient it would get if trained alone (one fused Adam
    over the stacked parameters equals one Adam per member: it is element-wise).

    Layout: hidden activations and their gradients are batch-major, (M, batch,
    features), so every hidden-layer matmul is a plain row-major GEMM of the stored
    (M, in, out) weights (the feature-major forward, W^T x, ran 9-12% slower at
    H = 512) and bias gradients sum over a leading axis; the logits alone are
    feature-major, (M, classes, batch), so the softmax runs over a short strided
    axis (20x faster than over a last axis of 10 on CPU).
    Each epoch gathers the members' inputs and per-example targets in their own
    order once, into memory reused every epoch; every step then reads views of it.
    Nothing is allocated per step except small (M, C, batch) tensors, and nothing
    waits for the device inside an epoch.
    """
    device, dtype = x.device, model.weights[0].dtype
    orders = member_orders(model.seeds)
    n, m, n_classes = x.shape[0], model.n_members, teacher_logits.shape[1]
    # Plain aliases of the parameters (same storage): no autograd bookkeeping at all.
    layers = [(w.detach(), b.detach()) for w, b in zip(model.weights, model.biases)]
    grads = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
    optimizer = FusedAdam([t for pair in layers for t in pair], lr=lr, weight_decay=weight_decay)
    flat_grads = [t for pair in grads for t in pair]
    with torch.inference_mode():
        x_std = model.standardize(x).to(dtype)  # element-wise: the same bits as per batch
        table, names, const = target_table(objective, teacher_logits, y, dtype)  # (n, k*C)
        # This epoch's inputs (M, n, in) and targets (M, k*C, n), in each member's order.
        xs_rows = x_std.new_empty(m * n, x_std.shape[1])
        ts_rows = table.new_empty(m * n, table.shape[1])
        ts = table.new_empty(m, table.shape[1], n)
        xs = xs_rows.view(m, n, -1)
        shared: dict[int, dict] = {}  # activation buffers, one set per batch size (stays in cache)
        batches = [_Batch(layers, grads, xs[:, i:i + batch_size],
                          dict(zip(names, ts[:, :, i:i + batch_size].split(n_classes, dim=1))), shared)
                   for i in range(0, n, batch_size)]
        history = []
        for epoch in range(1, epochs + 1):
            if epoch_data is not None:
                # New sources, once per epoch: the gathers below copy them into the reused
                # (M, n, ...) buffers that every step's views read, so no step allocates.
                x_e, t_e = epoch_inputs(epoch_data, epoch, x, teacher_logits)
                x_std = model.standardize(x_e).to(dtype)
                table, _, const = target_table(objective, t_e, y, dtype)
            perm = torch.from_numpy(np.stack([rng.permutation(n) for rng in orders]).reshape(-1)).to(device)
            torch.index_select(x_std, 0, perm, out=xs_rows)
            torch.index_select(table, 0, perm, out=ts_rows)
            ts.copy_(ts_rows.view(m, n, -1).transpose(1, 2))
            sums: dict[int, dict] = {}  # per batch size: element-wise loss terms, summed over the epoch
            for batch in batches:
                batch.step(objective, sums.setdefault(batch.size, {}))
                optimizer.step(flat_grads)
            total = sum(epoch_loss_terms(acc, objective) for acc in sums.values())
            epoch_loss = (total + const) / n
            bad = torch.nonzero(~torch.isfinite(epoch_loss)).flatten().tolist()  # one sync per epoch
            if bad:
                seeds = [model.seeds[i] for i in bad]
                raise TrainingDiverged(f"{run_name}: loss is not finite at epoch {epoch} for seed(s) {seeds}; "
                                       "lower distill.lr or check the data")
            history.append(float(epoch_loss.mean()))
            if on_epoch is not None:
                on_epoch(epoch)
    return history


class _Batch:
    """One batch position of an epoch: views of its inputs and targets, and buffers
    for its activations and back-propagated gradients, allocated once.

    Fresh large tensors each step cost page faults on CPU (at H = 512 they made
    the element-wise ops 5x slower); buffers are therefore reused, and shared by
    all batches of one size so that they stay in cache (per-batch buffers made
    an H = 128 step 35% slower).
    """

    def __init__(self, layers, grads, xb: torch.Tensor, tb: dict, shared: dict):
        self.xb, self.tb, self.size = xb, tb, xb.shape[1]  # xb: (M, b, in)
        m = xb.shape[0]
        # Views made once: parameters are updated in place, so they stay valid.
        self.hidden = [(w, w.transpose(1, 2), b, gw, gb) for (w, b), (gw, gb) in zip(layers[:-1], grads[:-1])]
        (w, b), (gw, gb) = layers[-1], grads[-1]
        self.out = (w, w.transpose(1, 2), b.transpose(1, 2), gw, gb.view(m, -1, 1))
        if self.size not in shared:
            widths = [w.shape[2] for w, _ in layers[:-1]]
            shared[self.size] = {
                "h": [w.new_empty(m, self.size, k) for k in widths],  # hidden activations (M, b, H)
                "back": [w.new_empty(m, self.size, k) for k in widths],  # their gradients
                "logits": w.new_empty(m, w.shape[2], self.size),  # (M, C, b)
                # dL/dW of the output layer, computed (M, C, H) and copied into (M, H, C): the
                # GEMM writing (M, H, C) directly ran 2x slower.
                "out_grad": w.new_empty(m, w.shape[2], w.shape[1])}
        buffers = shared[self.size]
        self.h, self.back, self.logits, self.out_grad = (buffers[k] for k in ("h", "back", "logits", "out_grad"))

    def step(self, objective: Objective, acc: dict) -> None:
        """Forward, loss, backward; writes the gradients and adds the loss terms to `acc`."""
        acts = [self.xb]  # (M, b, features)
        for (w, _, b, _, _), h in zip(self.hidden, self.h):
            acts.append(torch.baddbmm(b, acts[-1], w, out=h).clamp_min_(0))
        _, w_t, b_t, w_grad, b_grad = self.out
        s = torch.baddbmm(b_t, w_t, acts[-1].transpose(1, 2), out=self.logits)  # (M, C, b)
        g = loss_grad(s, self.tb, objective, acc)  # (M, C, b)
        a = acts.pop()
        torch.bmm(g, a, out=self.out_grad)
        w_grad.copy_(self.out_grad.transpose(1, 2))
        torch.sum(g, dim=2, keepdim=True, out=b_grad)
        if not self.hidden:
            return
        g = torch.bmm(g.transpose(1, 2), w_t, out=self.back[-1])  # (M, b, H)
        for i in range(len(self.hidden) - 1, -1, -1):
            torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=g)  # ReLU': a > 0
            w, w_t, _, w_grad, b_grad = self.hidden[i]
            a = acts.pop()
            torch.bmm(a.transpose(1, 2), g, out=w_grad)
            torch.sum(g, dim=1, keepdim=True, out=b_grad)
            if i > 0:
                g = torch.bmm(g, w_t, out=self.back[i - 1])


@torch.no_grad()
def stacked_logits(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """(M, n, classes) logits of every member on the same inputs: StackedMLP.forward,
    with the inputs standardised once for all members and the activations of each
    block of `batch` rows kept in buffers reused from block to block (at H = 512,
    169 -> 125-133 ms for the 6,000 rows of MNIST-1D's three splits; blocks of 4096 rows
    made (M, 4096, H) temporaries that left cache)."""
    x_std = model.standardize(x)  # element-wise: the same bits as per member
    m, n = model.n_members, x.shape[0]
    layers = list(zip(model.weights, model.biases))
    out = x_std.new_empty(m, n, layers[-1][0].shape[2])
    hidden = [x_std.new_empty(m, min(batch, n), w.shape[2]) for w, _ in layers[:-1]]
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        h = x_std[start:start + rows].unsqueeze(0).expand(m, -1, -1)
        for (w, b), buffer in zip(layers[:-1], hidden):
            h = torch.baddbmm(b, h, w, out=buffer[:, :rows]).clamp_min_(0)
        w, b = layers[-1]
        out[:, start:start + rows] = torch.baddbmm(b, h, w)
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def fit_convex(model: nn.Module, data: dict[str, torch.Tensor], run_name: str) -> dict:
    """Full-batch L-BFGS to convergence, for teachers whose NLL is convex (SinLogistic).

    A convex model with two parameters cannot overfit in a way early stopping
    would fix; this matches the walkthrough's scikit-learn LogisticRegression.
    """
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data["x_train"]), data["y_train"])
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{run_name}: teacher loss is not finite")
    model.eval()
    val_nll = float(F.cross_entropy(predict(model, data["x_val"]), data["y_val"]))
    return {"best_epoch": 0, "best_val_nll": val_nll, "epochs_run": 0,
            "selection": "convex fit to convergence (L-BFGS)"}


def train_teacher(model: nn.Module, data: dict[str, torch.Tensor], *, seed: int, max_epochs: int,
                  batch_size: int, lr: float, weight_decay: float, run_name: str,
                  patience: int | None = None, select: str = "best") -> dict:
    """Adam on hard labels, batches in the order of Generator([seed, 1]); validation NLL every epoch.

    select="best": keep the weights of the epoch with the lowest validation NLL, stopping
    `patience` epochs after it. select="last": train exactly `max_epochs` epochs and keep the
    last (the in-sample teacher); validation NLL then only goes into the record. Both share
    one loop, so the last-epoch teacher of the reference's seed follows the reference's
    trajectory bit for bit up to the reference's best epoch.
    """
    if select not in ("best", "last"):
        raise ValueError(f"{run_name}: select must be 'best' or 'last', got {select!r}")
    if select == "best" and patience is None:
        raise ValueError(f"{run_name}: early stopping (select='best') needs a patience")
    device = data["x_train"].device
    rng = np.random.default_rng([int(seed), 1])
    optimizer = make_optimizer(model.parameters(), lr, weight_decay, device.type)
    n = data["x_train"].shape[0]
    history = []
    best = {"val_nll": float("inf"), "epoch": 0,
            "state": copy.deepcopy(model.state_dict()) if select == "best" else None}
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.from_numpy(rng.permutation(n)).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model(data["x_train"][idx]), data["y_train"][idx])
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{run_name}: teacher loss is not finite at epoch {epoch}; "
                                       "lower teacher.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        history.append(float(F.cross_entropy(predict(model, data["x_val"]), data["y_val"])))
        if select == "last":
            continue
        if history[-1] < best["val_nll"]:
            best = {"val_nll": history[-1], "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= patience:
            break
    model.eval()
    if select == "best":
        model.load_state_dict(best["state"])
    return fit_record(select, max_epochs, best, history)


def fit_record(select: str, max_epochs: int, best: dict, history: list[float]) -> dict:
    """A teacher's training record: the best epoch and its validation NLL (select="best"),
    or the last epoch with the lowest validation NLL seen (select="last")."""
    if select == "last":
        lowest = int(np.argmin(history)) + 1 if history else 0
        return {"best_epoch": max_epochs, "epochs_run": max_epochs,
                "selection": "last epoch of max_epochs (no early stopping)",
                "final_val_nll": history[-1] if history else None,
                "lowest_val_nll": history[lowest - 1] if history else None, "lowest_val_nll_epoch": lowest}
    return {"best_epoch": best["epoch"], "best_val_nll": best["val_nll"], "epochs_run": len(history),
            "selection": "early stopping on validation NLL"}
