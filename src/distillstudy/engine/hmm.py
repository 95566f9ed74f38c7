"""The `synthetic_lm` language: a random hidden Markov model whose next-token
probabilities are known exactly.

A hidden state z_i in {0..states-1} follows a Markov chain and emits a token x_i in
{0..vocab-1}:

    p(z_0) = initial,  p(z_{i+1} = k | z_i = j) = transition[j, k],  p(x_i = v | z_i = j) = emission[j, v].

The true next-token distribution p(x_i | x_<i) is exact by the forward algorithm
(Rabiner 1989, "A tutorial on hidden Markov models", Proc. IEEE 77(2), with his
per-step scaling): so a language model trained on samples can be scored against the
truth (exact KL(truth || model) per token, exact log-likelihood of its samples), and the
truth itself serves as the oracle teacher.

Convention: true_probs[:, i] = p(x_i = . | x_<i), for i = 0..length-1 (position 0 is
p(x_0), the unconditional first-token distribution). A causal LM whose output at
position i predicts token i from tokens < i (a BOS-prefixed model, or the shift by one
of any causal LM) is scored at every position.

    rng = np.random.default_rng(0)
    hmm = random_hmm(vocab=32, states=16, rng=rng)
    tokens = sample(hmm, n_sequences=4000, length=32, rng=rng)       # int64 (4000, 32)
    truth = next_token_probs(hmm, tokens)                            # float64 (4000, 32, 32)
    kl = per_token_kl(truth, model_log_probs)                        # float64 (4000, 32)

The HMM's arrays save to and load from an npz: HiddenMarkovModel(**np.load(path)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_SUM_TOLERANCE = 1e-9  # rows of the HMM's distributions must sum to 1 within this
LOG_NORMALISATION_TOLERANCE = 1e-3  # |logsumexp| a model's log-probabilities may show (float32 rounding)


def _distribution_rows(name, array, shape):
    """`array` as a read-only float64 copy, checked to be `shape` rows of probabilities."""
    a = np.array(array, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"hidden Markov model: {name} must be shaped {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"hidden Markov model: {name} has negative or non-finite entries")
    sums = a.sum(axis=-1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad.size:
        where = f"row {bad[0]}" if a.ndim == 2 else "it"
        raise ValueError(f"hidden Markov model: {name} {where} sums to {np.ravel(sums)[bad[0]]!r}, not 1")
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class HiddenMarkovModel:
    """A hidden Markov language. initial (states,) = p(z_0); transition (states, states),
    row j = p(z_{i+1} | z_i = j); emission (states, vocab), row j = p(x_i | z_i = j).
    Stored as read-only float64 copies, checked on construction."""

    initial: np.ndarray
    transition: np.ndarray
    emission: np.ndarray

    def __post_init__(self):
        emission = np.asarray(self.emission)
        if emission.ndim != 2 or emission.shape[0] < 1 or emission.shape[1] < 2:
            raise ValueError(f"hidden Markov model: emission must be shaped (states >= 1, vocab >= 2), "
                             f"got {emission.shape}")
        states, vocab = emission.shape
        object.__setattr__(self, "initial", _distribution_rows("initial", self.initial, (states,)))
        object.__setattr__(self, "transition", _distribution_rows("transition", self.transition, (states, states)))
        object.__setattr__(self, "emission", _distribution_rows("emission", emission, (states, vocab)))

    @property
    def states(self) -> int:
        return self.emission.shape[0]

    @property
    def vocab(self) -> int:
        return self.emission.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """The three arrays by field name (what an npz stores; HiddenMarkovModel(**them) rebuilds it)."""
        return {"initial": self.initial, "transition": self.transition, "emission": self.emission}


def random_hmm(vocab: int, states: int, rng: np.random.Generator | int, *, transition_concentration: float = 0.05,
               emission_concentration: float = 0.05, smoothing: float = 1e-3) -> HiddenMarkovModel:
    """A random HMM: each transition row ~ Dirichlet(transition_concentration), each emission
    row ~ Dirichlet(emission_concentration), the initial distribution ~ Dirichlet(1).

    Concentrations below 1 make sparse-ish rows: each state moves to a few states and emits
    a few tokens, so the language has structure to learn without being deterministic.
    Measured at the defaults, vocab 32, states 16, length 32, seeds 0-4: the true
    per-token entropy is 2.0-2.3 nats, a bigram model's about 2.35, the unigram entropy
    about 3.0 and log(vocab) 3.47; about 11 states are occupied in the long run and
    30-32 tokens are used. So the context beyond the last token matters (the hidden state),
    which a student must learn from long prefixes. Concentrations 0.3 / 0.1 gave a
    language whose true entropy was within 0.16 nats of its unigram entropy (too flat).
    Each transition and emission row is then mixed with the uniform distribution at weight
    `smoothing`, so every token sequence has positive probability: the true log-likelihood
    of any model's samples is finite. Draws from `rng` (a numpy Generator, or a seed) in a
    fixed order: the same seed gives the same HMM.
    """
    for key, value in (("vocab", vocab), ("states", states)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (2 if key == "vocab" else 1):
            raise ValueError(f"random_hmm: {key} must be an integer >= {2 if key == 'vocab' else 1}, got {value!r}")
    for key, value in (("transition_concentration", transition_concentration),
                       ("emission_concentration", emission_concentration)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"random_hmm: {key} must be a finite number > 0, got {value!r}")
    if not 0 <= smoothing <= 1:
        raise ValueError(f"random_hmm: smoothing must be in [0, 1], got {smoothing!r}")
    rng = np.random.default_rng(rng)
    initial = rng.dirichlet(np.ones(states))
    transition = rng.dirichlet(np.full(states, float(transition_concentration)), size=states)
    emission = rng.dirichlet(np.full(vocab, float(emission_concentration)), size=states)

    def smoothed(rows):  # a Dirichlet draw with a tiny concentration can be all zeros but one
        rows = (1 - smoothing) * rows + smoothing / rows.shape[-1]
        return rows / rows.sum(axis=-1, keepdims=True)

    return HiddenMarkovModel(initial=initial, transition=smoothed(transition), emission=smoothed(emission))


def _draw(cdf_rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """One index per row by inversion: the first k with cdf[k] > u (clipped against rounding)."""
    return np.minimum((cdf_rows <= uniforms[:, None]).sum(axis=1), cdf_rows.shape[1] - 1)


def sample(hmm: HiddenMarkovModel, n_sequences: int, length: int, rng: np.random.Generator | int) -> np.ndarray:
    """n_sequences independent token sequences of `length`: int64 (n_sequences, length).

    All sequences advance together, one position at a time; each position draws one
    uniform per sequence for the token, then one for the next state. Same rng state ->
    same tokens.
    """
    for key, value in (("n_sequences", n_sequences), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"sample: {key} must be an integer >= 1, got {value!r}")
    rng = np.random.default_rng(rng)
    transition_cdf, emission_cdf = np.cumsum(hmm.transition, axis=1), np.cumsum(hmm.emission, axis=1)
    tokens = np.empty((n_sequences, length), dtype=np.int64)
    state = _draw(np.broadcast_to(np.cumsum(hmm.initial), (n_sequences, hmm.states)), rng.random(n_sequences))
    for i in range(length):
        tokens[:, i] = _draw(emission_cdf[state], rng.random(n_sequences))
        if i + 1 < length:
            state = _draw(transition_cdf[state], rng.random(n_sequences))
    return tokens


def _checked_tokens(hmm: HiddenMarkovModel, tokens) -> np.ndarray:
    """Tokens as int64 (n, length), every id in [0, vocab), or a ValueError naming the first bad one."""
    array = np.asarray(tokens)
    if array.ndim != 2 or array.shape[1] < 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integers shaped (n_sequences, length >= 1), got {array.dtype} "
                         f"{array.shape}")
    bad = np.argwhere((array < 0) | (array >= hmm.vocab))
    if bad.size:
        n, i = bad[0]
        raise ValueError(f"token id {array[n, i]} at sequence {n}, position {i} is out of range for vocab "
                         f"{hmm.vocab}")
    return array.astype(np.int64, copy=False)


def _forward(hmm: HiddenMarkovModel, tokens: np.ndarray, keep_probs: bool):
    """The scaled forward pass. Returns (log p(x_i | x_<i) (n, length), the next-token
    distributions (n, length, vocab) or None).

    belief = p(z_i | x_<i) is kept normalised at every step (Rabiner's scaling), so
    nothing underflows however long the sequence: the normaliser of
    p(z_i, x_i | x_<i) = belief * emission[:, x_i] is exactly p(x_i | x_<i).
    """
    n, length = tokens.shape
    belief = np.broadcast_to(hmm.initial, (n, hmm.states))
    log_probs = np.empty((n, length))
    probs = np.empty((n, length, hmm.vocab)) if keep_probs else None
    for i in range(length):
        if keep_probs:
            probs[:, i] = belief @ hmm.emission
        joint = belief * hmm.emission[:, tokens[:, i]].T  # p(z_i, x_i | x_<i)
        p_token = joint.sum(axis=1)
        impossible = np.flatnonzero(p_token <= 0)
        if impossible.size:
            raise ValueError(f"token {tokens[impossible[0], i]} at sequence {impossible[0]}, position {i} has "
                             "probability 0 under the hidden Markov model (its conditionals after it are "
                             "undefined; random_hmm's smoothing > 0 rules this out)")
        log_probs[:, i] = np.log(p_token)
        belief = (joint / p_token[:, None]) @ hmm.transition  # p(z_{i+1} | x_<=i)
    return log_probs, probs


def next_token_probs(hmm: HiddenMarkovModel, tokens) -> np.ndarray:
    """The true next-token distributions: float64 (n, length, vocab) with
    [:, i] = p(x_i = . | x_<i) (position 0: p(x_0)). Each row sums to 1."""
    return _forward(hmm, _checked_tokens(hmm, tokens), keep_probs=True)[1]


def token_log_probs(hmm: HiddenMarkovModel, tokens) -> np.ndarray:
    """log p(x_i | x_<i) of each given token: float64 (n, length) (the true per-token NLL is minus this)."""
    return _forward(hmm, _checked_tokens(hmm, tokens), keep_probs=False)[0]


def sequence_log_prob(hmm: HiddenMarkovModel, tokens) -> np.ndarray:
    """log p(x_0, ..., x_{length-1}) of each sequence: float64 (n,), the sum of token_log_probs."""
    return token_log_probs(hmm, tokens).sum(axis=1)


def per_token_kl(true_probs, model_log_probs) -> np.ndarray:
    """Exact KL(truth || model) at each position: float64 (n, length),

        KL_i = sum_v p(v | x_<i) (log p(v | x_<i) - log q(v | x_<i)),   0 log 0 = 0,

    from true_probs = next_token_probs(...) and the model's normalised log-probabilities
    (log_softmax of its logits, aligned the same way: [:, i] predicts token i), both
    (n, length, vocab). +inf where the model gives -inf to a token the truth allows.
    Average it over positions for the per-token KL of a model.
    """
    p = np.asarray(true_probs, dtype=np.float64)
    log_q = np.asarray(model_log_probs, dtype=np.float64)
    if p.ndim != 3 or log_q.shape != p.shape:
        raise ValueError(f"per_token_kl: true_probs and model_log_probs must both be shaped (n, length, vocab); "
                         f"got {p.shape} and {log_q.shape}")
    if np.any(p < 0) or np.any(np.abs(p.sum(axis=-1) - 1) > 1e-6):
        raise ValueError("per_token_kl: true_probs rows must be probability distributions (next_token_probs)")
    peak = np.max(log_q, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_total = np.squeeze(peak, -1) + np.log(np.exp(log_q - peak).sum(axis=-1))
    off = np.abs(log_total) > LOG_NORMALISATION_TOLERANCE
    if np.any(off | np.isnan(log_total)):
        n, i = np.argwhere(off | np.isnan(log_total))[0]
        raise ValueError(f"per_token_kl: model_log_probs at sequence {n}, position {i} are not normalised "
                         f"(logsumexp {log_total[n, i]:.3g}); pass log_softmax of the logits, not the logits")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - log_q), 0.0)
    return terms.sum(axis=-1)
