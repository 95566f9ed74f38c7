"""distillstudy.engine.hmm: the forward algorithm against brute-force enumeration of every
hidden path, the samples against the true marginals, the exact KL against the chain rule,
determinism and errors."""

import itertools
import math

import numpy as np
import pytest
from distillstudy.engine import hmm as H


def tiny(seed=0, vocab=3, states=2):
    """A small HMM with visible structure (concentrations 0.5: not near uniform)."""
    return H.random_hmm(vocab, states, np.random.default_rng(seed), transition_concentration=0.5,
                        emission_concentration=0.5)


def brute_force_joint(model, length):
    """p(x) for every token sequence of `length`, summing over every hidden path explicitly:
    {sequence tuple: probability}."""
    joint = {}
    for x in itertools.product(range(model.vocab), repeat=length):
        total = 0.0
        for z in itertools.product(range(model.states), repeat=length):
            p = model.initial[z[0]] * model.emission[z[0], x[0]]
            for i in range(1, length):
                p *= model.transition[z[i - 1], z[i]] * model.emission[z[i], x[i]]
            total += p
        joint[x] = total
    return joint


def prefix_probability(joint, prefix):
    """p(x_<k = prefix): the joint summed over every continuation."""
    return sum(p for x, p in joint.items() if x[: len(prefix)] == tuple(prefix))


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_algorithm_equals_enumeration_of_hidden_paths(seed):
    model, length = tiny(seed), 4
    joint = brute_force_joint(model, length)
    tokens = np.array(list(joint), dtype=np.int64)  # all 81 sequences
    assert sum(joint.values()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(H.sequence_log_prob(model, tokens), np.log(list(joint.values())), rtol=0, atol=1e-12)
    probs = H.next_token_probs(model, tokens)
    assert probs.shape == (81, length, 3) and probs.dtype == np.float64
    for n, x in enumerate(joint):
        for i in range(length):
            before = prefix_probability(joint, x[:i])
            expected = [prefix_probability(joint, x[:i] + (v,)) / before for v in range(model.vocab)]
            np.testing.assert_allclose(probs[n, i], expected, rtol=0, atol=1e-12)
    # position 0 is p(x_0), the same for every sequence
    np.testing.assert_allclose(probs[:, 0], np.broadcast_to(model.initial @ model.emission, (81, 3)), atol=1e-15)


def test_probabilities_sum_to_one_and_token_log_probs_read_them():
    rng = np.random.default_rng(3)
    model = H.random_hmm(vocab=11, states=5, rng=rng)
    tokens = H.sample(model, 50, 20, rng)
    probs = H.next_token_probs(model, tokens)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-12)
    log_probs = H.token_log_probs(model, tokens)
    np.testing.assert_allclose(log_probs, np.log(np.take_along_axis(probs, tokens[..., None], -1)[..., 0]), atol=1e-12)
    np.testing.assert_allclose(H.sequence_log_prob(model, tokens), log_probs.sum(axis=1), atol=1e-12)


def test_long_sequences_do_not_underflow():
    """Scaling: a 3000-token sequence has probability far below the smallest float64."""
    rng = np.random.default_rng(4)
    model = H.random_hmm(vocab=32, states=16, rng=rng)
    tokens = H.sample(model, 3, 3000, rng)
    log_p = H.sequence_log_prob(model, tokens)
    assert np.all(np.isfinite(log_p)) and np.all(log_p < -1000)
    assert np.all(np.isfinite(H.next_token_probs(model, tokens)))


def test_samples_follow_the_true_marginals():
    model, length, n = tiny(5, vocab=4, states=3), 5, 20000
    tokens = H.sample(model, n, length, np.random.default_rng(6))
    assert tokens.dtype == np.int64 and tokens.shape == (n, length)
    state = model.initial
    for i in range(length):  # p(x_i) = initial A^i E
        marginal = state @ model.emission
        empirical = np.bincount(tokens[:, i], minlength=model.vocab) / n
        np.testing.assert_allclose(empirical, marginal, atol=0.02)  # ~5 standard errors
        # the law of total probability through the exact conditionals
        np.testing.assert_allclose(H.next_token_probs(model, tokens)[:, i].mean(axis=0), marginal, atol=0.02)
        state = state @ model.transition
    # and the joint: the samples' mean log-probability is minus the exact entropy (enumeration)
    joint = np.array(list(brute_force_joint(model, 3).values()))
    entropy = -(joint * np.log(joint)).sum()
    assert -H.sequence_log_prob(model, tokens[:, :3]).mean() == pytest.approx(entropy, abs=0.05)


def test_same_seed_same_language_and_samples():
    a, b = H.random_hmm(32, 16, np.random.default_rng(7)), H.random_hmm(32, 16, 7)
    for key in ("initial", "transition", "emission"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert np.array_equal(H.sample(a, 10, 8, 1), H.sample(b, 10, 8, np.random.default_rng(1)))
    assert not np.array_equal(H.sample(a, 10, 8, 1), H.sample(a, 10, 8, 2))
    assert not np.array_equal(a.transition, H.random_hmm(32, 16, 8).transition)
    rebuilt = H.HiddenMarkovModel(**a.arrays())  # what an npz round trip does
    assert np.array_equal(rebuilt.emission, a.emission) and rebuilt.vocab == 32 and rebuilt.states == 16
    with pytest.raises(ValueError):
        a.emission[0, 0] = 0.5  # read-only: the language cannot drift after it is made


def test_default_language_is_sparse_but_every_sequence_possible():
    model = H.random_hmm(32, 16, 0)
    assert model.emission.min() > 0 and model.transition.min() > 0
    # most mass on a few tokens per state (the Dirichlet's sparsity), not near uniform
    top3 = np.sort(model.emission, axis=1)[:, -3:].sum(axis=1)
    assert np.median(top3) > 0.8


def test_per_token_kl_is_exact_by_the_chain_rule():
    """E_{x ~ p} sum_i KL(p(. | x_<i) || q(. | x_<i)) = KL(p(x) || q(x)) over whole sequences;
    both sides by enumeration, the model q being another HMM."""
    truth, model, length = tiny(8), tiny(9), 4
    joint_p, joint_q = brute_force_joint(truth, length), brute_force_joint(model, length)
    tokens = np.array(list(joint_p), dtype=np.int64)
    kl = H.per_token_kl(H.next_token_probs(truth, tokens), np.log(H.next_token_probs(model, tokens)))
    assert kl.shape == (81, length) and np.all(kl >= 0)
    weights = np.array(list(joint_p.values()))
    sequence_kl = sum(p * (math.log(p) - math.log(joint_q[x])) for x, p in joint_p.items())
    assert (weights @ kl.sum(axis=1)) == pytest.approx(sequence_kl, rel=1e-10)
    assert sequence_kl > 1e-3
    truth_probs = H.next_token_probs(truth, tokens)
    np.testing.assert_allclose(H.per_token_kl(truth_probs, np.log(truth_probs)), 0.0, atol=1e-14)


def test_per_token_kl_edge_cases_and_errors():
    p = np.array([[[0.5, 0.5, 0.0]]])
    with np.errstate(divide="ignore"):
        log_q = np.log(np.array([[[0.25, 0.75, 0.0]]]))  # 0 log 0 = 0: the impossible token adds nothing
    assert H.per_token_kl(p, log_q)[0, 0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75))
    with np.errstate(divide="ignore"):
        assert H.per_token_kl(p, np.log(np.array([[[1.0, 0.0, 0.0]]])))[0, 0] == math.inf
    with pytest.raises(ValueError, match=r"sequence 0, position 0 are not normalised.*log_softmax"):
        H.per_token_kl(p, np.array([[[2.0, 1.0, 0.0]]]))
    with pytest.raises(ValueError, match="shaped"):
        H.per_token_kl(p, log_q[..., :2])
    with pytest.raises(ValueError, match="probability distributions"):
        H.per_token_kl(p * 2, log_q)


def test_bad_input_is_named():
    model = tiny(0)
    with pytest.raises(ValueError, match=r"token id 3 at sequence 1, position 2 is out of range for vocab 3"):
        H.next_token_probs(model, np.array([[0, 1, 2], [0, 1, 3]]))
    with pytest.raises(ValueError, match="integers shaped"):
        H.token_log_probs(model, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="integers shaped"):
        H.token_log_probs(model, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="transition row 1 sums to"):
        H.HiddenMarkovModel(initial=[0.5, 0.5], transition=[[1.0, 0.0], [0.5, 0.6]], emission=[[0.5, 0.5]] * 2)
    with pytest.raises(ValueError, match=r"initial must be shaped \(2,\)"):
        H.HiddenMarkovModel(initial=[1.0], transition=[[1.0, 0.0], [0.0, 1.0]], emission=[[0.5, 0.5]] * 2)
    with pytest.raises(ValueError, match="negative or non-finite"):
        H.HiddenMarkovModel(initial=[1.5, -0.5], transition=[[1.0, 0.0], [0.0, 1.0]], emission=[[0.5, 0.5]] * 2)
    sparse = H.HiddenMarkovModel(initial=[1.0], transition=[[1.0]], emission=[[1.0, 0.0]])
    with pytest.raises(ValueError, match="token 1 at sequence 0, position 1 has probability 0"):
        H.token_log_probs(sparse, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="vocab must be an integer >= 2"):
        H.random_hmm(1, 2, 0)
    with pytest.raises(ValueError, match="transition_concentration"):
        H.random_hmm(3, 2, 0, transition_concentration=0.0)
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        H.sample(model, 3, 0, 0)
