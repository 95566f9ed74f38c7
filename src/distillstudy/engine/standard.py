"""The standard engine: any nn.Module (BatchNorm, any random op, buffers, its own forward)
trained one replicate at a time with ordinary autograd and torch.optim, on the field's
recipe (engine/recipe.py); the path for real models, on CPU or a CUDA GPU.

    history = fit(model, Inputs(arrays, device), recipe, objective, seed=..., name=...)

It writes what the stacked engines write (logits on every split, a record), so evaluate,
the report and the statistics never ask which engine ran; the distill stage runs one job
per (cell, replicate) and gathers the replicates (stages/distill.py).

Determinism. Everything random in epoch e is drawn from seeds derived from (seed, e): the
batch order (a CPU generator), the augmentation (a generator on the training device) and
the model's own random ops (dropout, stochastic depth: torch's global generator, reseeded
at the start of each epoch). The learning rate is a function of e (recipe.lr_factor). So
the state at the end of epoch e is the model, the optimiser and the loss history, and a
run resumed from a checkpoint of epoch e continues exactly as the uninterrupted run did:
byte-identical files on CPU (tests/test_standard.py, and through Snakemake with kill -9).

Mini-batches are index slices of tensors that stay on the training device (one copy per
process: memory does not grow with the number of seeds; on CUDA the data are resident on
the GPU and augmented there, the airbench way, without a DataLoader in the hot loop).
Images are stored as uint8 (n, C, H, W): a batch is scaled to [0, 1], augmented (random
crop with zero padding, flip), then normalised with the training split's per-channel mean
and std. Feature rows are standardised and reshaped to the dataset's input shape, as the
stacked engines do. When the recipe augments and the cell has a teacher term, the teacher
runs on exactly the student's augmented batch (eval mode, torch.inference_mode, same
device and autocast); otherwise the teacher's cached logits of the batch's rows are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch import nn

from distillstudy.artifacts import write_bytes
from distillstudy.engine.cell_loss import Objective
from distillstudy.engine.recipe import Recipe, augment_images, make_optimizer, set_lr
from distillstudy.engine.seeds import derive_seed
from distillstudy.errors import TrainingDiverged
from distillstudy.grid import SPLITS

#: Rows per forward when computing logits of a whole split (eval mode, no gradient).
EVAL_BATCH = 1000


class Inputs:
    """A prepared dataset's splits as tensors on the training device, and the map from
    stored rows to model inputs (images: scale, augment, normalise; features: standardise,
    reshape to input_shape)."""

    def __init__(self, arrays: dict[str, np.ndarray], device: torch.device | str):
        self.device = torch.device(device)
        self.shape = tuple(int(d) for d in arrays["input_shape"])
        self.images = arrays["x_train"].dtype == np.uint8
        self.x = {s: torch.from_numpy(np.ascontiguousarray(arrays[f"x_{s}"])).to(self.device) for s in SPLITS}
        self.y = {s: torch.from_numpy(arrays[f"y_{s}"]).to(self.device) for s in SPLITS}
        stat = (1, -1, 1, 1) if self.images else (1, -1)
        self.mean = torch.from_numpy(arrays["mean"]).to(self.device).reshape(stat)
        self.std = torch.from_numpy(arrays["std"]).to(self.device).reshape(stat)

    def model_input(self, rows: torch.Tensor, recipe: Recipe | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Stored rows -> the model's input; augmented when a recipe that augments and its
        generator are given (images only: the schema and params checks refuse the rest)."""
        if not self.images:
            return ((rows - self.mean) / self.std).reshape(-1, *self.shape)
        x = rows.to(torch.float32) / 255.0
        if recipe is not None and recipe.augments:
            x = augment_images(x, recipe, generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x


def place(model: nn.Module, inputs: Inputs) -> nn.Module:
    """The model on the training device; channels_last on CUDA for image inputs, the layout
    the engine feeds them in (tensor cores' convolutions want it)."""
    model = model.to(inputs.device)
    if inputs.device.type == "cuda" and len(inputs.shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA (`precision: bf16`); fp32 otherwise."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full(t: torch.Tensor) -> torch.Tensor:
    """Autocast's half-precision logits in float32 for the loss; float32/64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


@torch.no_grad()
def logits(model: nn.Module, inputs: Inputs, split: str, precision: str = "fp32") -> torch.Tensor:
    """(n, classes) logits of a split in eval mode, un-augmented (float32 under bf16 autocast)."""
    was_training = model.training
    model.eval()
    out = []
    with autocast(inputs.device, precision):
        for start in range(0, len(inputs.y[split]), EVAL_BATCH):
            out.append(full(model(inputs.model_input(inputs.x[split][start:start + EVAL_BATCH]))))
    model.train(was_training)
    return torch.cat(out)


@dataclass
class Run:
    """One replicate's training: who it is, how it trains, where its checkpoint lives.
    `fingerprint` names everything the result depends on; a checkpoint with another one is
    stale (params or data changed) and is ignored."""
    name: str
    seed: int
    recipe: Recipe
    objective: Objective
    precision: str = "fp32"
    checkpoint: Path | None = None
    fingerprint: str = ""


def load_checkpoint(run: Run, model: nn.Module, optimizer, log) -> tuple[int, list[dict]]:
    if run.checkpoint is None or not Path(run.checkpoint).is_file():
        return 1, []
    try:
        state = torch.load(run.checkpoint, map_location=next(model.parameters()).device, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a checkpoint we cannot read is only lost time)
        log(f"{run.name}: checkpoint {run.checkpoint} unreadable ({type(exc).__name__}), starting from epoch 1")
        return 1, []
    if state.get("fingerprint") != run.fingerprint:
        log(f"{run.name}: checkpoint {run.checkpoint} is from other params or data, starting from epoch 1")
        return 1, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"{run.name}: resumed from epoch {state['epoch']}")
    return int(state["epoch"]) + 1, list(state["history"])


def save_checkpoint(run: Run, model: nn.Module, optimizer, epoch: int, history: list[dict]) -> None:
    """Atomic: a job killed while writing leaves the previous epoch's checkpoint intact."""
    if run.checkpoint is None:
        return
    buffer = io.BytesIO()
    torch.save({"fingerprint": run.fingerprint, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "history": history}, buffer)
    write_bytes(run.checkpoint, buffer.getvalue())


def eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer, recipe: Recipe, where: str) -> None:
    """One step of the recipe: refuse a non-finite loss (naming `where`), backward, the
    recipe's gradient clipping, the optimiser's step. Every engine that trains one model
    with torch.optim (this one, engine/lm_train.py) steps through here."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{where}; lower the recipe's lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()


def fit(model: nn.Module, inputs: Inputs, run: Run, *, teacher: nn.Module | None = None,
        teacher_logits: torch.Tensor | None = None, log=print) -> list[dict]:
    """Train `model` (already on inputs.device, seeded by the caller) for recipe.epochs and
    return one row per epoch {epoch, lr, train_loss, val_accuracy}. The teacher term uses
    `teacher` on each augmented batch when the recipe augments, else `teacher_logits`
    (the cached (n_train, C) logits of the training split)."""
    recipe, objective, device = run.recipe, run.objective, inputs.device
    needs_teacher = objective.alpha != 0
    online = needs_teacher and recipe.augments
    if needs_teacher and online and teacher is None:
        raise ValueError(f"{run.name}: an augmenting recipe runs the teacher on each batch; give its module")
    if needs_teacher and not online and teacher_logits is None:
        raise ValueError(f"{run.name}: give the teacher's cached logits of the training split")
    if teacher is not None:
        teacher.eval()
    optimizer = make_optimizer(recipe, model)
    first, history = load_checkpoint(run, model, optimizer, log)
    n = len(inputs.y["train"])
    x_train, y_train = inputs.x["train"], inputs.y["train"]
    for epoch in range(first, recipe.epochs + 1):
        started = time.perf_counter()
        lr = set_lr(optimizer, recipe, epoch)
        torch.manual_seed(derive_seed(run.seed, "standard", "model", epoch))  # the model's own random ops
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(run.seed, "standard", "order",
                                                                                      epoch))).to(device)
        views = torch.Generator(device=device).manual_seed(derive_seed(run.seed, "standard", "augment", epoch))
        model.train()
        total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
        for start in range(0, n, recipe.batch_size):
            rows = order[start:start + recipe.batch_size]
            if len(rows) == 1 < recipe.batch_size:  # a last batch of one example: BatchNorm cannot normalise it
                continue
            x, y = inputs.model_input(x_train[rows], recipe, views), y_train[rows]
            with autocast(device, run.precision):
                s = model(x)
                t = None
                if online:
                    with torch.inference_mode():
                        t = teacher(x)
            if online:
                t = full(t).clone()  # a normal tensor: inference tensors cannot be saved for backward
            elif needs_teacher:
                t = teacher_logits[rows]
            loss = objective(full(s), t, y)
            optimizer_step(loss, model, optimizer, recipe, f"{run.name}: loss is not finite at epoch {epoch}")
            total += loss.detach().double() * len(rows)
            seen += len(rows)
        val = logits(model, inputs, "val", run.precision)
        row = {"epoch": epoch, "lr": lr, "train_loss": float(total) / max(seen, 1),
               "val_accuracy": float((val.argmax(1) == inputs.y["val"]).double().mean())}
        history.append(row)
        save_checkpoint(run, model, optimizer, epoch, history)
        seconds = time.perf_counter() - started
        log(f"{run.name}: epoch {epoch}/{recipe.epochs} loss {row['train_loss']:.4f} val acc "
            f"{row['val_accuracy']:.4f} lr {lr:.4g} {seen / seconds:.0f} img/s ETA "
            f"{eta(seconds * (recipe.epochs - epoch))}")
    model.eval()
    return history


def code_sha256() -> str:
    """sha256 of the package's Python files: a checkpoint written by other code is stale
    (Snakemake re-runs a job whose code changed; it must not resume the old code's epochs)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def remove_checkpoint(run: Run) -> None:
    """A finished cell's checkpoint is only clutter (it lives outside the DVC outputs)."""
    if run.checkpoint is not None:
        Path(run.checkpoint).unlink(missing_ok=True)
