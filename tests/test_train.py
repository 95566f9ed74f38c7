"""The stacked engine equals one-at-a-time training; divergence fails loudly."""

import platform

import numpy as np
import pytest
import torch
from torch import nn
from distillstudy.engine import cell_loss, models, train


def tiny_problem(n=96, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    return x, y, t


def reference_member(seed, sizes, mean, std):
    """A plain nn.Sequential MLP with the same initial weights as stacked member `seed`."""
    g = torch.Generator().manual_seed(seed)
    layers = [models.Standardize(mean, std)]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, b = models.linear_init(n_in, n_out, g)
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
        layers += [lin] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers).double()


def train_alone(net, seed, x, y, t, epochs, batch, lr, objective):
    """Plain autograd + torch.optim.Adam on one member; returns the mean loss per epoch."""
    rng = train.member_orders([seed])[0]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), batch):
            idx = perm[start:start + batch]
            loss = objective(net(x[idx]), t[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
    return net, history


OBJECTIVES = [("kd", 0.0, {"temperature": 4.0}), ("kd", 0.7, {"temperature": 1.0}), ("kd", 0.7, {"temperature": 3.0}),
              ("kd", 1.0, {"temperature": 8.0}), ("logit_mse", 0.7, {}),
              ("dkd", 0.7, {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}),
              ("dist", 0.7, {"beta": 1.0, "gamma": 2.0, "temperature": 4.0}),
              ("ls_kd", 0.7, {"temperature": 2.0}), ("nkd", 0.7, {"gamma": 1.5, "temperature": 1.0}),
              ("dkd", 1.0, {"alpha": 0.5, "beta": 2.0, "temperature": 1.0})]


def _objective_id(o) -> str:
    return "-".join([o[0], f"a{o[1]}", *(f"{k}{v}" for k, v in o[2].items())])


@pytest.mark.parametrize("objective", OBJECTIVES, ids=_objective_id)
def test_stacked_training_equals_training_each_member_alone(objective):
    x, y, t = tiny_problem()
    sizes, seeds = [5, 7, 7, 3], [11, 22, 33]
    mean, std = x.mean(0).float(), x.std(0).float()
    stacked = models.StackedMLP(sizes, seeds, mean, std).double()
    fn = cell_loss.objective_fn(*objective)
    history = train.train_stacked(stacked, x, y, t, fn, epochs=4, batch_size=20, lr=1e-2,
                                  weight_decay=0.0, run_name="test")
    alone_histories = []
    for m, seed in enumerate(seeds):
        alone, alone_history = train_alone(reference_member(seed, sizes, mean, std), seed, x, y, t, 4, 20,
                                           1e-2, fn)
        alone_histories.append(alone_history)
        linears = [layer for layer in alone if isinstance(layer, nn.Linear)]
        for layer, lin in enumerate(linears):
            assert torch.allclose(stacked.weights[layer][m], lin.weight.T, rtol=0, atol=1e-10)
            assert torch.allclose(stacked.biases[layer][m, 0], lin.bias, rtol=0, atol=1e-10)
        xb = x.unsqueeze(0).expand(len(seeds), -1, -1)
        assert torch.allclose(stacked(xb)[m], alone(x), atol=1e-10)
    # The recorded loss is the members' mean of each epoch's mean training loss.
    np.testing.assert_allclose(history, np.mean(alone_histories, axis=0), rtol=0, atol=1e-10)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=_objective_id)
def test_closed_form_gradient_equals_autograd(objective):
    """One step's loss and logits-gradient against autograd through losses.py."""
    g = torch.Generator().manual_seed(3)
    m, b, c = 2, 9, 4
    s = torch.randn(m, b, c, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (b,), generator=g)
    fn = cell_loss.objective_fn(*objective)
    ref = fn(s, t.expand(m, b, c), y.expand(m, b))
    ref.sum().backward()
    per_example, const = fn.targets(t, y)
    logits = s.detach().transpose(1, 2).contiguous()  # the engine's (M, C, b) layout
    acc = {}
    grad = cell_loss.loss_grad(logits, {k: v.T.expand(m, c, b) for k, v in per_example.items()}, fn, acc)
    loss = cell_loss.epoch_loss_terms(acc, fn)
    torch.testing.assert_close(grad.transpose(1, 2), s.grad, rtol=0, atol=1e-14)
    torch.testing.assert_close((loss + const) / b, ref.detach(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("objective", [("kd", {"temperature": 4.0}), ("dist", {"beta": 1.0, "gamma": 1.0, "temperature": 4.0})])
def test_same_inputs_give_bit_identical_training(objective):
    x, y, t = (v.float() if v.is_floating_point() else v for v in tiny_problem())
    runs = []
    for _ in range(2):
        model = models.StackedMLP([5, 16, 16, 3], [4, 5], x.mean(0), x.std(0))
        fn = cell_loss.objective_fn(objective[0], 0.9, objective[1])
        history = train.train_stacked(model, x, y, t, fn, epochs=3,
                                      batch_size=32, lr=1e-2, weight_decay=0.0, run_name="test")
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_member_init_matches_nn_linear_bounds():
    model = models.StackedMLP([40, 16, 16, 10], [1, 2], torch.zeros(40), torch.ones(40))
    bound = 1 / np.sqrt(40)
    w = model.weights[0].detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert not torch.equal(w[0], w[1]), "members with different seeds must differ"


def test_diverging_run_names_cell_and_epoch():
    x, y, t = tiny_problem()
    x = x.float()
    t = t.float()
    model = models.StackedMLP([5, 8, 8, 3], [1, 2], torch.zeros(5), torch.ones(5))
    with pytest.raises(train.TrainingDiverged, match=r"distill\[toy, h8, T4\].*epoch \d+"):
        train.train_stacked(model, x, y, t, cell_loss.objective_fn("kd", 0.5, {"temperature": 4.0}), epochs=3,
                            batch_size=32, lr=1e25, weight_decay=0.0, run_name="distill[toy, h8, T4]")


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adam_equals_torch_adam(weight_decay):
    g = torch.Generator().manual_seed(5)
    ours = [torch.randn(3, 4, 5, generator=g), torch.randn(3, 1, 5, generator=g)]
    theirs = [p.clone().requires_grad_() for p in ours]
    reference = torch.optim.Adam(theirs, lr=1e-2, weight_decay=weight_decay, fused=True)
    adam = train.FusedAdam(ours, lr=1e-2, weight_decay=weight_decay)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for q, grad in zip(theirs, grads):
            q.grad = grad.clone()
        adam.step(grads)
        reference.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q.detach())


def test_fused_adam_reads_strided_gradients_in_their_parameter_s_order():
    """Autograd through vmap returns transposed gradient views; the fused kernel walks raw
    memory, so each must be laid out as its parameter before the step (found: a stacked
    teacher's linear head moved against its gradient)."""
    g = torch.Generator().manual_seed(6)
    ours = [torch.randn(2, 10, 7, generator=g)]
    theirs = [ours[0].clone().requires_grad_()]
    reference = torch.optim.Adam(theirs, lr=1e-2)
    adam = train.FusedAdam(ours, lr=1e-2)
    for _ in range(3):
        grad = torch.randn(2, 7, 10, generator=g).transpose(1, 2)  # strided, shape (2, 10, 7)
        assert not grad.is_contiguous()
        theirs[0].grad = grad.contiguous()
        adam.step([grad])
        reference.step()
    torch.testing.assert_close(ours[0], theirs[0].detach(), rtol=0, atol=1e-6)


def test_stacked_logits_equal_the_models_forward():
    x, _, _ = tiny_problem(n=70)
    x = x.float()
    model = models.StackedMLP([5, 16, 16, 3], [4, 5, 6], x.mean(0), x.std(0))
    with torch.no_grad():
        expected = model(x.unsqueeze(0).expand(3, -1, -1))
    for batch in (16, 70, 512):  # blocks that do and do not divide n
        torch.testing.assert_close(train.stacked_logits(model, x, batch=batch), expected, rtol=0, atol=1e-6)


def teacher_problem():
    """Few noisy training points and a large step: validation NLL bottoms out early."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(160, 6, generator=g)
    y = ((x[:, 0] + 0.8 * torch.randn(160, generator=g)) > 0).long() + (x[:, 1] > 0.5).long()
    return {"x_train": x[:48], "y_train": y[:48], "x_val": x[48:], "y_val": y[48:]}


def teacher_net(seed):
    torch.manual_seed(seed)  # as the stages: initial weights, then the dropout stream
    return nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 3))


def plain_teacher_epochs(seed, data, epochs, batch, lr):
    """The teacher protocol written out plainly: torch.optim.Adam, batches in the order of
    Generator([seed, 1]), dropout on while training; every epoch's val NLL and weights."""
    net = teacher_net(seed)
    order = np.random.default_rng([seed, 1])
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=False)
    n, out = len(data["y_train"]), []
    for _ in range(epochs):
        net.train()
        perm = torch.from_numpy(order.permutation(n))
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            loss = nn.functional.cross_entropy(net(data["x_train"][idx]), data["y_train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = float(nn.functional.cross_entropy(net(data["x_val"]), data["y_val"]))
        out.append((val, {k: v.clone() for k, v in net.state_dict().items()}))
    return out


TEACHER_RUN = {"seed": 7, "max_epochs": 25, "batch_size": 16, "lr": 0.03, "weight_decay": 0.0}


def test_teacher_select_last_keeps_the_last_of_max_epochs():
    data, h = teacher_problem(), TEACHER_RUN
    expect = plain_teacher_epochs(h["seed"], data, h["max_epochs"], h["batch_size"], h["lr"])
    net = teacher_net(h["seed"])
    fit = train.train_teacher(net, data, run_name="t", select="last", **h)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, expect[-1][1][k]), k
    vals = [v for v, _ in expect]
    lowest = int(np.argmin(vals)) + 1
    assert lowest < h["max_epochs"]  # precondition: the last epoch is not the best one
    assert fit == {"best_epoch": h["max_epochs"], "epochs_run": h["max_epochs"],
                   "selection": "last epoch of max_epochs (no early stopping)",
                   "final_val_nll": pytest.approx(vals[-1], rel=1e-6),
                   "lowest_val_nll": pytest.approx(vals[lowest - 1], rel=1e-6), "lowest_val_nll_epoch": lowest}


def test_teacher_select_best_restores_the_lowest_val_nll_epoch_and_stops_after_patience():
    data, h, patience = teacher_problem(), TEACHER_RUN, 3
    vals = [v for v, _ in plain_teacher_epochs(h["seed"], data, h["max_epochs"], h["batch_size"], h["lr"])]
    # Written out: the running minimum, and the first epoch `patience` past it without a new one.
    best, stop = 1, len(vals)
    for epoch in range(2, len(vals) + 1):
        if vals[epoch - 1] < vals[best - 1]:
            best = epoch
        elif epoch - best >= patience:
            stop = epoch
            break
    assert best < stop < h["max_epochs"]  # precondition: it does stop early
    expect = plain_teacher_epochs(h["seed"], data, best, h["batch_size"], h["lr"])[-1][1]
    net = teacher_net(h["seed"])
    fit = train.train_teacher(net, data, run_name="t", patience=patience, **h)  # select="best" by default
    for k, v in net.state_dict().items():
        assert torch.equal(v, expect[k]), k
    assert (fit["best_epoch"], fit["epochs_run"], fit["selection"]) == (best, stop, "early stopping on validation NLL")
    assert fit["best_val_nll"] == pytest.approx(vals[best - 1], rel=1e-6)
    with pytest.raises(ValueError, match="patience"):
        train.train_teacher(teacher_net(0), data, run_name="t", **h)
    with pytest.raises(ValueError, match="select"):
        train.train_teacher(teacher_net(0), data, run_name="t", patience=1, select="first", **h)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="denormal flushing: x86 (SSE3)")
def test_the_stages_runtime_flushes_denormals_and_records_it():
    """A converging student's tiny gradients and Adam moments fall into float32's denormal
    range, where the CPU's slow path made H = 512 steps 1.8x slower (engine/runtime.py)."""
    from distillstudy.engine import runtime
    settings = runtime.configure(1)
    assert settings["flush_denormal"] is True
    tiny = torch.tensor([1e-39, 1e-30], dtype=torch.float32)  # 1e-39 is a float32 denormal
    assert (tiny * 1.0).tolist() == [0.0, pytest.approx(1e-30)]
