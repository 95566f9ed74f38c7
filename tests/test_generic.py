"""The generic student path (engine/generic.py): equal to the closed-form engine on MLPs
(float64, same init and batch order), bit-identical reruns for a CNN family, and the
families' contract (shapes, seeding)."""

from __future__ import annotations

import pytest
import torch

from distillstudy.engine import runtime
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.families import cnn, mlp
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, student_layer_sizes
from distillstudy.engine.train import member_orders, stacked_logits, train_stacked

SEEDS = [11, 12, 13]


@pytest.fixture(autouse=True)
def one_thread():
    runtime.configure(1)


def toy(n=70, d=6, classes=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    t = torch.randn(n, classes, generator=g, dtype=dtype) * 3
    return x, y, t


@pytest.mark.parametrize("objective", [("", 0.0, {}), ("kd", 0.9, {"temperature": 4}), ("logit_mse", 0.5, {}),
                                       ("dkd", 0.9, {"alpha": 1, "beta": 8, "temperature": 4})])
def test_generic_path_equals_the_closed_form_on_mlps(objective):
    x, y, t = toy()
    loss = objective_fn(*objective)
    sizes = student_layer_sizes(x.shape[1], 16, t.shape[1])
    closed = StackedMLP(sizes, SEEDS, torch.zeros(x.shape[1]), torch.ones(x.shape[1])).double()
    kw = dict(epochs=4, batch_size=32, lr=3e-3, weight_decay=1e-4, run_name="test")  # 70 rows: a short last batch
    closed_history = train_stacked(closed, x, y, t, loss, **kw)
    stack = GenericStack(lambda: mlp((x.shape[1],), t.shape[1], 16), SEEDS, x, "test", dtype=torch.float64)
    generic_history = train_generic(stack, x, y, t, loss, **kw)
    assert generic_history == pytest.approx(closed_history, rel=1e-10)
    for layer in range(3):
        torch.testing.assert_close(stack.params[f"weights.{layer}"], closed.weights[layer].detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(stack.params[f"biases.{layer}"], closed.biases[layer].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(stack.logits(x), stacked_logits(closed, x), rtol=0, atol=1e-9)


def test_the_mlp_family_starts_from_the_closed_form_engine_s_weights():
    sizes = student_layer_sizes(6, 8, 3)
    closed = StackedMLP(sizes, SEEDS, torch.zeros(6), torch.ones(6))
    stack = GenericStack(lambda: mlp((6,), 3, 8), SEEDS, torch.zeros(2, 6), "test")
    for layer in range(3):
        assert torch.equal(stack.params[f"weights.{layer}"], closed.weights[layer].detach())
        assert torch.equal(stack.params[f"biases.{layer}"], closed.biases[layer].detach())


def images(n=40, side=8, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, side, side, generator=g), torch.randint(0, classes, (n,), generator=g),
            torch.randn(n, classes, generator=g))


def train_cnn(x, y, t, seeds=SEEDS, factory=None):
    factory = factory or (lambda: cnn(tuple(x.shape[1:]), t.shape[1], 4))
    stack = GenericStack(factory, seeds, x, "cnn test")
    history = train_generic(stack, x, y, t, objective_fn("kd", 0.9, {"temperature": 2}), epochs=2, batch_size=16,
                            lr=1e-2, weight_decay=0.0, run_name="cnn test")
    return stack, history


def test_a_cnn_family_reruns_bit_identically_and_each_member_is_its_own():
    x, y, t = images()
    a, history_a = train_cnn(x, y, t)
    b, history_b = train_cnn(x, y, t)
    assert history_a == history_b
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    assert torch.equal(a.logits(x), b.logits(x))
    # Member 1 (seed 12) trained with other companions: the same function, to float32 rounding.
    alone, _ = train_cnn(x, y, t, seeds=[99, 12])
    torch.testing.assert_close(alone.logits(x)[1], a.logits(x)[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(20,), (8, 8), (2, 8, 8)])
def test_the_cnn_family_takes_sequences_and_images(shape):
    torch.manual_seed(0)
    model = cnn(shape, 5, 3)
    assert model(torch.randn(7, *shape)).shape == (7, 5)


def test_a_dropout_student_draws_its_own_masks():
    x, y, t = images()
    factory = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),  # noqa: E731
                                          torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    a, _ = train_cnn(x, y, t, factory=factory)
    b, _ = train_cnn(x, y, t, factory=factory)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.params["1.weight"][0], a.params["1.weight"][1])


@pytest.mark.parametrize("shape, batch", [((20,), 6), ((9,), 6), ((8, 8), 6), ((7, 5), 6), ((2, 8, 8), 6),
                                          ((3, 5, 7), 6), ((3,), 1), ((1, 6), 1), ((5, 1), 2), ((1, 1, 3), 2)])
def test_the_cnn_family_s_written_out_stack_equals_vmap_of_its_module(shape, batch):
    """CNN.forward_stacked (grouped convolutions, channels-last) against vmap(functional_call)
    of the module itself: logits and every parameter's gradient, float64, odd sizes (ceil-mode
    pools), and maps whose channels-last layout is ambiguous (one row, one column, batch 1)."""
    from torch.func import functional_call, vmap
    x = torch.randn(3, batch, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    stack = GenericStack(lambda: cnn(shape, 4, 3), SEEDS, x[0], "test", dtype=torch.float64)
    reference = vmap(lambda p, xb: functional_call(stack.template, p, (xb,)))(stack.params, x)
    written_out = stack.template.forward_stacked(stack.params, x)
    torch.testing.assert_close(written_out, reference, rtol=0, atol=1e-12)
    params = list(stack.params.values())
    expected = torch.autograd.grad((reference + reference.square()).sum(), params)
    got = torch.autograd.grad((written_out + written_out.square()).sum(), params)
    for name, a, b in zip(stack.params, got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_a_subclass_of_the_cnn_that_changes_forward_is_not_run_by_the_written_out_stack():
    from distillstudy.engine.families import CNN

    class Doubled(CNN):
        def forward(self, x):
            return 2 * super().forward(x)

    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))
    plain = GenericStack(lambda: cnn((12,), 3, 2), SEEDS, x, "test")
    doubled = GenericStack(lambda: Doubled((12,), 3, 2), SEEDS, x, "test")
    torch.testing.assert_close(doubled.logits(x), 2 * plain.logits(x))


@pytest.mark.parametrize("shape", [(8, 8), (21,), (2, 7, 6)])
def test_the_generic_path_equals_plain_autograd_for_a_cnn_family(shape):
    """Against an independent reference: each seed's module trained alone with plain
    autograd on the cell's reference loss (Objective.__call__) and torch.optim.Adam, the
    same init and batch order, float64."""
    g = torch.Generator().manual_seed(1)
    x, y, t = (torch.randn(40, *shape, generator=g), torch.randint(0, 3, (40,), generator=g),
               torch.randn(40, 3, generator=g))
    x, t = x.double(), t.double()
    loss = objective_fn("dkd", 0.9, {"alpha": 1, "beta": 2, "temperature": 3})
    factory = lambda: cnn(tuple(x.shape[1:]), t.shape[1], 3)  # noqa: E731
    stack = GenericStack(factory, SEEDS, x, "cnn test", dtype=torch.float64)
    train_generic(stack, x, y, t, loss, epochs=2, batch_size=16, lr=1e-2, weight_decay=1e-3, run_name="cnn test")
    for i, (seed, order) in enumerate(zip(SEEDS, member_orders(SEEDS))):
        torch.manual_seed(seed)
        model = factory().double()
        adam = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(2):
            perm = torch.from_numpy(order.permutation(len(y)))
            for start in range(0, len(y), 16):
                idx = perm[start:start + 16]
                adam.zero_grad()
                loss(model(x[idx]), t[idx], y[idx]).backward()
                adam.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(stack.params[name][i], p.detach(), rtol=0, atol=1e-9, msg=name)
