"""The generic stacked teacher trainer (engine/stacked.py): a member of a stack trains
exactly as it would alone (float64), reruns are bit-identical (float32), members do not
influence each other, and random operations other than nn.Dropout fail loudly.

Tiny data and models: each test runs in a second or two on one core.
"""

import numpy as np
import pytest
import torch
from torch import nn

from distillstudy.engine import models, runtime, stacked
from distillstudy.engine.train import train_teacher

N_FEATURES, N_CLASSES = 12, 3


@pytest.fixture(autouse=True)
def one_thread():
    """As the stages run (runtime.configure): two threads stall when the other core is busy
    (measured here: a 0.1 s test took 12 s) and would change the bits between runs."""
    runtime.configure(1)


def problem(n, seed, dtype=torch.float64):
    """Inputs whose class sets which bump they carry, plus noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    t = torch.arange(N_FEATURES, dtype=dtype)
    x = torch.exp(-0.5 * (t - 3.0 * (y[:, None] + 1)) ** 2) + 0.3 * torch.randn(n, N_FEATURES, generator=g, dtype=dtype)
    return x, y


def cnn(dtype=torch.float64, dropout=0.3):
    def make():
        return models.CNN1D(N_FEATURES, N_CLASSES, 2, np.zeros(N_FEATURES), np.ones(N_FEATURES), dropout).to(dtype)
    return make


def mlp(dtype=torch.float64, dropout=0.3):
    def make():
        return models.WideMLP(N_FEATURES, N_CLASSES, 8, np.zeros(N_FEATURES), np.ones(N_FEATURES), dropout).to(dtype)
    return make


KNOBS = {"max_epochs": 12, "batch_size": 16, "lr": 0.02, "weight_decay": 1e-4, "patience": 1}
SEEDS = [3, 17, 40]


def train(factory, seeds, sets, val, **over):
    return stacked.train_stack(factory, seeds, sets, val, run_name="test", **{**KNOBS, **over})


def assert_same_member(a: stacked.StackedFit, b: stacked.StackedFit, tol=1e-10):
    exact = {k for k, v in a.fit.items() if not isinstance(v, float)} - {"stack_size"}
    assert {k: a.fit[k] for k in exact} == {k: b.fit[k] for k in exact}  # epochs run, best epoch, selection
    for key in set(a.fit) - exact - {"stack_size"}:
        assert a.fit[key] == pytest.approx(b.fit[key], rel=0, abs=tol), key
    np.testing.assert_allclose(a.val_nll, b.val_nll, rtol=0, atol=tol)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=tol, msg=name)


@pytest.mark.parametrize("factory", [cnn(), mlp()], ids=["cnn1d", "wide_mlp"])
def test_a_stack_equals_each_member_trained_alone(factory):
    sets = [problem(50, s) for s in (1, 2, 3)]  # each member its own points
    val = problem(40, 9)
    together = train(factory, SEEDS, sets, val)
    epochs = [f.fit["epochs_run"] for f in together]
    assert len(set(epochs)) > 1 and min(epochs) < KNOBS["max_epochs"]  # they stop at different epochs
    # Stopped early, so the weights compared below are the restored best epoch's, not the last's.
    assert any(f.fit["best_epoch"] < f.fit["epochs_run"] for f in together)
    for seed, data, member in zip(SEEDS, sets, together):
        alone, = train(factory, [seed], [data], val)
        assert_same_member(member, alone)
        assert member.fit["stack_size"] == 3 and alone.fit["stack_size"] == 1
    # The init is the factory's after torch.manual_seed(seed), as TeacherFactory.build does.
    torch.manual_seed(SEEDS[0])
    fresh = factory()
    untrained, = train(factory, [SEEDS[0]], [sets[0]], val, max_epochs=0, select="last")
    for p, q in zip(fresh.parameters(), untrained.model.parameters()):
        assert torch.equal(p, q)


def test_last_epoch_selection_runs_every_epoch():
    sets, val = [problem(40, s) for s in (1, 2)], problem(30, 9)
    fits = train(mlp(), SEEDS[:2], sets, val, max_epochs=4, select="last")
    for f in fits:
        assert f.fit["epochs_run"] == 4 and len(f.val_nll) == 4 and f.fit["final_val_nll"] == f.val_nll[-1]
    alone, = train(mlp(), SEEDS[1:2], sets[1:], val, max_epochs=4, select="last")
    assert_same_member(fits[1], alone)


def test_reruns_are_bit_identical_in_float32():
    sets = [problem(50, s, torch.float32) for s in (1, 2, 3)]
    val = problem(40, 9, torch.float32)
    first = train(cnn(torch.float32), SEEDS, sets, val)
    second = train(cnn(torch.float32), SEEDS, sets, val)
    for a, b in zip(first, second):
        assert a.fit == b.fit and a.val_nll == b.val_nll
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(p, q)


def test_a_member_is_unaffected_by_its_companions():
    val = problem(40, 9)
    mine = problem(50, 1)
    in_three = train(cnn(), [5, 6, 7], [mine, problem(50, 2), problem(50, 3)], val)
    in_two = train(cnn(), [5, 99], [mine, problem(50, 4)], val)
    assert_same_member(in_three[0], in_two[0])


def test_members_with_different_training_set_sizes_train_in_separate_stacks():
    val = problem(30, 9)
    sets = [problem(40, 1), problem(41, 2), problem(40, 3)]
    fits = train(mlp(), SEEDS, sets, val)
    assert [f.fit["stack_size"] for f in fits] == [2, 1, 2]
    alone, = train(mlp(), SEEDS[2:], sets[2:], val)
    assert_same_member(fits[2], alone)


class NoisyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, N_CLASSES, dtype=torch.float64)

    def forward(self, x):
        return self.linear(x + 0.1 * torch.rand(x.shape, dtype=x.dtype))


def test_random_operations_other_than_dropout_fail_naming_the_model():
    with pytest.raises(ValueError, match="NoisyMLP draws random numbers.*outside nn.Dropout"):
        train(NoisyMLP, [1, 2], [problem(20, 1), problem(20, 2)], problem(20, 3))


def test_a_module_that_updates_buffers_in_training_is_refused():
    def with_batchnorm():
        return nn.Sequential(nn.Linear(N_FEATURES, 4), nn.BatchNorm1d(4), nn.Linear(4, N_CLASSES)).double()
    with pytest.raises(ValueError, match="BatchNorm1d updates its buffers"):
        train(with_batchnorm, [1], [problem(20, 1)], problem(20, 3))


def test_the_stacking_benchmark_measures_both_ways_on_tiny_data():
    import sys
    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import teacher_stacking

    x, y = problem(60, 1, torch.float32)
    x_val, y_val = problem(30, 2, torch.float32)
    arrays = {"x_train": x.numpy(), "y_train": y.numpy(), "x_val": x_val.numpy(), "y_val": y_val.numpy(),
              "mean": np.zeros(N_FEATURES, np.float32), "std": np.ones(N_FEATURES, np.float32)}
    settings = {"global_seed": 1, "folds": 3, "ensemble": 3,
                "teacher": {"cnn_channels": 2, "mlp_width": 8, "dropout": 0.3, "batch_size": 16, "lr": 0.01,
                            "weight_decay": 0.0}}
    result = teacher_stacking.measure(epochs=1, rounds=1, settings=settings, arrays=arrays)
    assert result["teacher_stacking_speedup"] == pytest.approx(result["one_at_a_time_s"] / result["stacked_s"])
    work = result["workloads"]
    assert (work["cross_fitted"]["members"], work["cross_fitted"]["n_train_per_member"]) == (3, 40)
    assert (work["ensemble"]["members"], work["ensemble"]["n_train_per_member"]) == (2, 60)
    assert work["ensemble"]["steps_per_member"] == 4 and result["threads"] == 1


@pytest.mark.parametrize("factory", [cnn(dropout=0.0), mlp(dropout=0.0)], ids=["cnn1d", "wide_mlp"])
def test_a_stacked_member_equals_plain_training_with_torch_adam(factory):
    """Against an independent reference, not the engine itself: train.train_teacher (plain
    autograd, torch.optim.Adam, the same seed and batch order; no dropout, whose masks
    differ by design), float64, last epoch kept."""
    x, y = problem(90, 1)
    x_val, y_val = problem(40, 2)
    knobs = {**KNOBS, "max_epochs": 6}
    fits = train(factory, SEEDS, [(x, y)] * 3, (x_val, y_val), select="last", max_epochs=6)
    for seed, fit in zip(SEEDS, fits):
        torch.manual_seed(seed)
        alone = factory()
        record = train_teacher(alone, {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val}, seed=seed,
                               max_epochs=6, batch_size=knobs["batch_size"], lr=knobs["lr"],
                               weight_decay=knobs["weight_decay"], run_name="plain", select="last")
        assert fit.fit["final_val_nll"] == pytest.approx(record["final_val_nll"], rel=1e-9)
        for (name, p), (_, q) in zip(fit.model.named_parameters(), alone.named_parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-9, msg=name)
