"""Training one student language model for one replicate: the standard engine's recipe
(engine/recipe.py: torch.optim, schedules, clipping, per-epoch checkpoints) on token sequences.

    loss on data prefixes      (1 - alpha) NLL(tokens) + alpha token_term(s, t, mask)   alpha = 0: baseline
    on sampled prefixes        token_term(s, t, mask)                                   (GKD's convention)

with token_term = distillstudy.objectives.token_term (fkl, rkl, jsd, tvd, skl, srkl), s and t the
student's and teacher's logits at every position of the same prefixes. The prefixes of a step
come from the cell's source (lm_grid.SOURCES): `data`, a shuffled batch of training sequences;
`teacher`, a batch sampled from the teacher (sequence-level KD, Kim & Rush 2016); `student`, with
probability lambda (on_policy_fraction) a batch sampled from the current student, else a data
batch (on-policy distillation: GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024). Samples are
drawn with a KV cache (engine/gpt.sample) under inference mode, and the teacher scores them in the
same step on the same device; no gradient flows through the sampling (as GKD and MiniLLM's
on-policy term without its policy-gradient part).

Everything random in epoch e (batch order, which steps are on-policy, the samples) is drawn from
generators seeded by (replicate seed, e): a checkpoint holds model, optimiser and history only,
and a resumed run ends with the bits of an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.gpt import sample
from distillstudy.engine.recipe import Recipe, make_optimizer, set_lr
from distillstudy.engine.seeds import derive_seed
from distillstudy.engine.standard import eta, load_checkpoint, optimizer_step, save_checkpoint
from distillstudy.lm_grid import DATA, STUDENT, TEACHER
from distillstudy.token_objectives import token_term


@dataclass
class LMRun:
    """One replicate of one language-model cell (lm_grid.parse_lm_cell gives the cell's part)."""
    name: str
    seed: int
    recipe: Recipe
    objective: str                 # a token objective, or "baseline"
    source: str = DATA
    alpha: float = 0.0
    on_policy_fraction: float = 0.0
    hyper: dict = field(default_factory=dict)
    bos: int = 0
    checkpoint: Path | None = None
    fingerprint: str = ""


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-token negative log-likelihood of targets (batch, length) under logits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def _prefixes(run: LMRun, batch: torch.Tensor, teacher: nn.Module | None, student: nn.Module,
              draws: torch.Generator) -> tuple[torch.Tensor, bool]:
    """The step's sequences (batch, length + 1) and whether they were sampled."""
    length = batch.shape[1] - 1
    if run.source == TEACHER:
        return sample(teacher, len(batch), length, bos=run.bos, generator=draws, device=batch.device), True
    if run.source == STUDENT:
        # One draw per step, always made, so the random stream does not depend on the outcome.
        on_policy = bool(torch.rand((), generator=draws, device=draws.device) < run.on_policy_fraction)
        if on_policy:
            return sample(student, len(batch), length, bos=run.bos, generator=draws, device=batch.device), True
    return batch, False


def step_loss(run: LMRun, student: nn.Module, teacher: nn.Module | None, seqs: torch.Tensor,
              sampled: bool) -> torch.Tensor:
    """The loss of one batch of sequences (see the module docstring)."""
    ids, targets = seqs[:, :-1], seqs[:, 1:]
    s = student(ids)
    if run.objective == "baseline":
        return nll(s, targets)
    # no_grad, not inference_mode: an inference tensor could not be saved for backward, and its
    # copy (the logits, batch x length x vocab) cost ~0.6% of a step (benchmarks/lm_step.py).
    with torch.no_grad():
        t = teacher(ids)
    mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    term = token_term(run.objective, s.float(), t.float(), mask, **run.hyper)
    if sampled or run.source != DATA:
        return term
    return (1 - run.alpha) * nll(s, targets) + run.alpha * term


@torch.inference_mode()
def mean_nll(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> float:
    """Per-token NLL of a split (the per-epoch validation curve)."""
    was = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(tokens), batch_size):
        seqs = tokens[start:start + batch_size]
        total += float(nll(model(seqs[:, :-1]), seqs[:, 1:]).double()) * len(seqs)
    model.train(was)
    return total / len(tokens)


def fit(student: nn.Module, train: torch.Tensor, val: torch.Tensor, run: LMRun, *,
        teacher: nn.Module | None = None, log=print) -> list[dict]:
    """Train `student` (seeded and placed by the caller) for recipe.epochs on the training
    sequences `train` (n, length + 1); return one row per epoch {epoch, lr, train_loss, val_nll}."""
    recipe = run.recipe
    if run.objective != "baseline" and teacher is None:
        raise ValueError(f"{run.name}: objective {run.objective!r} needs the teacher's module")
    if teacher is not None:
        teacher.eval()
    optimizer = make_optimizer(recipe, student)
    first, history = load_checkpoint(run, student, optimizer, log)
    n = len(train)
    for epoch in range(first, recipe.epochs + 1):
        started = time.perf_counter()
        lr = set_lr(optimizer, recipe, epoch)
        torch.manual_seed(derive_seed(run.seed, "lm", "model", epoch))  # a factory's own random ops
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(run.seed, "lm", "order", epoch)))
        draws = torch.Generator(device=train.device).manual_seed(derive_seed(run.seed, "lm", "samples", epoch))
        student.train()
        total, seen, sampled_steps, steps = 0.0, 0, 0, 0
        for start in range(0, n, recipe.batch_size):
            batch = train[order[start:start + recipe.batch_size].to(train.device)]
            seqs, sampled = _prefixes(run, batch, teacher, student, draws)
            loss = step_loss(run, student, teacher, seqs, sampled)
            optimizer_step(loss, student, optimizer, recipe, f"{run.name}: loss is not finite at epoch {epoch}")
            total += float(loss.detach().double()) * len(seqs)
            seen += len(seqs)
            steps += 1
            sampled_steps += int(sampled)
        row = {"epoch": epoch, "lr": lr, "train_loss": total / max(seen, 1), "val_nll": mean_nll(student, val),
               "sampled_steps": sampled_steps, "steps": steps}
        history.append(row)
        save_checkpoint(run, student, optimizer, epoch, history)
        seconds = time.perf_counter() - started
        tokens = seen * (train.shape[1] - 1)
        log(f"{run.name}: epoch {epoch}/{recipe.epochs} loss {row['train_loss']:.4f} val nll {row['val_nll']:.4f} "
            f"lr {lr:.4g} {tokens / seconds:.0f} tokens/s ETA {eta(seconds * (recipe.epochs - epoch))}")
    student.eval()
    return history
