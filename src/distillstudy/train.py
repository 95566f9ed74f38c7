"""Training loops: the teacher (early stopping on validation NLL) and a stacked
grid cell of students (all seeds at once, fixed budget, last epoch reported).

Batches are index slices of tensors already in memory (no DataLoader): each
member draws its own permutation per epoch from its own seed.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy import losses


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the run and the epoch."""


def member_orders(seeds: list[int]) -> list[np.random.Generator]:
    # Offset from the init seed so data order and initial weights are independent streams.
    return [np.random.default_rng([int(s), 1]) for s in seeds]


def make_optimizer(params, lr: float, weight_decay: float, device: str) -> torch.optim.Optimizer:
    # Adam is element-wise, so one optimiser over stacked parameters equals one per member.
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=device == "cuda")


def objective_fn(objective: str, alpha: float, temperature: float | None) -> Callable:
    if objective == "kd":
        return lambda s, t, y: losses.kd_loss(s, t, y, alpha, temperature)
    if objective == "logit_mse":
        return lambda s, t, y: losses.logit_mse_loss(s, t, y, alpha)
    raise ValueError(f"unknown objective {objective!r} (expected kd or logit_mse)")


def train_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                  loss_fn: Callable, *, epochs: int, batch_size: int, lr: float,
                  weight_decay: float, run_name: str) -> list[float]:
    """Train every member of a StackedMLP; return the mean training loss per epoch.

    The step minimises the SUM of the members' batch-mean losses, so each member
    receives exactly the gradient it would get if trained alone.
    """
    device = x.device
    orders = member_orders(model.seeds)
    optimizer = make_optimizer(model.parameters(), lr, weight_decay, device.type)
    n = x.shape[0]
    history = []
    for epoch in range(1, epochs + 1):
        perm = torch.from_numpy(np.stack([rng.permutation(n) for rng in orders])).to(device)
        epoch_loss = torch.zeros(model.n_members, device=device)
        for start in range(0, n, batch_size):
            idx = perm[:, start:start + batch_size]
            per_member = loss_fn(model(x[idx]), teacher_logits[idx], y[idx])
            optimizer.zero_grad(set_to_none=True)
            per_member.sum().backward()
            optimizer.step()
            epoch_loss += per_member.detach() * idx.shape[1]
        epoch_loss /= n
        bad = torch.nonzero(~torch.isfinite(epoch_loss)).flatten().tolist()
        if bad:
            seeds = [model.seeds[i] for i in bad]
            raise TrainingDiverged(f"{run_name}: loss is not finite at epoch {epoch} for seed(s) {seeds}; "
                                   "lower distill.lr or check the data")
        history.append(float(epoch_loss.mean()))
    return history


@torch.no_grad()
def stacked_logits(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """(M, n, classes) logits of every member on the same inputs."""
    parts = []
    for start in range(0, x.shape[0], batch):
        xb = x[start:start + batch].unsqueeze(0).expand(model.n_members, -1, -1)
        parts.append(model(xb))
    return torch.cat(parts, dim=1)


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
                  patience: int, batch_size: int, lr: float, weight_decay: float,
                  run_name: str) -> dict:
    """Adam on hard labels; keep the weights of the epoch with the lowest validation NLL."""
    device = data["x_train"].device
    rng = np.random.default_rng([int(seed), 1])
    optimizer = make_optimizer(model.parameters(), lr, weight_decay, device.type)
    n = data["x_train"].shape[0]
    best = {"val_nll": float("inf"), "epoch": 0, "state": copy.deepcopy(model.state_dict())}
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
        val_nll = float(F.cross_entropy(predict(model, data["x_val"]), data["y_val"]))
        if val_nll < best["val_nll"]:
            best = {"val_nll": val_nll, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= patience:
            break
    model.load_state_dict(best["state"])
    model.eval()
    return {"best_epoch": best["epoch"], "best_val_nll": best["val_nll"], "epochs_run": epoch,
            "selection": "early stopping on validation NLL"}
