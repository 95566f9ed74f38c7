"""Distillation objectives: the term each adds to a student's training loss.

    L = (1 - alpha) * CE(y, s) + alpha * term(name, s, t, y, **hyper)

with s the student's and t the teacher's logits and y the integer labels.
`term` is the distillation term alone, reduced like the authors' code (a batch
mean; DIST's intra-class part is a mean over classes of a relation across the
batch). Logits are shaped (batch, classes), or stacked (..., batch, classes)
with one model per leading index: the result is shaped like the leading dims,
each entry computed from its own model's batch only. Teacher logits may be
shared across the stacked models (shape (batch, classes)), labels too
(shape (batch,) or (..., batch)).

    term("kd", s, t, y, temperature=4.0)                          # shape s.shape[:-2]
    grad("dkd", s, t, y, alpha=1.0, beta=8.0, temperature=4.0)    # d term(...).sum() / ds

Each objective equals its authors' reference implementation on ordinary inputs
(float64, to rounding: 1e-12 relative or better); tests/test_objectives.py
re-states each reference formula and checks the papers' identities. Each
docstring names the reference file and the commit read, and lists every
deliberate difference; none changes a value on ordinary inputs beyond rounding.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from distillstudy.grid import OBJECTIVE_HYPER, OBJECTIVES
from distillstudy.token_objectives import TOKEN_OBJECTIVES, token_term  # noqa: F401

#: The objectives' names and hyper-parameter names: the params keys (distill.objectives).
NAMES = OBJECTIVES
HYPER = OBJECTIVE_HYPER
DIST_EPS = 1e-8  # DIST: added to the product of the two norms in each correlation (reference value)
LS_EPS = 1e-7  # LS-KD: added to the standard deviation (reference value)


def _kd(s, t, y, temperature):
    """KD (Hinton, Vinyals & Dean 2015, arXiv:1503.02531):

        T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean; T^2 always applied.

    The same operations, in the same order, as engine.losses.soft_kl, so the two
    agree bit for bit. Closed-form gradient: T (softmax(s/T) - softmax(t/T)) / batch.
    """
    log_q = torch.log_softmax(s / temperature, dim=-1)
    log_p = torch.log_softmax(t / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return temperature**2 * kl.mean(dim=-1)


def _logit_mse(s, t, y):
    """Centred logit matching, the project's T -> infinity limit of T^2 KL:

        sum_c (s~_c - t~_c)^2 / (2 C), batch mean,   x~ = x - mean_c(x) per example.

    This is the T -> infinity limit of T^2 KL(softmax(t/T) || softmax(s/T))
    (Hinton et al. 2015, section 2.1, there for zero-mean logits; centring makes
    it hold for any logits). The same operations, in the same order, as
    engine.losses.centred_logit_mse (bit for bit). Closed-form gradient:
    (s~ - t~) / (C * batch).
    """
    s = s - s.mean(dim=-1, keepdim=True)
    t = t - t.mean(dim=-1, keepdim=True)
    n_classes = s.shape[-1]
    return ((s - t) ** 2).sum(dim=-1).mean(dim=-1) / (2 * n_classes)


def _lse_nontarget(z, target):
    """logsumexp of z over the non-target classes only (keepdim); z - it is the log softmax
    over those classes (finite, and meaningless, at the target)."""
    return torch.logsumexp(z.masked_fill(target, -math.inf), dim=-1, keepdim=True)


def _dkd(s, t, y, alpha, beta, temperature):
    """Decoupled KD (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, arXiv:2203.08679):

        T^2 * (alpha * TCKD + beta * NCKD), batch mean, with, at temperature T,
        TCKD = KL(b^t || b^s),   b = (p_y, 1 - p_y)  the binary target/other split,
        NCKD = KL(p^^t || p^^s), p^^ = softmax over the non-target classes only.

    The paper's reformulation of KD (its section 3.1, at any T): KD = TCKD +
    (1 - p^t_y) * NCKD per example, p^t_y the teacher's target probability at T.
    With two classes NCKD = 0.

    Reference: megvii-research/mdistiller, mdistiller/distillers/DKD.py, `dkd_loss`
    (commit e8c5bb3, unchanged at a08d46f): both parts times T^2, summed over the
    batch and divided by the batch size (a batch mean).
    Deliberate differences, for numerical stability only:
    - log b is taken in log space, log p_y = z_y - lse(z) and log(1 - p_y) =
      lse(z without y) - lse(z), where the reference takes torch.log of summed
      probabilities: at large logits (float32) those sums reach 0 and 1 and the
      reference returns inf or nan; this stays finite.
    - NCKD leaves the target class out exactly (-inf in its logsumexp, weight 0),
      where the reference subtracts 1000 from the target's scaled logit, which
      stops excluding it once |logits| / T approach 1000.
    """
    target = torch.nn.functional.one_hot(y, s.shape[-1]).bool()
    idx = y.unsqueeze(-1)

    def split(z):  # log b (..., 2) and the non-target log softmax (..., C)
        lse, lse_nt = torch.logsumexp(z, dim=-1, keepdim=True), _lse_nontarget(z, target)
        return torch.cat([z.gather(-1, idx) - lse, lse_nt - lse], dim=-1), z - lse_nt

    log_bs, log_ns = split(s / temperature)
    log_bt, log_nt = split(t / temperature)
    tckd = (log_bt.exp() * (log_bt - log_bs)).sum(dim=-1)
    q_t = log_nt.masked_fill(target, -math.inf).exp()  # 0 at the target, exactly
    nckd = (q_t * (log_nt - log_ns)).sum(dim=-1)
    return temperature**2 * (alpha * tckd + beta * nckd).mean(dim=-1)


def _dist(s, t, y, beta, gamma, temperature):
    """DIST (Huang, You, Wang, Qian & Xu, NeurIPS 2022, arXiv:2205.10536):

        T^2 * (beta * (1 - mean_n rho(P^s_n., P^t_n.)) + gamma * (1 - mean_c rho(P^s_.c, P^t_.c))),

    P = softmax(logits / T) of the batch (batch x classes); the inter-class term
    correlates each example's class probabilities, the intra-class term each class's
    probabilities across the batch. rho(a, b) = <a~, b~> / (|a~| |b~| + 1e-8), with
    a~ = a - mean(a): a Pearson correlation with the eps added to the product of
    the norms. The intra-class term couples the examples of a batch: it is not a
    mean of per-example losses (and it is 1 for a batch of one, whose centred
    columns are zero). With two classes each example's inter-class correlation is
    +-1 (whether student and teacher rank the classes alike). With identical
    inputs DIST is not 0 but T^2 (beta mean_n eps/(|a~_n|^2 + eps) + gamma mean_c
    eps/(|a~_c|^2 + eps)): small, larger for near-uniform rows or columns.

    Reference: hunto/DIST_KD, classification/lib/models/losses/dist_kd.py, class
    DIST — the classification folder is a submodule, hunto/image_classification_sota
    at d9662f7 (DIST_KD 2418f18), lib/models/losses/dist_kd.py (tau = T, times tau^2).
    No deliberate difference.
    """
    p_s = torch.softmax(s / temperature, dim=-1)
    p_t = torch.softmax(t / temperature, dim=-1)

    def one_minus_rho(a, b, dim):
        a = a - a.mean(dim=dim, keepdim=True)
        b = b - b.mean(dim=dim, keepdim=True)
        norms = torch.linalg.vector_norm(a, dim=dim) * torch.linalg.vector_norm(b, dim=dim)
        return 1 - ((a * b).sum(dim=dim) / (norms + DIST_EPS)).mean(dim=-1)

    inter = one_minus_rho(p_s, p_t, dim=-1)
    intra = one_minus_rho(p_s, p_t, dim=-2)
    return temperature**2 * (beta * inter + gamma * intra)


def _zscore(x):
    """(x - mean) / (1e-7 + std) per example, std unbiased (divides by C - 1), as the reference."""
    return (x - x.mean(dim=-1, keepdim=True)) / (LS_EPS + x.std(dim=-1, keepdim=True))


def _ls_kd(s, t, y, temperature):
    """KD on standardised logits (Sun, Ren, Li, Wang & Cao, CVPR 2024, "Logit
    standardization in knowledge distillation", arXiv:2403.01427):

        T^2 * KL(softmax(Z(t)/T) || softmax(Z(s)/T)), batch mean,
        Z(x) = (x - mean_c x) / (1e-7 + std_c x),  std with Bessel's correction (C - 1).

    Invariant, up to the 1e-7, to a per-example shift and positive scaling of
    either logit set; 0 for identical inputs. With two classes Z(x) = +-1/sqrt(2)
    (up to the eps): the term only sees whether student and teacher rank the two
    classes alike (0 if they do), and its gradient is of order 1e-7 / (s_1 - s_0)^2,
    so it gives no learning signal on binary tasks.

    Reference: sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py,
    `normalize` and `kd_loss` with logit_stand=True (commit 6083e2d, unchanged at
    f6e5aa5): torch's default unbiased std, eps added to the std, times T^2, KL
    summed over classes and averaged over the batch.
    No deliberate difference (the KL is written as in `kd`, equal up to rounding).
    """
    return _kd(_zscore(s), _zscore(t), y, temperature)


def _nkd(s, t, y, gamma, temperature):
    """Normalised KD (Yang, Zeng, Yuan & Li, ICCV 2023, "From knowledge distillation
    to self-knowledge distillation: a unified approach with normalized loss and
    customized soft labels", arXiv:2303.13005):

        -mean_n [ p^t_y log p^s_y ]  -  gamma * T^2 * mean_n sum_{i != y} q^t_i log q^s_i,

    p = softmax(logits) (the target term has no temperature), q = softmax over the
    non-target classes of logits / T. A cross-entropy, not a KL: with identical
    inputs it is the target term plus gamma T^2 times the entropy of q^t, not 0.
    With two classes the non-target term is 0.

    Reference: yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py, class NKDLoss (commit
    9466b3f, unchanged at 1e5d48f; mmcls/distillation/losses/nkd.py is the same
    loss for mmcls 0.x). Matched the fixed version: before 9466b3f / ad4876f
    (2023-10-10) the mask kept the target class in the non-target softmax.
    Deliberate difference: none in value; the non-target softmax masks the target
    with -inf instead of removing it by boolean indexing (same numbers, keeps the
    stacked shape).
    """
    idx = y.unsqueeze(-1)
    target_term = -(torch.softmax(t, dim=-1).gather(-1, idx) * torch.log_softmax(s, dim=-1).gather(-1, idx))
    mask = torch.nn.functional.one_hot(y, s.shape[-1]).bool()
    z_s, z_t = s / temperature, t / temperature
    log_qs = z_s - _lse_nontarget(z_s, mask)
    q_t = (z_t - _lse_nontarget(z_t, mask)).masked_fill(mask, -math.inf).exp()  # 0 at the target
    non_target = (q_t * log_qs).sum(dim=-1)
    return target_term.squeeze(-1).mean(dim=-1) - gamma * temperature**2 * non_target.mean(dim=-1)


_TERMS = {"kd": _kd, "logit_mse": _logit_mse, "dkd": _dkd, "dist": _dist, "ls_kd": _ls_kd, "nkd": _nkd}


def _validated(name, student_logits, teacher_logits, labels, hyper):
    """Check the name, hyper-parameters and shapes; return (s, t, y, hyper) with t and y
    broadcast to the student's stacked shape and hyper as floats."""
    if name not in HYPER:
        raise ValueError(f"unknown distillation objective {name!r} (expected one of {', '.join(NAMES)})")
    expected = HYPER[name]
    missing = [k for k in expected if k not in hyper]
    unknown = sorted(k for k in hyper if k not in expected)
    wanted = ", ".join(expected) or "none"
    if unknown:
        raise ValueError(f"objective {name!r}: unknown hyper-parameter(s) {', '.join(unknown)} (it takes: {wanted})")
    if missing:
        raise ValueError(f"objective {name!r}: missing hyper-parameter(s) {', '.join(missing)} (it takes: {wanted})")
    values = {}
    for key in expected:
        v = hyper[key]
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise ValueError(f"objective {name!r}: {key} must be a finite real number, got {v!r}")
        v = float(v)
        if key == "temperature" and v <= 0:
            raise ValueError(f"objective {name!r}: temperature must be > 0, got {v!r}")
        if key != "temperature" and v < 0:
            raise ValueError(f"objective {name!r}: {key} must be >= 0, got {v!r}")
        values[key] = v
    s, t, y = student_logits, teacher_logits, labels
    if not (torch.is_tensor(s) and torch.is_tensor(t) and torch.is_tensor(y)):
        raise ValueError(f"objective {name!r}: logits and labels must be torch tensors")
    if not s.is_floating_point() or s.ndim < 2 or s.shape[-1] < 2:
        raise ValueError(f"objective {name!r}: student logits must be floating point, shaped (..., batch, classes) "
                         f"with at least 2 classes; got {s.dtype} {tuple(s.shape)}")
    if not t.is_floating_point() or t.ndim < 2 or t.ndim > s.ndim or t.shape[-2:] != s.shape[-2:]:
        raise ValueError(f"objective {name!r}: teacher logits {tuple(t.shape)} do not fit student logits "
                         f"{tuple(s.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim < 1 or y.shape[-1] != s.shape[-2]:
        raise ValueError(f"objective {name!r}: labels must be integers shaped (batch,) or (..., batch); "
                         f"got {y.dtype} {tuple(y.shape)} for logits {tuple(s.shape)}")
    try:
        t = t.expand(s.shape)
        y = y.expand(s.shape[:-1]).long()
    except RuntimeError as error:
        raise ValueError(f"objective {name!r}: teacher logits {tuple(t.shape)} or labels {tuple(y.shape)} "
                         f"do not broadcast to student logits {tuple(s.shape)}") from error
    return s, t, y, values


def term(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
         **hyper: float) -> torch.Tensor:
    """The distillation term `name` (one of NAMES) with its hyper-parameters HYPER[name].

    Logits (..., batch, classes) -> a tensor shaped (...): one value per stacked model.
    Differentiable with respect to the student's logits (and the teacher's).
    """
    s, t, y, values = _validated(name, student_logits, teacher_logits, labels, hyper)
    return _TERMS[name](s, t, y, **values)


def grad(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
         **hyper: float) -> torch.Tensor:
    """d term(name, s, t, y, **hyper).sum() / ds, shaped like the student's logits.

    Closed form for kd and logit_mse (see their docstrings); autograd on a detached
    copy of the student's logits for the others (no graph is left behind, and the
    teacher's logits never receive a gradient).
    """
    return value_and_grad(name, student_logits, teacher_logits, labels, **hyper)[1]


def value_and_grad(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor, **hyper: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(term(...), grad(...)) from one evaluation: what a training step needs."""
    s, t, y, values = _validated(name, student_logits, teacher_logits, labels, hyper)
    batch = s.shape[-2]
    with torch.no_grad():
        if name == "kd":
            temp = values["temperature"]
            return (_kd(s, t, y, temp),
                    (torch.softmax(s / temp, dim=-1) - torch.softmax(t / temp, dim=-1)) * (temp / batch))
        if name == "logit_mse":
            d = (s - s.mean(dim=-1, keepdim=True)) - (t - t.mean(dim=-1, keepdim=True))
            return _logit_mse(s, t, y), d / (s.shape[-1] * batch)
    # The engine trains under torch.inference_mode(); autograd cannot record inference
    # tensors, so the graph is built on plain clones (a few (batch, classes) copies).
    with torch.inference_mode(False), torch.enable_grad():
        leaf = s.detach().clone().requires_grad_(True)
        value = _TERMS[name](leaf, t.detach().clone(), y.clone(), **values)
        gradient = torch.autograd.grad(value.sum(), leaf)[0]
    return value.detach(), gradient
