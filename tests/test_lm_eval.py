"""distillstudy.engine.lm_eval: every metric against an independent computation on a tiny
hidden Markov language (vocab 3, states 2, length 4): the exact KL to the truth against
brute-force enumeration of hidden paths, the truth as a model (KL 0, its NLL), a teacher
equal to the student, the sample metrics recomputed by hand, determinism and errors."""

import itertools
import math

import numpy as np
import pytest
import torch
from distillstudy.engine import hmm as H
from distillstudy.engine import lm_eval as E
from distillstudy.engine.gpt import gpt, sample

VOCAB, STATES, BLOCK = 3, 2, 4
BOS, VOCAB_SIZE = VOCAB, VOCAB + 1


@pytest.fixture(scope="module")
def truth():
    return H.random_hmm(VOCAB, STATES, np.random.default_rng(3), transition_concentration=0.5,
                        emission_concentration=0.5)


@pytest.fixture(scope="module")
def arrays(truth):
    """A prepared-npz-like dict: 7 sequences of the HMM behind a bos column."""
    sequences = H.sample(truth, 7, BLOCK, np.random.default_rng(11))
    tokens = np.concatenate([np.full((len(sequences), 1), BOS), sequences], axis=1)
    return {"tokens_test": tokens, "vocab_size": np.array(VOCAB_SIZE), "bos": np.array(BOS)}


class TruthLM(torch.nn.Module):
    """The exact next-token log-probabilities as logits (-inf at bos), for any bos-led ids."""

    def __init__(self, truth):
        super().__init__()
        self.truth = truth

    def forward(self, ids):
        sequences = ids[:, 1:].cpu().numpy()
        # One dummy token makes `length` positions; position i depends only on tokens < i.
        padded = np.concatenate([sequences, np.zeros((len(ids), 1), dtype=np.int64)], axis=1)
        probs = np.insert(H.next_token_probs(self.truth, padded), BOS, 0.0, axis=-1)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(probs))


class BigramLM(torch.nn.Module):
    """Logits = table[last token]: a fixed table (vocab_size, vocab_size), known to the test."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float64))
        self.inner = torch.nn.Dropout(0.0)
        self.modes_seen = []

    def forward(self, ids):
        self.modes_seen.append((self.training, self.inner.training))
        return self.table[ids]


def bigram(seed, scale=1.0):
    return BigramLM(scale * np.random.default_rng(seed).normal(size=(VOCAB_SIZE, VOCAB_SIZE)))


def log_softmax_rows(table):
    table = np.asarray(table, dtype=np.float64)
    return table - np.log(np.exp(table).sum(axis=-1, keepdims=True))


def brute_force_conditional(truth, prefix):
    """p(x_k = . | x_<k = prefix) by summing p(prefix, v) over every hidden path explicitly."""
    def joint(x):
        total = 0.0
        for z in itertools.product(range(truth.states), repeat=len(x)):
            p = truth.initial[z[0]] * truth.emission[z[0], x[0]]
            for i in range(1, len(x)):
                p *= truth.transition[z[i - 1], z[i]] * truth.emission[z[i], x[i]]
            total += p
        return total
    numerators = np.array([joint(tuple(prefix) + (v,)) for v in range(truth.vocab)])
    return numerators / numerators.sum()


@pytest.mark.parametrize("student_table", ["uniform", "bigram"])
def test_kl_truth_and_nll_equal_brute_force_enumeration(truth, arrays, student_table):
    table = np.zeros((VOCAB_SIZE, VOCAB_SIZE)) if student_table == "uniform" else bigram(5).table.detach().numpy()
    log_q = log_softmax_rows(table)
    kls, nlls = [], []
    for row in arrays["tokens_test"]:
        for i in range(BLOCK):  # predict row[i + 1] from the prefix row[1 : i + 1] (length <= 3) after bos
            p = brute_force_conditional(truth, row[1:i + 1])
            q = log_q[row[i]]
            kls.append(float(np.sum(p * (np.log(p) - q[:VOCAB]))))  # bos has p = 0: no term
            nlls.append(-q[row[i + 1]])
    metrics = E.evaluate(BigramLM(table), arrays, "test", truth=truth, n_samples=0, sample_seed=0)
    assert metrics["kl_truth"] == pytest.approx(np.mean(kls), abs=1e-12)
    assert metrics["nll"] == pytest.approx(np.mean(nlls), abs=1e-12)
    assert metrics["perplexity"] == pytest.approx(math.exp(np.mean(nlls)), rel=1e-12)
    if student_table == "uniform":
        assert metrics["nll"] == pytest.approx(math.log(VOCAB_SIZE), abs=1e-12)
    assert metrics["kl_truth"] > 0.01


def test_the_truth_as_student_has_zero_kl_and_the_true_nll(truth, arrays):
    metrics = E.evaluate(TruthLM(truth), arrays, "test", truth=truth, n_samples=8, sample_seed=1)
    true_nll = -H.token_log_probs(truth, arrays["tokens_test"][:, 1:]).mean()
    assert metrics["kl_truth"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["nll"] == pytest.approx(true_nll, abs=1e-12)
    best = E.oracle(truth, arrays, "test", n_samples=8, sample_seed=1)
    assert list(best) == ["nll", "perplexity", "kl_truth", "sample_true_nll", "distinct_2", "sample_entropy"]
    assert best["nll"] == pytest.approx(metrics["nll"], abs=1e-12) and best["kl_truth"] == 0.0
    assert best["perplexity"] == pytest.approx(math.exp(true_nll), rel=1e-12)
    draws = H.sample(truth, 8, BLOCK, np.random.default_rng(1))
    assert best["sample_true_nll"] == pytest.approx(np.mean(-H.sequence_log_prob(truth, draws) / BLOCK), abs=1e-12)
    assert best["distinct_2"] == E.distinct_n(draws, 2) and best["sample_entropy"] == E.unigram_entropy(draws)


def test_teacher_equal_to_student_agrees_everywhere(arrays):
    student = bigram(2)
    metrics = E.evaluate(student, arrays, "test", teacher=student, n_samples=4, sample_seed=0)
    assert metrics["agreement"] == 1.0
    assert metrics["kl_teacher"] == pytest.approx(0.0, abs=1e-12)


def test_teacher_metrics_against_numpy(truth, arrays):
    student, teacher = bigram(2), bigram(5, scale=3.0)
    log_s, log_t = log_softmax_rows(student.table.detach()), log_softmax_rows(teacher.table.detach())
    inputs = arrays["tokens_test"][:, :-1]
    kl = (np.exp(log_t[inputs]) * (log_t[inputs] - log_s[inputs])).sum(-1).mean()
    agreement = (log_s[inputs].argmax(-1) == log_t[inputs].argmax(-1)).mean()
    metrics = E.evaluate(student, arrays, "test", teacher=teacher, truth=truth, n_samples=5, sample_seed=7,
                         batch_size=3)
    assert metrics["kl_teacher"] == pytest.approx(kl, abs=1e-12) and metrics["kl_teacher"] > 0.01
    assert metrics["agreement"] == pytest.approx(agreement, abs=1e-12) and 0 < metrics["agreement"] < 1
    # The sample metrics recomputed from the same draws (same seed -> same samples).
    samples = sample(student, 5, BLOCK, bos=BOS, generator=torch.Generator().manual_seed(7)).numpy()
    generated = samples[:, 1:]
    assert generated.shape == (5, BLOCK) and not np.any(generated == BOS)
    teacher_nll = -log_t[samples[:, :-1], generated].mean()
    assert metrics["sample_teacher_nll"] == pytest.approx(teacher_nll, abs=1e-12)
    assert metrics["sample_true_nll"] == pytest.approx(np.mean(-H.sequence_log_prob(truth, generated) / BLOCK),
                                                       abs=1e-12)
    assert metrics["distinct_2"] == E.distinct_n(generated, 2)
    assert metrics["sample_entropy"] == E.unigram_entropy(generated)
    assert list(metrics) == list(E.METRICS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert set(E.LOWER_IS_BETTER) < set(E.METRICS)


def test_distinct_2_and_sample_entropy_on_hand_made_samples():
    tokens = np.array([[0, 1, 0, 2], [1, 1, 1, 1]])
    # Bigrams (0,1) (1,0) (0,2) | (1,1) x3: 4 distinct of 6; (2,1) across rows does not count.
    assert E.distinct_n(tokens, 2) == pytest.approx(4 / 6)
    assert E.distinct_n(np.array([[0, 1, 2, 0, 1, 2]]), 2) == pytest.approx(3 / 5)
    counts = np.array([2, 5, 1]) / 8
    assert E.unigram_entropy(tokens) == pytest.approx(-(counts * np.log(counts)).sum(), abs=1e-15)
    assert E.unigram_entropy(np.zeros((3, 4), dtype=int)) == 0.0


def test_deterministic_batch_independent_and_modes_restored(truth, arrays):
    student, teacher = bigram(2), bigram(4)
    student.train()
    teacher.eval()
    teacher.inner.train()  # a mixed-mode module comes back mixed
    first = E.evaluate(student, arrays, "test", teacher=teacher, truth=truth, n_samples=6, sample_seed=3)
    again = E.evaluate(student, arrays, "test", teacher=teacher, truth=truth, n_samples=6, sample_seed=3,
                       batch_size=1)
    assert set(student.modes_seen) == {(False, False)} and set(teacher.modes_seen) == {(False, False)}
    assert student.training and student.inner.training
    assert not teacher.training and teacher.inner.training
    assert first.keys() == again.keys()
    for name in first:
        assert again[name] == pytest.approx(first[name], abs=1e-12), name
    assert E.evaluate(student, arrays, "test", teacher=teacher, truth=truth, n_samples=6, sample_seed=3) == first


def test_the_built_in_gpt_end_to_end(truth, arrays):
    """The real model (KV-cache sampling): every metric present, finite, deterministic."""
    torch.manual_seed(0)
    student = gpt(VOCAB_SIZE, BLOCK, 16)
    metrics = E.evaluate(student, arrays, "test", teacher=bigram(2), truth=truth, n_samples=4, sample_seed=0)
    assert list(metrics) == list(E.METRICS)
    assert metrics == E.evaluate(student, arrays, "test", teacher=bigram(2), truth=truth, n_samples=4, sample_seed=0)


def test_non_finite_metrics_and_bad_input_are_refused(truth, arrays):
    table = np.zeros((VOCAB_SIZE, VOCAB_SIZE))
    table[:, 0] = -np.inf  # the student rules out a token the data uses
    with pytest.raises(RuntimeError, match="nll"):
        E.evaluate(BigramLM(table), arrays, "test", n_samples=0, sample_seed=0)
    bad = dict(arrays, tokens_test=arrays["tokens_test"].copy())
    bad["tokens_test"][2, 3] = VOCAB_SIZE
    with pytest.raises(ValueError, match="row 2, column 3"):
        E.evaluate(bigram(0), bad, "test", n_samples=0, sample_seed=0)
    with pytest.raises(KeyError, match="tokens_val"):
        E.evaluate(bigram(0), arrays, "val", n_samples=0, sample_seed=0)
    with pytest.raises(ValueError, match="vocab_size must be 4"):
        E.oracle(truth, dict(arrays, vocab_size=np.array(5)), "test", n_samples=2, sample_seed=0)
