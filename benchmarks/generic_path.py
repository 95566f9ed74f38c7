"""The generic student path (engine/generic.py) against the closed-form MLP engine
(train.train_stacked) on the bench grid, and CNN students stacked against one seed at a
time, in one process, one thread, the same data.

    generic_vs_closed_form   generic path's time / closed-form path's time, the bench grid's
                             cells (H in {32, 128, 512}, baseline + KD at T in {1, 2, 4, 8},
                             3 seeds stacked per cell), `epochs` epochs each (goal <= 1.5)
    cnn_stacking_speedup     CNN students (size 8, MNIST-1D as sequences, KD T = 4): the 3
                             seeds of a cell stacked (the generic path, which runs the cnn
                             family's written-out stack) vs each seed trained alone the plain
                             way: its nn.Module, autograd on the cell's loss, torch.optim.Adam,
                             the same batches and cached teacher logits (goal >= 3)
    cnn_stacked_vs_alone_same_path   the same stack vs each seed alone through the generic
                             path (M = 1): what stacking itself adds

    python benchmarks/generic_path.py DATA.npz TEACHER_LOGITS.npz [EPOCHS]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from distillstudy.engine import runtime
import numpy as np
import torch

from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.families import cnn, mlp
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, student_layer_sizes
from distillstudy.engine.train import member_orders, train_stacked

SIZES = [32, 128, 512]
TEMPERATURES = [1, 2, 4, 8]
SEEDS = [101, 102, 103]
CNN_ROUNDS = 3


def _cells():
    return [objective_fn("", 0.0)] + [objective_fn("kd", 0.9, {"temperature": t}) for t in TEMPERATURES]


def plain_autograd(factory, seeds, x, y, t, loss, *, epochs, batch_size, lr, weight_decay) -> None:
    """Each seed alone, as one would write it without the pipeline: the factory's module,
    torch.optim.Adam, autograd through the cell's loss (Objective.__call__), the generic
    path's batch order (Generator([seed, 1]))."""
    for seed, order in zip(seeds, member_orders(seeds)):
        torch.manual_seed(seed)
        model = factory()
        adam = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            perm = torch.from_numpy(order.permutation(len(y)))
            for start in range(0, len(y), batch_size):
                idx = perm[start:start + batch_size]
                adam.zero_grad(set_to_none=True)
                loss(model(x[idx]), t[idx], y[idx]).backward()
                adam.step()


def measure(data: Path, logits: Path, epochs: int = 3) -> dict:
    runtime.configure(1)
    arrays, teacher = np.load(data), np.load(logits)
    x = torch.from_numpy(arrays["x_train"])
    y = torch.from_numpy(arrays["y_train"])
    t = torch.from_numpy(teacher["logits_train"])
    mean, std = torch.from_numpy(arrays["mean"]), torch.from_numpy(arrays["std"])
    x_std = (x - mean) / std
    kw = dict(epochs=epochs, batch_size=128, lr=1e-3, weight_decay=0.0, run_name="bench")
    # Both paths once before timing: the first vmap of a process imports sympy and torch.fx
    # (~0.2 s, measured), which the warm worker's jobs do not pay either.
    warm = dict(kw, epochs=1)
    train_stacked(StackedMLP(student_layer_sizes(x.shape[1], 8, t.shape[1]), SEEDS, mean, std), x, y, t,
                  _cells()[1], **warm)
    train_generic(GenericStack(lambda: mlp((x.shape[1],), t.shape[1], 8), SEEDS, x_std, "bench"), x_std, y, t,
                  _cells()[1], **warm)
    closed_s = generic_s = 0.0
    by_size = {}
    for size in SIZES:
        sizes = student_layer_sizes(x.shape[1], size, t.shape[1])
        c = g = 0.0
        for loss in _cells():
            model = StackedMLP(sizes, SEEDS, mean, std)
            started = time.perf_counter()
            train_stacked(model, x, y, t, loss, **kw)
            c += time.perf_counter() - started
            stack = GenericStack(lambda: mlp((x.shape[1],), t.shape[1], size), SEEDS, x_std, "bench")
            started = time.perf_counter()
            train_generic(stack, x_std, y, t, loss, **kw)
            g += time.perf_counter() - started
        by_size[str(size)] = {"closed_form_s": c, "generic_s": g, "ratio": g / c}
        closed_s, generic_s = closed_s + c, generic_s + g
    loss = objective_fn("kd", 0.9, {"temperature": 4})
    factory = lambda: cnn((x.shape[1],), t.shape[1], 8)  # noqa: E731
    plain = dict(epochs=epochs, batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"])
    plain_autograd(factory, SEEDS[:1], x_std, y, t, loss, **dict(plain, epochs=1))  # imports torch.optim's extras
    ways = {"stacked": lambda: train_generic(GenericStack(factory, SEEDS, x_std, "bench cnn"), x_std, y, t, loss, **kw),
            "same_path_alone": lambda: [train_generic(GenericStack(factory, [seed], x_std, "bench cnn"), x_std, y, t,
                                                      loss, **kw) for seed in SEEDS],
            "plain_alone": lambda: plain_autograd(factory, SEEDS, x_std, y, t, loss, **plain)}
    rounds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(CNN_ROUNDS):  # alternated; each way's fastest round counts (short runs, a shared machine)
        for name, run in ways.items():
            started = time.perf_counter()
            run()
            rounds[name].append(time.perf_counter() - started)
    stacked_s, same_path_alone_s, alone_s = (min(rounds[k]) for k in ("stacked", "same_path_alone", "plain_alone"))
    return {"generic_vs_closed_form": generic_s / closed_s, "closed_form_s": closed_s, "generic_s": generic_s,
            "by_size": by_size, "epochs": epochs, "cells_per_size": len(_cells()), "seeds": len(SEEDS),
            "cnn_stacking_speedup": alone_s / stacked_s, "cnn_stacked_s": stacked_s, "cnn_one_at_a_time_s": alone_s,
            "cnn_stacked_vs_alone_same_path": same_path_alone_s / stacked_s,
            "cnn_one_at_a_time_same_path_s": same_path_alone_s, "cnn_rounds_s": rounds,
            "cnn": "cnn family, size 8, MNIST-1D as (40,) sequences, KD T = 4, 3 seeds"}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4])), indent=2))
