"""KD loss against hand-computed values and its limits (alpha edges, T -> infinity)."""

import math

import pytest
import torch
from distillstudy.engine import losses


def test_kd_loss_matches_hand_computed_value():
    # s = [1, 0], t = [0, 1], y = 0, T = 2, alpha = 0.5.
    # CE = log(1 + e^-1). At T = 2: p = softmax([0, .5]), q = softmax([.5, 0]), and
    # log(p1/p0) = log(q0/q1) = 0.5, so KL(p||q) = (p1 - p0) * 0.5 with p1 = sigmoid(.5).
    ce = math.log(1 + math.exp(-1))
    p1 = 1 / (1 + math.exp(-0.5))
    kl = (p1 - (1 - p1)) * 0.5
    expected = 0.5 * ce + 0.5 * 4 * kl
    s = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    got = losses.kd_loss(s, t, y, alpha=0.5, temperature=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.4015494, abs=1e-6)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_soft_term():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 8, 5, generator=g, dtype=torch.float64), torch.randn(2, 8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 8), generator=g)
    ce = torch.nn.functional.cross_entropy(s.reshape(-1, 5), y.reshape(-1), reduction="none").reshape(2, 8).mean(-1)
    assert torch.allclose(losses.kd_loss(s, t, y, 0.0, 3.0), ce)
    assert torch.allclose(losses.kd_loss(s, t, y, 1.0, 3.0), losses.soft_kl(s, t, 3.0))


def test_soft_term_is_batch_mean_kl_times_t_squared():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    T = 4.0
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1),
                                    reduction="batchmean", log_target=True)
    assert losses.soft_kl(s, t, T).item() == pytest.approx(T * T * kl.item(), rel=1e-12)


def test_high_temperature_limit_is_centred_logit_mse():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randn(16, 10, generator=g, dtype=torch.float64)
    mse = losses.centred_logit_mse(s, t).item()
    assert losses.soft_kl(s, t, 1e4).item() == pytest.approx(mse, rel=1e-4)
    # ...and far from it at T = 1, so the test can fail.
    assert abs(losses.soft_kl(s, t, 1.0).item() - mse) > 1e-2 * mse


def test_logit_mse_ignores_a_constant_shift_and_stacks_per_model():
    s = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]], dtype=torch.float64)
    t = s + 7.0
    y = torch.tensor([[0], [1]])
    soft_only = losses.logit_mse_loss(s, t, y, alpha=1.0)
    assert soft_only.shape == (2,)
    assert torch.allclose(soft_only, torch.zeros(2, dtype=torch.float64))
