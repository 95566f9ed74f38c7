"""Metric functions against scikit-learn where it has them, by hand where it does not."""

import numpy as np
import pytest
from sklearn import metrics as skm
from distillstudy.analysis import metrics


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4)) * 2
    y = rng.integers(0, 4, size=200)
    return logits, y


def test_accuracy_and_nll_match_sklearn(sample):
    logits, y = sample
    probs = metrics.softmax(logits)
    assert metrics.accuracy(logits, y) == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert metrics.nll(logits, y) == pytest.approx(skm.log_loss(y, probs, labels=range(4)), rel=1e-10)


def test_brier_matches_sklearn_multiclass(sample):
    logits, y = sample
    probs = metrics.softmax(logits)
    expected = skm.brier_score_loss(y, probs, labels=range(4), scale_by_half=False)
    assert metrics.brier(logits, y) == pytest.approx(expected, rel=1e-10)


def test_ece_hand_computed():
    # Two classes. Confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right):
    # bin (0.8667, 0.9333]: |0.5 - 0.9| * 2; bin (0.5333, 0.6]: |1 - 0.6| * 1 -> (0.8 + 0.4) / 3.
    logit = lambda p: np.log(p / (1 - p))
    logits = np.array([[0, logit(0.9)], [0, logit(0.9)], [0, logit(0.6)]])
    y = np.array([1, 0, 1])
    assert metrics.ece(logits, y, n_bins=15) == pytest.approx(0.4, rel=1e-9)


def test_agreement_kl_and_confidence():
    t = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    s = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert metrics.agreement(s, t) == pytest.approx(2 / 3)
    assert metrics.kl_teacher_student(t, t) == pytest.approx(0.0, abs=1e-15)
    assert metrics.kl_teacher_student(s, t) > 0
    assert metrics.mean_max_prob(np.array([[0.0, 0.0]])) == pytest.approx(0.5)
