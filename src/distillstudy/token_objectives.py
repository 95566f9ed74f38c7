"""Token-level distillation objectives for causal language models.

    token_term(name, s, t, mask, **hyper) = mean over counted positions (b, i) of D(p_T, p_S)

with s, t the student's and teacher's logits shaped (batch, length, vocab), p = softmax
over the vocabulary at each position, and mask (batch, length) bool the positions that
count (padding and prompt positions are False). D is summed over the vocabulary; there
is no T^2 factor. The training loss of a language model is

    (1 - alpha) * NLL(tokens) + alpha * token_term(...)

on data prefixes, the divergence alone on sampled prefixes (as GKD).

    token_term("jsd", s, t, mask, beta=0.5)      # a 0-dim tensor, differentiable in s (and t)

NAMES and their hyper-parameters with defaults (TOKEN_OBJECTIVES):
  fkl   KL(p_T || p_S)                                 temperature = 1
  rkl   KL(p_S || p_T)                                 temperature = 1
  jsd   GKD's generalised JSD (beta in [0, 1])         beta = 0.5, temperature = 1
  tvd   total variation 0.5 sum_v |p_T - p_S|          (none)
  skl   KL(p_T || lam p_T + (1 - lam) p_S)             lam = 0.1
  srkl  KL(p_S || (1 - lam) p_T + lam p_S)             lam = 0.1

Papers: GKD, Agarwal et al. 2024 (ICLR), "On-policy distillation of language models:
learning from self-generated mistakes", arXiv:2306.13649; DistiLLM, Ko et al. 2024 (ICML),
"DistiLLM: towards streamlined distillation for large language models", arXiv:2402.03898;
MiniLLM, Gu et al. 2024 (ICLR), "MiniLLM: knowledge distillation of large language models",
arXiv:2306.08543 (reverse KL on the student's own samples).

References read (tests/test_token_objectives.py re-states each in float64 and checks
agreement to 1e-10):
  huggingface/trl, trl/experimental/gkd/gkd_trainer.py, GKDTrainer.generalized_jsd_loss
    (commit f2cd577, 2026; the same function lived in trl/trainer/gkd_trainer.py before);
  jongwooko/distillm, distillm/losses.py (commit d47e77f): forward_kl, reverse_kl,
    tv_distance, skewed_forward_kl, skewed_reverse_kl.

Deliberate differences, common to all objectives (none changes a value on ordinary,
finite logits beyond rounding):
  - the computation runs in the logits' dtype (DistiLLM always uses float32; trl the
    logits' dtype); the teacher's logits are cast to the student's dtype;
  - log-probabilities are clamped at the dtype's most negative finite number, so a
    vocabulary entry that is -inf in both models (a masked or padded vocabulary) adds
    exactly 0 with finite gradients. trl returns nan there; DistiLLM zeroes every term
    at an infinite logit, which also drops a term whose true value is +inf (the student
    at -inf where the teacher has mass): here that term stays very large, as it should;
  - positions are selected by the mask before anything is computed, so masked
    positions (even nan logits there) change neither the value nor any gradient.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from distillstudy.spelling import TOKEN_OBJECTIVES

# TOKEN_OBJECTIVES (names, hyper-parameters, defaults) is vocabulary: spelling.py holds it, so
# that params checks and cell names never import torch.
NAMES = tuple(TOKEN_OBJECTIVES)
# Hyper-parameters that are weights of a mixture (closed interval [0, 1]).
_UNIT_INTERVAL = ("beta", "lam")


def _log_probs(logits, temperature=1.0):
    """log softmax(logits / T) over the vocabulary, -inf replaced by the dtype's most
    negative finite number: exp of it is 0, and 0 * (a finite difference) stays 0."""
    scaled = logits if temperature == 1.0 else logits / temperature
    log_p = torch.log_softmax(scaled, dim=-1)
    # Finite logits give finite log-probabilities: the clamp (and its backward pass, ~20% of a
    # small LM's loss time, benchmarks/lm_step.py) only where a logit is -inf. Asked of the
    # minimum, one vectorised reduction: isinf(...).any() cost 20x as much (0.65 ms for a
    # 32 x 64 x 257 batch, AMD EPYC), 1.5% of the bench's step.
    return log_p.clamp_min(torch.finfo(logits.dtype).min) if bool(logits.amin() == -math.inf) else log_p


def _kl(log_p, log_q):
    """KL(p || q) = sum_v p_v (log p_v - log q_v), per row, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _log_mixture(log_a, log_b, weight_a):
    """log(w a + (1 - w) b) from log a and log b, by logsumexp (no underflow to log 0);
    w in (0, 1) strictly (the callers handle the ends)."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _fkl(s, t, temperature):
    """Forward KL (GKD's beta = 0; the usual word-level KD of Hinton et al. and
    Kim & Rush 2016): KL(p_T || p_S) at temperature T, p = softmax(logits / T).

    Equals trl generalized_jsd_loss(beta=0, temperature=T) exactly (its
    F.kl_div(student_log_probs, teacher_log_probs, log_target=True)). DistiLLM's
    forward_kl (at T = 1) returns the cross-entropy -sum_v p_T log p_S instead: it
    equals this plus the teacher's entropy H(p_T), a constant in the student (same
    gradient in s, different value; a CE is not 0 for identical inputs).
    """
    return _kl(_log_probs(t, temperature), _log_probs(s, temperature))


def _rkl(s, t, temperature):
    """Reverse KL (GKD's beta = 1; MiniLLM's objective, Gu et al. 2024, there
    optimised by policy gradient over sequences; here the exact per-token form):
    KL(p_S || p_T) at temperature T.

    Equals trl generalized_jsd_loss(beta=1, temperature=T) exactly, and DistiLLM's
    reverse_kl (T = 1: sum_v p_S (log p_S - log p_T), a true divergence).
    """
    return _kl(_log_probs(s, temperature), _log_probs(t, temperature))


def _jsd(s, t, beta, temperature):
    """Generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024, Eq. 1):

        JSD(beta) = beta KL(p_T || m) + (1 - beta) KL(p_S || m),   m = beta p_T + (1 - beta) p_S,

    at temperature T (p = softmax(logits / T)); beta = 0.5 is the symmetric JSD.
    trl's convention, followed exactly: beta = 0 IS the forward KL KL(p_T || p_S)
    and beta = 1 IS the reverse KL KL(p_S || p_T). The formula itself tends to 0 at
    both ends (JSD(beta) / beta -> KL(p_T || p_S) as beta -> 0, JSD(beta) / (1 - beta)
    -> KL(p_S || p_T) as beta -> 1), so the value jumps at beta = 0 and 1 as in trl.

    Reference: trl GKDTrainer.generalized_jsd_loss (log m by logsumexp of
    log p_S + log(1 - beta) and log p_T + log beta; reduction "batchmean" over the
    unmasked positions = the mean per counted position). No deliberate difference
    beyond the common ones above.
    """
    if beta == 0.0:
        return _fkl(s, t, temperature)
    if beta == 1.0:
        return _rkl(s, t, temperature)
    log_ps, log_pt = _log_probs(s, temperature), _log_probs(t, temperature)
    log_m = _log_mixture(log_pt, log_ps, beta)
    return beta * _kl(log_pt, log_m) + (1 - beta) * _kl(log_ps, log_m)


def _tvd(s, t):
    """Total variation distance 0.5 sum_v |p_T - p_S| (in [0, 1]).

    Reference: DistiLLM tv_distance (a true distance; no deliberate difference
    beyond the common ones above).
    """
    return 0.5 * (torch.softmax(t, dim=-1) - torch.softmax(s, dim=-1)).abs().sum(dim=-1)


def _skl(s, t, lam):
    """Skew forward KL (alpha-SKL) of DistiLLM (Ko et al. 2024):

        SKL(lam) = KL(p_T || lam p_T + (1 - lam) p_S),  lam in [0, 1];

    lam = 0 is the forward KL, lam = 1 gives 0; the skew bounds the divergence by
    log(1 / lam) and keeps its gradient finite where p_S vanishes.

    Reference: DistiLLM skewed_forward_kl, which returns the cross-entropy
    -sum_v p_T log(lam p_T + (1 - lam) p_S): this equals it minus the teacher's
    entropy H(p_T), a constant in the student (same gradient in s).
    """
    log_ps, log_pt = _log_probs(s), _log_probs(t)
    if lam == 0.0:
        return _kl(log_pt, log_ps)
    if lam == 1.0:  # KL(p_T || p_T), kept as a computation so the shape and graph match
        return _kl(log_pt, log_pt)
    return _kl(log_pt, _log_mixture(log_pt, log_ps, lam))


def _srkl(s, t, lam):
    """Skew reverse KL (alpha-SRKL) of DistiLLM (Ko et al. 2024):

        SRKL(lam) = KL(p_S || (1 - lam) p_T + lam p_S),  lam in [0, 1];

    lam = 0 is the reverse KL, lam = 1 gives 0.

    Reference: DistiLLM skewed_reverse_kl (sum_v p_S (log p_S - log m), a true
    divergence; no deliberate difference beyond the common ones above).
    """
    log_ps, log_pt = _log_probs(s), _log_probs(t)
    if lam == 0.0:
        return _kl(log_ps, log_pt)
    if lam == 1.0:
        return _kl(log_ps, log_ps)
    return _kl(log_ps, _log_mixture(log_ps, log_pt, lam))


_DIVERGENCES = {"fkl": _fkl, "rkl": _rkl, "jsd": _jsd, "tvd": _tvd, "skl": _skl, "srkl": _srkl}


def _hyper_values(name, hyper):
    """The defaults of TOKEN_OBJECTIVES[name] updated with `hyper`, checked, as floats."""
    if name not in TOKEN_OBJECTIVES:
        raise ValueError(f"unknown token objective {name!r} (expected one of {', '.join(NAMES)})")
    defaults = TOKEN_OBJECTIVES[name]
    unknown = sorted(k for k in hyper if k not in defaults)
    if unknown:
        raise ValueError(f"token objective {name!r}: unknown hyper-parameter(s) {', '.join(unknown)} "
                         f"(it takes: {', '.join(defaults) or 'none'})")
    values = {}
    for key, default in defaults.items():
        v = hyper.get(key, default)
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise ValueError(f"token objective {name!r}: {key} must be a finite real number, got {v!r}")
        v = float(v)
        if key == "temperature" and v <= 0:
            raise ValueError(f"token objective {name!r}: temperature must be > 0, got {v!r}")
        if key in _UNIT_INTERVAL and not 0.0 <= v <= 1.0:
            raise ValueError(f"token objective {name!r}: {key} must be in [0, 1], got {v!r}")
        values[key] = v
    return values


def _validated(name, student_logits, teacher_logits, mask, hyper):
    """Check the name, hyper-parameters, shapes and mask; return (s, t, values) with s and t
    the counted positions' logits, shaped (n_counted, vocab), t in s's dtype."""
    values = _hyper_values(name, hyper)
    s, t = student_logits, teacher_logits
    if not (torch.is_tensor(s) and torch.is_tensor(t) and torch.is_tensor(mask)):
        raise ValueError(f"token objective {name!r}: logits and mask must be torch tensors")
    if not s.is_floating_point() or s.ndim != 3 or s.shape[-1] < 2:
        raise ValueError(f"token objective {name!r}: student logits must be floating point, shaped "
                         f"(batch, length, vocab) with vocab >= 2; got {s.dtype} {tuple(s.shape)}")
    if not t.is_floating_point() or t.shape != s.shape:
        raise ValueError(f"token objective {name!r}: teacher logits {t.dtype} {tuple(t.shape)} do not match "
                         f"student logits {tuple(s.shape)} (same batch, length and vocabulary expected)")
    if mask.dtype != torch.bool or mask.shape != s.shape[:2]:
        raise ValueError(f"token objective {name!r}: mask must be bool shaped (batch, length) = "
                         f"{tuple(s.shape[:2])}; got {mask.dtype} {tuple(mask.shape)}")
    if not (s.device == t.device == mask.device):
        raise ValueError(f"token objective {name!r}: student logits, teacher logits and mask are on different "
                         f"devices ({s.device}, {t.device}, {mask.device})")
    if not bool(mask.any()):
        raise ValueError(f"token objective {name!r}: the mask counts no position (all False): "
                         "the mean over counted positions is undefined")
    if bool(mask.all()):  # every position counts (full blocks): views, not copies of the logits
        return s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]).to(s.dtype), values
    return s[mask], t[mask].to(s.dtype), values


def token_term(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               **hyper: float) -> torch.Tensor:
    """The token-level divergence `name` (one of NAMES), averaged over the positions where
    `mask` is True: a 0-dim tensor in the student's dtype.

    student_logits, teacher_logits: (batch, length, vocab); mask: (batch, length) bool.
    Hyper-parameters not given take TOKEN_OBJECTIVES[name]'s defaults. Differentiable
    in both logits (detach the teacher's to train the student alone).
    """
    s, t, values = _validated(name, student_logits, teacher_logits, mask, hyper)
    return _DIVERGENCES[name](s, t, **values).mean()
