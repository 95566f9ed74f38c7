"""The stacked engine equals one-at-a-time training; divergence fails loudly."""

import numpy as np
import pytest
import torch
from torch import nn

from distillstudy import losses, models, train


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


def train_alone(net, seed, x, y, t, epochs, batch, lr, temperature, alpha):
    rng = train.member_orders([seed])[0]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), batch):
            idx = perm[start:start + batch]
            loss = losses.kd_loss(net(x[idx]), t[idx], y[idx], alpha, temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def test_stacked_training_equals_training_each_member_alone():
    x, y, t = tiny_problem()
    sizes, seeds = [5, 7, 7, 3], [11, 22, 33]
    mean, std = x.mean(0).float(), x.std(0).float()
    stacked = models.StackedMLP(sizes, seeds, mean, std).double()
    train.train_stacked(stacked, x, y, t, train.objective_fn("kd", 0.7, 3.0), epochs=4,
                        batch_size=20, lr=1e-2, weight_decay=0.0, run_name="test")
    for m, seed in enumerate(seeds):
        alone = train_alone(reference_member(seed, sizes, mean, std), seed, x, y, t, 4, 20, 1e-2, 3.0, 0.7)
        linears = [layer for layer in alone if isinstance(layer, nn.Linear)]
        for layer, lin in enumerate(linears):
            assert torch.allclose(stacked.weights[layer][m], lin.weight.T, rtol=0, atol=1e-10)
            assert torch.allclose(stacked.biases[layer][m, 0], lin.bias, rtol=0, atol=1e-10)
        xb = x.unsqueeze(0).expand(len(seeds), -1, -1)
        assert torch.allclose(stacked(xb)[m], alone(x), atol=1e-10)


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
        train.train_stacked(model, x, y, t, train.objective_fn("kd", 0.5, 4.0), epochs=3,
                            batch_size=32, lr=1e25, weight_decay=0.0, run_name="distill[toy, h8, T4]")
