"""Per-split metrics of a trained causal language model: likelihood, agreement with the
teacher, exact divergence from the truth, and the quality and diversity of its samples.

A split is `tokens_<split>` of a prepared npz, int64 (n, block + 1) with column 0 = bos:
the model reads inputs x = tokens[:, :-1] and is scored on targets y = tokens[:, 1:],
every one of the N = n * block target positions. p_S, p_T are softmax of the student's
and teacher's logits (temperature 1), computed in float64. Per-token means are over all N
positions of the split (not per sequence first).

    nll                 (1/N) sum_{b,i} -log p_S(y_bi | x_b,<=i)
    perplexity          exp(nll)
    agreement           (1/N) sum_{b,i} [argmax_v p_S(v | .) == argmax_v p_T(v | .)]     (teacher)
    kl_teacher          (1/N) sum_{b,i} sum_v p_T(v) (log p_T(v) - log p_S(v))            (teacher)
    kl_truth            (1/N) sum_{b,i} sum_v p(v | y_b,<i) (log p(v | y_b,<i) - log p_S(v))  (truth)
                        with p the exact next-token distribution of the hidden Markov model
                        (hmm.next_token_probs on y, the sequences without bos), given 0 at
                        the bos id (which the language never emits; 0 log 0 = 0):
                        hmm.per_token_kl.

Generation: `n_samples` sequences s = gpt.sample(student, n_samples, block, bos=bos,
generator=torch.Generator(device).manual_seed(sample_seed)), (n_samples, block + 1), and
z = s[:, 1:] the M = n_samples * block sampled tokens (bos column excluded):

    sample_teacher_nll  (1/M) sum_{b,i} -log p_T(z_bi | s_b,<=i)    ("teacher-judged"; teacher)
    sample_true_nll     (1/n_samples) sum_b -log p(z_b) / block      (exact, hmm.sequence_log_prob; truth)
    distinct_2          |{distinct bigrams (z_bi, z_b,i+1)}| / (n_samples * (block - 1)),
                        bigrams within a sequence only, pooled over all samples
    sample_entropy      -sum_v c_v/M log(c_v/M), c_v = count of token v in z (plug-in
                        unigram entropy, nats)

`oracle` gives the same names for the truth itself as the model (the oracle teacher):
nll/perplexity of the data under p, kl_truth = 0, and the generation metrics of
hmm.sample draws (numpy generator seeded by sample_seed); agreement, kl_teacher and
sample_teacher_nll are omitted.

    metrics = evaluate(student, arrays, "test", teacher=teacher, truth=hmm, sample_seed=0)
    best = oracle(hmm, arrays, "test", n_samples=64, sample_seed=0)

Every value is a finite float, or a RuntimeError names the metric.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F

from distillstudy.engine import hmm as hmm_lib
from distillstudy.engine.gpt import sample
from distillstudy.engine.seeds import derive_seed

#: Every metric name, in the results file's order.
METRICS = ("nll", "perplexity", "agreement", "kl_teacher", "kl_truth", "sample_teacher_nll", "sample_true_nll",
           "distinct_2", "sample_entropy")
#: The metrics where a smaller value is the better model (the others: larger is better).
LOWER_IS_BETTER = ("nll", "perplexity", "kl_teacher", "kl_truth", "sample_teacher_nll", "sample_true_nll")


def split_tokens(arrays: dict, split: str) -> tuple[np.ndarray, int, int]:
    """(tokens_<split> as int64 (n, block + 1), vocab_size, bos), checked: a KeyError/ValueError
    names the missing key, or the first id out of [0, vocab_size) by row and column."""
    key = f"tokens_{split}"
    for name in (key, "vocab_size", "bos"):
        if name not in arrays:
            raise KeyError(f"token arrays have no {name!r} (keys: {sorted(arrays)})")
    tokens = np.asarray(arrays[key])
    vocab_size, bos = int(arrays["vocab_size"]), int(arrays["bos"])
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{key} must be integers shaped (n >= 1, block + 1 >= 2), got {tokens.dtype} {tokens.shape}")
    if not 0 <= bos < vocab_size:
        raise ValueError(f"bos {bos} is out of range for vocab_size {vocab_size}")
    bad = np.argwhere((tokens < 0) | (tokens >= vocab_size))
    if bad.size:
        row, column = bad[0]
        raise ValueError(f"{key}: token id {tokens[row, column]} at row {row}, column {column} is out of range "
                         f"for vocab_size {vocab_size}")
    return tokens.astype(np.int64, copy=False), vocab_size, bos


def distinct_n(tokens, n: int = 2) -> float:
    """Distinct n-grams / total n-grams of token sequences (rows of `tokens`, no bos column);
    n-grams never cross a row boundary. nan when no row is n long."""
    array = np.asarray(tokens)
    if array.ndim != 2:
        raise ValueError(f"distinct_n: tokens must be shaped (sequences, length), got {array.shape}")
    if array.shape[1] < n:
        return math.nan
    grams = np.stack([array[:, k:array.shape[1] - n + 1 + k] for k in range(n)], axis=-1).reshape(-1, n)
    return len(np.unique(grams, axis=0)) / len(grams)


def unigram_entropy(tokens) -> float:
    """Plug-in entropy in nats of the tokens' empirical distribution: -sum_v f_v log f_v."""
    _, counts = np.unique(np.asarray(tokens).ravel(), return_counts=True)
    if counts.size == 0:
        return math.nan
    frequencies = counts / counts.sum()
    return float(-(frequencies * np.log(frequencies)).sum())


@contextmanager
def _evaluating(*models):
    """Every given module (and submodule) in eval mode, each restored to its own mode after."""
    modes = [(module, module.training) for model in models if model is not None for module in model.modules()]
    try:
        for model in models:
            if model is not None:
                model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _log_probs(model, inputs: torch.Tensor, vocab_size: int, role: str) -> torch.Tensor:
    """log_softmax of model(inputs) in float64, checked to be (batch, length, vocab_size)
    (a Hugging Face causal LM's output: its `.logits`)."""
    logits = model(inputs)
    logits = getattr(logits, "logits", logits)
    expected = (*inputs.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise ValueError(f"the {role} returned logits shaped {tuple(logits.shape)}, expected {expected}")
    return F.log_softmax(logits.to(torch.float64), dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) at each position, 0 log 0 = 0 (an id both models exclude adds nothing)."""
    terms = log_p.exp() * (log_p - log_q)
    return torch.where(log_p > -math.inf, terms, torch.zeros_like(terms)).sum(dim=-1)


def _truth_probs(truth, targets: np.ndarray, vocab_size: int, bos: int) -> np.ndarray:
    """The exact next-token distributions of `targets` (no bos column), over vocab_size ids
    with probability 0 at bos: (batch, length, vocab_size)."""
    probs = hmm_lib.next_token_probs(truth, targets)
    return np.insert(probs, bos, 0.0, axis=-1)


def _check_truth(truth, vocab_size: int, bos: int):
    """The truth's tokens must be the ids 0..V-1 and bos = V, vocab_size = V + 1 (synthetic_lm)."""
    if vocab_size != truth.vocab + 1 or bos != truth.vocab:
        raise ValueError(f"the truth emits {truth.vocab} tokens, so vocab_size must be {truth.vocab + 1} and bos "
                         f"{truth.vocab}; got vocab_size {vocab_size}, bos {bos}")


def _finite(metrics: dict) -> dict[str, float]:
    """The metrics as Python floats in METRICS order, or a RuntimeError naming a non-finite one."""
    ordered = {}
    for name in METRICS:
        if name in metrics:
            value = float(metrics[name])
            if not math.isfinite(value):
                raise RuntimeError(f"language-model metric {name} is not finite ({value})")
            ordered[name] = value
    return ordered


def _perplexity(nll: float) -> float:
    """exp(nll); inf (reported as not finite) past float64's range instead of an OverflowError."""
    return math.exp(nll) if nll < math.log(np.finfo(np.float64).max) else math.inf


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def evaluate(student, arrays: dict, split: str, *, teacher=None, truth=None, n_samples: int = 64, sample_seed: int,
             batch_size: int = 256, device="cpu") -> dict[str, float]:
    """The module docstring's metrics of `student` on `tokens_<split>` (METRICS order; those
    needing a teacher or the truth only when given; n_samples = 0 skips generation).

    student, teacher: modules ids (batch, length) -> logits (batch, length, vocab_size),
    already on `device`; truth: hmm.HiddenMarkovModel or None. batch_size sequences are scored
    at a time: memory ~ 4 float64 tensors of batch_size * block * vocab_size (lower it for
    a large vocabulary). Runs under inference_mode with the models in eval mode and leaves
    each module's mode as it found it.
    """
    tokens, vocab_size, bos = split_tokens(arrays, split)
    _check_count("batch_size", batch_size, 1)
    _check_count("n_samples", n_samples, 0)
    if truth is not None:
        _check_truth(truth, vocab_size, bos)
    block = tokens.shape[1] - 1
    device = torch.device(device)
    totals = {name: torch.zeros((), dtype=torch.float64, device=device) for name in ("nll", "agreement", "kl_teacher")}
    kl_truth_total = 0.0
    with _evaluating(student, teacher), torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            batch = torch.from_numpy(tokens[start:start + batch_size]).to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            log_s = _log_probs(student, inputs, vocab_size, "student")
            totals["nll"] -= log_s.gather(-1, targets.unsqueeze(-1)).sum()
            if teacher is not None:
                log_t = _log_probs(teacher, inputs, vocab_size, "teacher")
                totals["agreement"] += (log_s.argmax(-1) == log_t.argmax(-1)).sum()
                totals["kl_teacher"] += _kl(log_t, log_s).sum()
            if truth is not None:
                numpy_targets = tokens[start:start + batch_size, 1:]
                true_probs = _truth_probs(truth, numpy_targets, vocab_size, bos)
                kl_truth_total += float(hmm_lib.per_token_kl(true_probs, log_s.cpu().numpy()).sum())
        positions = tokens.shape[0] * block
        metrics = {"nll": totals["nll"].item() / positions}
        metrics["perplexity"] = _perplexity(metrics["nll"])
        if teacher is not None:
            metrics["agreement"] = totals["agreement"].item() / positions
            metrics["kl_teacher"] = totals["kl_teacher"].item() / positions
        if truth is not None:
            metrics["kl_truth"] = kl_truth_total / positions
        if n_samples:
            # sample() needs the generator on the ids' device: CPU and CUDA draws differ.
            generator = torch.Generator(device=device).manual_seed(sample_seed)
            samples = sample(student, int(n_samples), block, bos=bos, generator=generator, device=device)
            metrics.update(_sample_metrics(samples, teacher, truth, block, vocab_size, batch_size, device))
    return _finite(metrics)


def _sample_metrics(samples: torch.Tensor, teacher, truth, block: int, vocab_size: int, batch_size: int,
                    device) -> dict[str, float]:
    """sample_teacher_nll, sample_true_nll, distinct_2 and sample_entropy of (n, block + 1) samples."""
    expected = (samples.shape[0], block + 1)
    if tuple(samples.shape) != expected:
        raise RuntimeError(f"sample returned ids shaped {tuple(samples.shape)}, expected {expected}")
    generated = samples[:, 1:].cpu().numpy()
    metrics = {"distinct_2": distinct_n(generated, 2), "sample_entropy": unigram_entropy(generated)}
    if teacher is not None:
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size].to(device)
            log_t = _log_probs(teacher, batch[:, :-1], vocab_size, "teacher")
            total -= log_t.gather(-1, batch[:, 1:].unsqueeze(-1)).sum()
        metrics["sample_teacher_nll"] = total.item() / generated.size
    if truth is not None:
        metrics["sample_true_nll"] = float(np.mean(-hmm_lib.sequence_log_prob(truth, generated) / block))
    return metrics


def oracle(truth, arrays: dict, split: str, *, n_samples: int, sample_seed: int) -> dict[str, float]:
    """The metrics of the truth itself (the oracle teacher): nll and perplexity of the split
    under the hidden Markov model, kl_truth = 0, and the generation metrics of n_samples
    hmm.sample draws of length block (numpy default_rng(sample_seed)); no teacher metrics."""
    tokens, vocab_size, bos = split_tokens(arrays, split)
    _check_truth(truth, vocab_size, bos)
    _check_count("n_samples", n_samples, 0)
    block = tokens.shape[1] - 1
    nll = float(-hmm_lib.token_log_probs(truth, tokens[:, 1:]).mean())
    metrics = {"nll": nll, "perplexity": _perplexity(nll), "kl_truth": 0.0}
    if n_samples:
        generated = hmm_lib.sample(truth, n_samples, block, np.random.default_rng(sample_seed))
        metrics.update({"sample_true_nll": float(np.mean(-hmm_lib.sequence_log_prob(truth, generated) / block)),
                        "distinct_2": distinct_n(generated, 2), "sample_entropy": unigram_entropy(generated)})
    return _finite(metrics)


#: The splits every language model is scored on (validation selects, test reports).
EVAL_SPLITS = ("val", "test")


def sample_seed(global_seed: int, dataset: str, split: str) -> int:
    """The generation metrics' sampling seed: the same for every model of a dataset and split
    (teacher, oracle, every cell and replicate), so their samples are paired draws."""
    return derive_seed(global_seed, "lm-samples", dataset, split)


def truth_of(arrays: dict):
    """The true language of a synthetic_lm dataset (its HMM), None for text."""
    return hmm_lib.HiddenMarkovModel(arrays["hmm_initial"], arrays["hmm_transition"], arrays["hmm_emission"]) \
        if "hmm_emission" in arrays else None
