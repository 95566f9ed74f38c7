"""The generic student path (engine/generic.py) against the closed-form MLP engine
(train.train_stacked) on the bench grid, and CNN students stacked against one seed at a
time, in one process, one thread, the same data.

    generic_vs_closed_form   generic path's time / closed-form path's time, the bench grid's
                             cells (H in {32, 128, 512}, baseline + KD at T in {1, 2, 4, 8},
                             3 seeds stacked per cell), `epochs` epochs each (goal <= 1.5)
    cnn_stacking_speedup     CNN students (size 8, MNIST-1D as sequences), the 3 seeds of a
                             cell stacked vs each trained alone by the same path (goal >= 3)

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
from distillstudy.engine.train import train_stacked

SIZES = [32, 128, 512]
TEMPERATURES = [1, 2, 4, 8]
SEEDS = [101, 102, 103]


def _cells():
    return [objective_fn("", 0.0)] + [objective_fn("kd", 0.9, {"temperature": t}) for t in TEMPERATURES]


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
    started = time.perf_counter()
    train_generic(GenericStack(factory, SEEDS, x_std, "bench cnn"), x_std, y, t, loss, **kw)
    stacked_s = time.perf_counter() - started
    started = time.perf_counter()
    for seed in SEEDS:
        train_generic(GenericStack(factory, [seed], x_std, "bench cnn"), x_std, y, t, loss, **kw)
    alone_s = time.perf_counter() - started
    return {"generic_vs_closed_form": generic_s / closed_s, "closed_form_s": closed_s, "generic_s": generic_s,
            "by_size": by_size, "epochs": epochs, "cells_per_size": len(_cells()), "seeds": len(SEEDS),
            "cnn_stacking_speedup": alone_s / stacked_s, "cnn_stacked_s": stacked_s, "cnn_one_at_a_time_s": alone_s,
            "cnn": "cnn family, size 8, MNIST-1D as (40,) sequences, KD T = 4, 3 seeds"}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4])), indent=2))
