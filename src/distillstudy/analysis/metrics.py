"""Metrics of predicted class distributions, computed in float64 NumPy from logits.

Every function takes logits shaped (n, classes) and returns a float, so the
evaluate stage needs no torch import.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def accuracy(logits, y) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def nll(logits, y) -> float:
    """Mean negative log-likelihood of the true class (natural log)."""
    log_p = log_softmax(logits)
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def brier(logits, y) -> float:
    """Multi-class Brier score: mean over examples of sum_c (p_c - [y = c])^2."""
    p = softmax(logits)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def ece(logits, y, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (i/B, (i+1)/B]."""
    p = softmax(logits)
    confidence = p.max(axis=-1)
    correct = (p.argmax(axis=-1) == y).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.sum() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total / len(y))


def agreement(student_logits, teacher_logits) -> float:
    """Top-1 agreement: share of examples where student and teacher predict the same class."""
    return float(np.mean(np.argmax(student_logits, -1) == np.argmax(teacher_logits, -1)))


def kl_teacher_student(student_logits, teacher_logits) -> float:
    """Mean KL(teacher || student) at temperature 1."""
    log_p = log_softmax(teacher_logits)
    log_q = log_softmax(student_logits)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))


def mean_max_prob(logits) -> float:
    """Mean confidence: near 1 means near one-hot predictions."""
    return float(np.mean(softmax(logits).max(axis=-1)))


def all_metrics(logits, y, teacher_logits=None, n_bins: int = 15) -> dict[str, float]:
    out = {
        "accuracy": accuracy(logits, y),
        "nll": nll(logits, y),
        "ece": ece(logits, y, n_bins),
        "brier": brier(logits, y),
        "mean_max_prob": mean_max_prob(logits),
    }
    if teacher_logits is not None:
        out["agreement"] = agreement(logits, teacher_logits)
        out["kl_teacher"] = kl_teacher_student(logits, teacher_logits)
    return out


def log_mean_prob(logits: list[np.ndarray]) -> np.ndarray:
    """log(mean_m softmax(logits_m)) in float64, returned as float32 (n, C): several
    teachers (fold teachers, ensemble members) combined into one."""
    log_p = np.stack([log_softmax(z) for z in logits])  # (M, n, C)
    top = log_p.max(axis=0)
    combined = top + np.log(np.exp(log_p - top).mean(axis=0))
    return combined.astype(np.float32)
