"""Distillation losses (batch-mean reduction, one value per stacked model).

Knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531):

    L = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

with s the student's and t the teacher's logits. T^2 keeps the soft term's
gradients on the same scale as T changes; alpha = 0 is the hard-label baseline
and alpha = 1 pure soft targets.

Logit matching is the T -> infinity limit of the soft term: with logits centred
per example, T^2 KL -> sum_c (s_c - t_c)^2 / (2 C). `logit_mse_loss` uses exactly
that scaling, so alpha means the same thing for both objectives.

All functions take logits shaped (..., batch, classes) and return a tensor shaped
(...): one loss per stacked model, each the mean over its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL of integer labels; labels shaped like the logits' leading dims."""
    log_p = F.log_softmax(student_logits, dim=-1)
    return -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(dim=-1)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return temperature**2 * kl.mean(dim=-1)


def centred_logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """sum_c (s_c - t_c)^2 / (2 C) on per-example centred logits, batch mean.

    Centring removes the softmax's shift invariance: logits that differ by a
    constant give the same distribution and should cost nothing.
    """
    s = student_logits - student_logits.mean(dim=-1, keepdim=True)
    t = teacher_logits - teacher_logits.mean(dim=-1, keepdim=True)
    n_classes = student_logits.shape[-1]
    return ((s - t) ** 2).sum(dim=-1).mean(dim=-1) / (2 * n_classes)


def kd_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float) -> torch.Tensor:
    hard = cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    return (1 - alpha) * hard + alpha * soft_kl(student_logits, teacher_logits, temperature)


def logit_mse_loss(student_logits, teacher_logits, labels, alpha: float) -> torch.Tensor:
    hard = cross_entropy(student_logits, labels)
    return (1 - alpha) * hard + alpha * centred_logit_mse(student_logits, teacher_logits)
