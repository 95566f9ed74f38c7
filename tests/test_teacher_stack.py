"""The CNN teachers' written-out stacks (models.CNN1D / CNN2D.forward_stacked, run by
engine/stacked.py instead of vmap): equal to vmap(functional_call) of the module itself in
float64, logits and gradients, with each member's dropout mask (training) and without
(evaluation); a whole train_stack run equal to the vmap path's; reruns bit-identical.

Tiny models (2-3 channels): each test runs well under a second on one core.
"""

import io

import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from distillstudy.engine import models, runtime, stacked
from distillstudy.engine.generic import GenericStack

SEEDS = [3, 17, 40]
N_CLASSES = 4


@pytest.fixture(autouse=True)
def one_thread():
    runtime.configure(1)


def teacher(cls, n_in, channels=3, dropout=0.3, seed=0):
    """A factory of `cls` with a standardisation that is not the identity."""
    g = np.random.default_rng(seed)
    mean, std = g.normal(size=n_in), g.uniform(0.5, 2.0, size=n_in)
    return lambda: cls(n_in, N_CLASSES, channels, mean, std, dropout)


# mnist1d-like (40 features), the 8x8 digits, and odd sizes whose pools drop a last row.
SHAPES = [(models.CNN1D, 40), (models.CNN1D, 42), (models.CNN2D, 64), (models.CNN2D, 81)]
IDS = ["cnn1d-40", "cnn1d-42", "cnn2d-8x8", "cnn2d-9x9"]


def _assert_equal_with_gradients(got, expected, params):
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    tensors = list(params.values())
    grads_got = torch.autograd.grad((got + got.square()).sum(), tensors)
    grads_expected = torch.autograd.grad((expected + expected.square()).sum(), tensors)
    for name, a, b in zip(params, grads_got, grads_expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("cls, n_in", SHAPES, ids=IDS)
def test_the_written_out_stack_equals_vmap_in_training_with_each_member_s_dropout_mask(cls, n_in):
    rows = 6
    x = torch.randn(len(SEEDS), rows, n_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    stack = GenericStack(teacher(cls, n_in), SEEDS, x[0], "test", dtype=torch.float64)
    assert set(stack.sites) == {"dropout"}
    shape = stack.sites["dropout"][1]
    masks = stacked.fill_masks({"dropout": torch.empty(len(SEEDS), rows, *shape, dtype=torch.float64)},
                               {"dropout": torch.empty(len(SEEDS), rows, *shape)}, stack.sites, stack.generators, rows)
    assert 0 < float((masks["dropout.mask"] == 0).double().mean()) < 1  # some features dropped, not all
    buffers = {**stack.buffers, **masks}
    stack.template.train()
    reference = vmap(lambda p, b, xb: functional_call(stack.template, (p, b), (xb,)))(stack.params, buffers, x)
    got = stacked.stacked_forward(stack.template, "test", member_inputs=True)(stack.params, buffers, x)
    assert torch.equal(got, stack.template.forward_stacked(stack.params, x, buffers))  # the dispatch ran it
    _assert_equal_with_gradients(got, reference, stack.params)


@pytest.mark.parametrize("cls, n_in", SHAPES, ids=IDS)
def test_the_written_out_stack_equals_vmap_in_evaluation_on_shared_inputs(cls, n_in):
    x = torch.randn(7, n_in, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    stack = GenericStack(teacher(cls, n_in), SEEDS, x, "test", dtype=torch.float64)
    stack.template.eval()
    reference = vmap(lambda p, b: functional_call(stack.template, (p, b), (x,)))(stack.params, stack.buffers)
    got = stacked.stacked_forward(stack.template, "test", member_inputs=False)(stack.params, stack.buffers, x)
    _assert_equal_with_gradients(got, reference, stack.params)
    # and each member is its own module's plain forward
    for i, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        alone = teacher(cls, n_in)().double().eval()
        torch.testing.assert_close(got[i], alone(x), rtol=0, atol=1e-12)


def test_dropout_in_training_without_the_members_masks_is_refused():
    stack = GenericStack(teacher(models.CNN1D, 12), SEEDS, torch.zeros(2, 12), "test")
    stack.template.train()
    with pytest.raises(ValueError, match=r"CNN1D.forward_stacked: dropout in training needs.*dropout.mask"):
        stack.template.forward_stacked(stack.params, torch.zeros(3, 2, 12), stack.buffers)


class CNN1DThroughVmap(models.CNN1D):
    """No forward_stacked of its own: engine/stacked.py runs vmap(functional_call) of it."""


class CNN2DThroughVmap(models.CNN2D):
    """No forward_stacked of its own: engine/stacked.py runs vmap(functional_call) of it."""


def problem(n, n_in, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = torch.randn(n, n_in, generator=g, dtype=dtype) + torch.nn.functional.one_hot(y, n_in).to(dtype)
    return x, y


KNOBS = {"max_epochs": 6, "batch_size": 16, "lr": 0.02, "weight_decay": 1e-4, "patience": 1}


@pytest.mark.parametrize("classes, n_in", [((models.CNN1D, CNN1DThroughVmap), 40),
                                           ((models.CNN2D, CNN2DThroughVmap), 64)], ids=["cnn1d", "cnn2d"])
def test_training_a_stack_written_out_equals_training_it_through_vmap(classes, n_in):
    """train_stack end to end (dropout masks, early stopping, members leaving the stack), float64."""
    sets = [problem(40, n_in, s, torch.float64) for s in (1, 2, 3)]
    val = problem(30, n_in, 9, torch.float64)
    runs = [stacked.train_stack(lambda: cls(n_in, N_CLASSES, 2, np.zeros(n_in), np.ones(n_in), 0.3).double(), SEEDS,
                                sets, val, run_name="test", **KNOBS) for cls in classes]
    assert len({f.fit["epochs_run"] for f in runs[0]}) > 1  # members stopped early and left the stack
    for written_out, through_vmap in zip(*runs):
        assert written_out.fit["epochs_run"] == through_vmap.fit["epochs_run"]
        np.testing.assert_allclose(written_out.val_nll, through_vmap.val_nll, rtol=0, atol=1e-10)
        for (name, p), (_, q) in zip(written_out.model.named_parameters(), through_vmap.model.named_parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=name)


def _weights_bytes(fits) -> list[bytes]:
    out = []
    for fit in fits:
        buffer = io.BytesIO()
        torch.save({k: v.contiguous() for k, v in fit.model.state_dict().items()}, buffer)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("cls, n_in", [(models.CNN1D, 40), (models.CNN2D, 64)], ids=["cnn1d", "cnn2d"])
def test_reruns_of_a_written_out_stack_give_identical_bytes(cls, n_in):
    sets = [problem(40, n_in, s, torch.float32) for s in (1, 2)]
    val = problem(30, n_in, 9, torch.float32)

    def run():
        fits = stacked.train_stack(teacher(cls, n_in, channels=2), SEEDS[:2], sets, val, run_name="test",
                                   **{**KNOBS, "max_epochs": 3})
        return _weights_bytes(fits), [f.val_nll for f in fits]

    first, second = run(), run()
    assert first == second
