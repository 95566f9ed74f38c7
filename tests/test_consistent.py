"""Consistent teaching's engine pieces: `epoch_data` in both student engines (bit-identical
to the plain run when it returns the run's own data; the engines agree with it) and
engine/consistent.py's views (the teacher's logits on exactly the view, fresh views per
epoch, determinism, rows in order) with a planted effect on training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distillstudy.engine import runtime
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.consistent import EpochViews, consistent_views, describe, teacher_forward
from distillstudy.engine.families import mlp
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, student_layer_sizes
from distillstudy.engine.train import stacked_logits, train_stacked
from test_generic import SEEDS, toy

KW = dict(epochs=3, batch_size=32, lr=3e-3, weight_decay=1e-4, run_name="test")  # 70 rows: a short last batch
OBJECTIVES = [("kd", 0.9, {"temperature": 4}), ("logit_mse", 0.5, {}),
              ("dkd", 0.9, {"alpha": 1, "beta": 8, "temperature": 4})]


@pytest.fixture(autouse=True)
def one_thread():
    runtime.configure(1)


def linear_teacher(d=6, classes=4, seed=5, dtype=torch.float32):
    """Logits that depend on the view: a fixed random linear map of the raw inputs."""
    torch.manual_seed(seed)
    return nn.Linear(d, classes).to(dtype)


def run(engine, x, y, t, objective, dtype=torch.float32, **extra):
    """Train the engine's members on (x, y, t) from the shared init; (history, weights, logits on x)."""
    loss = objective_fn(*objective)
    if engine == "closed":
        sizes = student_layer_sizes(x.shape[1], 16, t.shape[1])
        model = StackedMLP(sizes, SEEDS, torch.zeros(x.shape[1]), torch.ones(x.shape[1])).to(dtype)
        history = train_stacked(model, x, y, t, loss, **KW, **extra)
        return history, [p.detach() for p in model.weights], stacked_logits(model, x)
    stack = GenericStack(lambda: mlp((x.shape[1],), t.shape[1], 16), SEEDS, x, "test", dtype=dtype)
    history = train_generic(stack, x, y, t, loss, **KW, **extra)
    return history, [stack.params[f"weights.{i}"].detach() for i in range(3)], stack.logits(x)


def assert_same_bits(a, b):
    assert a[0] == b[0]
    for wa, wb in zip(a[1], b[1]):
        assert torch.equal(wa, wb)
    assert torch.equal(a[2], b[2])


@pytest.mark.parametrize("engine", ["closed", "generic"])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o[0])
def test_epoch_data_giving_the_run_s_own_data_changes_no_bit(engine, objective):
    x, y, t = toy(dtype=torch.float32)
    calls = []

    def same(epoch):
        calls.append(epoch)
        return x, t

    assert_same_bits(run(engine, x, y, t, objective, epoch_data=same), run(engine, x, y, t, objective))
    assert calls == [1, 2, 3]  # once per epoch, 1-based, in order


def test_epoch_data_of_the_wrong_shape_is_refused():
    x, y, t = toy(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"epoch_data\(1\) gave inputs \(69, 6\)"):
        run("closed", x, y, t, OBJECTIVES[0], epoch_data=lambda e: (x[1:], t))


def csv_data(n=70, d=6, classes=4, seed=0):
    x, y, _ = toy(n, d, classes, seed, dtype=torch.float32)
    return (x * 3 + 1).numpy(), y


def test_the_logits_are_the_teacher_s_on_exactly_the_view():
    x_train, _ = csv_data()
    teacher = nn.Sequential(linear_teacher(), nn.Dropout(0.5)).train()  # eval mode is the views' business
    views = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)
    x1, t1 = views(1)
    assert x1.dtype == t1.dtype == torch.float32 and x1.shape == (70, 6) and t1.shape == (70, 4)
    assert teacher.training  # restored
    with torch.no_grad():
        assert torch.equal(t1, teacher.eval()(x1))
    # In blocks: the same logits (to the GEMM's blocking), rows in order.
    torch.testing.assert_close(EpochViews("csv", x_train, teacher, seed=3, noise=0.5, block=16)(1)[1], t1)
    assert views.epochs_drawn == 1 and views.teacher_seconds > 0 and views.augment_seconds > 0
    assert "consistent teaching" in describe("csv", noise=0.5) and views.settings()["epochs_drawn"] == 1


def test_views_are_fresh_each_epoch_and_the_same_for_the_same_epoch():
    x_train, _ = csv_data()
    teacher = linear_teacher()
    a = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)
    b = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)
    a1, a2 = a(1), a(2)
    assert not torch.equal(a1[0], a2[0]) and not torch.equal(a1[1], a2[1])
    b2, b1 = b(2), b(1)  # drawn in another order: each epoch is its own stream
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    assert torch.equal(a2[0], b2[0]) and torch.equal(a2[1], b2[1])
    assert not torch.equal(consistent_views("csv", x_train, teacher, seed=4, noise=0.5)(1)[0], a1[0])


def test_rows_keep_their_order():
    x_train, _ = csv_data()
    clean = consistent_views("csv", x_train, linear_teacher(), seed=3, noise=0.0)
    assert np.array_equal(clean(1)[0].numpy(), x_train) and np.array_equal(clean(2)[0].numpy(), x_train)
    # mnist1d with shifts only: row i of the view is row i of x_train rolled by 1..3 either way.
    g = np.random.default_rng(0)
    seqs = g.standard_normal((30, 12)).astype(np.float32)
    view = consistent_views("mnist1d", seqs, linear_teacher(d=12), seed=3, noise=0.0, shift=3)(1)[0].numpy()
    for i in range(30):
        assert any(np.array_equal(view[i], np.roll(seqs[i], s)) for s in (-3, -2, -1, 1, 2, 3)), i


def test_inputs_maps_the_student_s_view_and_the_teacher_sees_the_raw_one():
    x_train, _ = csv_data()
    teacher = linear_teacher()
    raw = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)(1)
    mapped = consistent_views("csv", x_train, teacher, seed=3, noise=0.5, inputs=lambda v: v * 2)(1)
    assert torch.equal(mapped[0], raw[0] * 2) and torch.equal(mapped[1], raw[1])


@pytest.mark.parametrize("engine", ["closed", "generic"])
def test_training_on_views_reruns_bit_identically(engine):
    x_train, y = csv_data()
    x, teacher = torch.from_numpy(x_train), linear_teacher()
    t = teacher_forward(teacher, x)

    def once():
        views = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)
        out = run(engine, x, y, t, OBJECTIVES[0], epoch_data=views)
        assert views.epochs_drawn == KW["epochs"]
        return out

    assert_same_bits(once(), once())


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o[0])
def test_the_engines_agree_on_views(objective):
    """As tests/test_generic.py proves without views: float64, same init and batch order
    (mean 0, std 1, so the closed form's raw inputs are the generic path's standardised ones)."""
    x_train, y = csv_data()
    x, teacher = torch.from_numpy(x_train).double(), linear_teacher()
    t = teacher_forward(teacher, x.float()).double()
    views = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)

    def views64(epoch):
        return tuple(v.double() for v in views(epoch))

    closed = run("closed", x, y, t, objective, torch.float64, epoch_data=views64)
    generic = run("generic", x, y, t, objective, torch.float64, epoch_data=views64)
    assert generic[0] == pytest.approx(closed[0], rel=1e-10)
    for wg, wc in zip(generic[1], closed[1]):
        torch.testing.assert_close(wg, wc, rtol=0, atol=1e-10)
    torch.testing.assert_close(generic[2], closed[2], rtol=0, atol=1e-9)


@pytest.mark.parametrize("engine", ["closed", "generic"])
def test_the_teacher_s_answer_on_the_view_is_what_trains(engine):
    """Planted effect: the same views, with the teacher's logits on each view vs its cached
    logits on the clean inputs. A teacher whose logits depend on the input makes the two
    runs differ; a constant teacher (the control) makes them bit-identical."""
    x_train, y = csv_data()
    x = torch.from_numpy(x_train)
    for teacher, differ in ((linear_teacher(), True), (linear_teacher(), False)):
        if not differ:
            with torch.no_grad():
                teacher.weight.zero_()  # logits = bias, whatever the view
        t_clean = teacher_forward(teacher, x)
        views = consistent_views("csv", x_train, teacher, seed=3, noise=0.5)
        consistent = run(engine, x, y, t_clean, OBJECTIVES[0], epoch_data=views)
        cached = run(engine, x, y, t_clean, OBJECTIVES[0], epoch_data=lambda e: (views(e)[0], t_clean))
        if differ:
            assert all(a != b for a, b in zip(consistent[0], cached[0]))
            assert not torch.equal(consistent[1][0], cached[1][0])
        else:
            assert_same_bits(consistent, cached)
