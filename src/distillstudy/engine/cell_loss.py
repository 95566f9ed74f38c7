"""A grid cell's training loss: its value, and its gradient with respect to the logits
in the stacked engine's layout, (members, classes, batch), without an autograd graph
through the network (engine.train.train_stacked calls `loss_grad` every step).

    L = (1 - alpha) CE(y, s) + alpha term(objective, s, t, y, **hyper)

(distillstudy.objectives defines each term, with its paper.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distillstudy import objectives
from distillstudy.engine import losses


@dataclass(frozen=True)
class Objective:
    """One grid cell's loss, L = (1 - alpha) CE(y, s) + alpha term(kind, s, t, y, **hyper),
    and its gradient with respect to the logits.

    Calling it gives the reference value (logits shaped (..., batch, classes)) from
    `losses` (kd, logit_mse) or `distillstudy.objectives.term` (the others);
    `train_stacked` computes the same loss and its gradient directly, without an
    autograd graph through the network, via `targets()` and `loss_grad()`. Closed form
    for the two objectives whose gradient is cheap:

      kd:        L = a CE(y, s) + alpha T^2 KL(pt || softmax(s/T)),  a = 1 - alpha
                 dL/ds = [a (softmax(s) - onehot(y)) + alpha T (softmax(s/T) - pt)] / batch
      logit_mse: L = a CE(y, s) + alpha sum_c (s~ - t~)^2 / (2C)     (~: centred per example)
                 dL/ds = [a (softmax(s) - onehot(y)) + alpha (s~ - t~) / C] / batch

    with pt = softmax(t/T); for dkd, dist, ls_kd and nkd the term's gradient comes from
    `objectives.value_and_grad` (autograd on the batch's logits alone). tests/test_train.py
    checks value and gradient against autograd, and training against plain autograd.
    `hyper` holds the objective's hyper-parameters as sorted (name, value) pairs.
    """

    kind: str
    alpha: float
    hyper: tuple = ()

    @property
    def temperature(self) -> float | None:
        return dict(self.hyper).get("temperature")

    @property
    def closed_form(self) -> bool:
        return self.kind in ("kd", "logit_mse") or self.alpha == 0

    def __call__(self, student_logits, teacher_logits, labels) -> torch.Tensor:
        if self.kind == "kd":
            return losses.kd_loss(student_logits, teacher_logits, labels, self.alpha, self.temperature)
        if self.kind == "logit_mse":
            return losses.logit_mse_loss(student_logits, teacher_logits, labels, self.alpha)
        hard = losses.cross_entropy(student_logits, labels)
        if self.alpha == 0:
            return hard
        soft = objectives.term(self.kind, student_logits, teacher_logits, labels, **dict(self.hyper))
        return (1 - self.alpha) * hard + self.alpha * soft

    @property
    def soft(self) -> bool:
        """Whether a softmax at temperature T != 1 is needed besides softmax(s)."""
        return self.kind == "kd" and self.alpha != 0 and self.temperature != 1

    def targets(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> tuple[dict, float]:
        """Per-example tensors (n, C) the step reads, and the loss's constant sum over all n.

        grad:  subtracted from the logits' gradient (times batch): a onehot + alpha T pt
        w_p:   weight of log softmax(s) in the loss: a onehot (kd at T = 1: also alpha pt)
        w_q:   weight of log softmax(s/T) in the loss: alpha T^2 pt (kd, T != 1 only)
        t_c:   centred teacher logits (logit_mse only)
        t, y1: the teacher's logits and the one-hot labels (objectives without a closed form)
        """
        a = 1.0 - self.alpha
        onehot = F.one_hot(labels, teacher_logits.shape[1]).to(teacher_logits.dtype)
        if self.alpha == 0:
            return {"grad": onehot, "w_p": onehot}, 0.0
        if self.kind == "logit_mse":
            t_c = teacher_logits - teacher_logits.mean(dim=1, keepdim=True)
            return {"grad": a * onehot, "w_p": a * onehot, "t_c": t_c}, 0.0
        if not self.closed_form:
            return {"grad": a * onehot, "w_p": a * onehot, "t": teacher_logits, "y1": onehot}, 0.0
        t = self.temperature
        log_pt = torch.log_softmax(teacher_logits / t, dim=1)
        pt = log_pt.exp()
        # The teacher's own entropy term of the KL: the same every epoch (every example once).
        const = float(self.alpha * t * t * (pt * log_pt).sum())
        grad = a * onehot + (self.alpha * t) * pt
        if self.soft:
            return {"grad": grad, "w_p": a * onehot, "w_q": (self.alpha * t * t) * pt}, const
        return {"grad": grad, "w_p": grad}, const


def objective_fn(objective: str, alpha: float, hyper: dict | None = None) -> Objective:
    """The training loss of a cell: `objective` (one of objectives.NAMES; "" or any name at
    alpha = 0 is the hard-label loss) with its hyper-parameters."""
    hyper = dict(hyper or {})
    if float(alpha) == 0:
        return Objective("kd", 0.0, ())
    if objective not in objectives.NAMES:
        raise ValueError(f"unknown objective {objective!r} (expected one of {', '.join(objectives.NAMES)})")
    if sorted(hyper) != sorted(objectives.HYPER[objective]):
        raise ValueError(f"objective {objective!r} takes {objectives.HYPER[objective]}, got {sorted(hyper)}")
    return Objective(objective, float(alpha), tuple(sorted((k, float(v)) for k, v in hyper.items())))


def loss_grad(s: torch.Tensor, tb: dict, objective: Objective, acc: dict) -> torch.Tensor:
    """dL/ds of the batch-mean loss for logits s (M, C, b), targets tb laid out (M, C, b)
    (from Objective.targets); adds the loss's element-wise terms to `acc` (see
    epoch_loss_terms), so the loss costs one fused op per term per step."""
    b = s.shape[2]
    log_p = torch.log_softmax(s, dim=1)
    _accumulate(acc, "p", tb["w_p"], log_p)
    if not objective.closed_form:
        # (1 - alpha) CE in closed form; the term's value and gradient from objectives,
        # on the (M, b, C) view of the logits.
        value, term_grad = objectives.value_and_grad(
            objective.kind, s.transpose(1, 2), tb["t"].transpose(1, 2), tb["y1"].argmax(dim=1),
            **dict(objective.hyper))
        acc["term"] = acc["term"].add_(value, alpha=b) if "term" in acc else value * b
        g = log_p.exp_().mul_((1.0 - objective.alpha) / b)
        g.add_(term_grad.transpose(1, 2), alpha=objective.alpha)
        return g.sub_(tb["grad"], alpha=1.0 / b)
    g = log_p.exp_().mul_((1.0 - objective.alpha) / b if objective.kind == "logit_mse" or objective.soft
                          else 1.0 / b)
    if objective.kind == "logit_mse":
        d = s - s.mean(dim=1, keepdim=True)
        d.sub_(tb["t_c"])
        _accumulate(acc, "d", d, d)
        g.add_(d, alpha=objective.alpha / (s.shape[1] * b))
    elif objective.soft:
        t = objective.temperature
        log_q = torch.log_softmax(s * (1.0 / t), dim=1)
        _accumulate(acc, "q", tb["w_q"], log_q)
        g.add_(log_q.exp_(), alpha=objective.alpha * t / b)
    return g.sub_(tb["grad"], alpha=1.0 / b)


def _accumulate(acc: dict, key: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if key in acc:
        acc[key].addcmul_(a, b)
    else:
        acc[key] = a * b


def epoch_loss_terms(acc: dict, objective: Objective) -> torch.Tensor:
    """Each member's loss summed over the examples of `acc`, without the constant term:
    -sum w_p log p - sum w_q log q + alpha / (2C) sum d^2."""
    total = -acc["p"].sum(dim=(1, 2))
    if "q" in acc:
        total -= acc["q"].sum(dim=(1, 2))
    if "d" in acc:
        total += acc["d"].sum(dim=(1, 2)) * (objective.alpha / (2 * acc["d"].shape[1]))
    if "term" in acc:
        total += acc["term"] * objective.alpha
    return total
