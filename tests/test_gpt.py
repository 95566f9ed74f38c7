"""The built-in `gpt` family and `sample` (src/distillstudy/engine/gpt.py): shapes, causality,
the KV cache against the full forward, sampling with and without the cache, bans, reruns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillstudy.engine.gpt import GPT, KVCache, gpt, n_heads, n_params, sample

VOCAB, BLOCK, BOS = 11, 12, 10


def model(size=32, dtype=torch.float64, seed=0, n_layer=2, vocab=VOCAB, block=BLOCK) -> GPT:
    torch.manual_seed(seed)
    net = GPT(vocab, block, size, n_layer=n_layer).to(dtype)
    # Random LayerNorm gains/biases and larger weights than the init: logits far from uniform,
    # so a wrong mask or a wrong position shows up in the comparisons.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net


def ids(batch=3, length=BLOCK, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_factory_and_heads():
    net = gpt(VOCAB, BLOCK, 24)
    assert isinstance(net, GPT) and net.heads == 1
    out = net(ids(batch=2, length=5))
    assert out.shape == (2, 5, VOCAB) and out.dtype == torch.float32
    assert [n_heads(s) for s in (8, 16, 24, 32, 40, 64, 100, 128)] == [1, 1, 1, 2, 2, 4, 5, 8]


def test_parameter_count_by_hand():
    # V = 11, block = 12, d = 32, 2 layers: embeddings 11*32 + 12*32; per block LayerNorms 2*(2*32),
    # qkv 32*96 + 96, attention projection 32*32 + 32, MLP 32*128 + 128 and 128*32 + 32; final LN 2*32.
    per_block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert n_params(GPT(VOCAB, BLOCK, 32)) == 11 * 32 + 12 * 32 + 2 * per_block + 64 == 26208


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    net = GPT(VOCAB, BLOCK, 256, n_layer=8)
    assert abs(float(net.blocks[0].expand.weight.detach().std()) - 0.02) < 0.001
    assert abs(float(net.blocks[0].proj.weight.detach().std()) - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert float(net.blocks[0].expand.bias.detach().abs().max()) == 0.0


def test_causal_later_tokens_do_not_change_earlier_logits():
    net, x = model(), ids()
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    before, after = net(x), net(changed)
    assert torch.equal(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_longer_than_block_refused():
    with pytest.raises(ValueError, match="exceed the model's block of 12"):
        model()(ids(length=BLOCK + 1))
    net = model()
    _, cache = net.step(ids(length=10), None)
    with pytest.raises(ValueError, match="10 cached"):
        net.step(ids(length=3), cache)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        GPT(VOCAB, BLOCK, 0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunks", [[1] * BLOCK, [3, 1, 5, 2, 1]])
def test_cached_steps_equal_full_forward(dtype, tol, chunks):
    net, x = model(dtype=dtype), ids()
    full = net(x)
    cache, parts, start = None, [], 0
    for k in chunks:
        logits, cache = net.step(x[:, start:start + k], cache)
        parts.append(logits)
        start += k
        assert isinstance(cache, KVCache) and cache.length == start
        assert cache.layers[0][0].shape == (3, net.heads, start, 32 // net.heads)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=tol, rtol=0)


def test_sample_same_with_and_without_cache():
    net = model()
    with_cache = sample(net, 16, BLOCK, bos=BOS, generator=torch.Generator().manual_seed(5))
    without = sample(net, 16, BLOCK, bos=BOS, generator=torch.Generator().manual_seed(5), cache=False)
    assert with_cache.shape == (16, BLOCK + 1) and with_cache.dtype == torch.int64
    assert torch.equal(with_cache, without)
    assert (with_cache[:, 0] == BOS).all()
    assert len(torch.unique(with_cache[:, 1:])) > 3  # not degenerate


def test_sample_rerun_identical_and_seed_matters():
    net = model(dtype=torch.float32)
    a = sample(net, 8, 10, bos=BOS, generator=torch.Generator().manual_seed(3))
    b = sample(net, 8, 10, bos=BOS, generator=torch.Generator().manual_seed(3))
    c = sample(net, 8, 10, bos=BOS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_banned_ids_never_drawn():
    net = model()
    default = sample(net, 64, BLOCK, bos=BOS, generator=torch.Generator().manual_seed(0))
    assert not (default[:, 1:] == BOS).any()
    banned = sample(net, 64, BLOCK, bos=BOS, banned=(BOS, 0, 3), generator=torch.Generator().manual_seed(0))
    assert not torch.isin(banned[:, 1:], torch.tensor([BOS, 0, 3])).any()
    allowed = sample(net, 64, BLOCK, bos=BOS, banned=(), generator=torch.Generator().manual_seed(0))
    assert (allowed[:, 1:] == BOS).any()  # the ban is what kept BOS out (the model gives it weight)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        sample(net, 2, 3, bos=BOS, banned=(VOCAB,), generator=torch.Generator())


def test_temperature_sharpens():
    net = model()
    cold = sample(net, 64, 6, bos=BOS, temperature=0.05, generator=torch.Generator().manual_seed(0))
    hot = sample(net, 64, 6, bos=BOS, temperature=5.0, generator=torch.Generator().manual_seed(0))
    assert len(torch.unique(cold[:, 1])) < len(torch.unique(hot[:, 1]))
    with pytest.raises(ValueError, match="temperature"):
        sample(net, 2, 3, bos=BOS, temperature=0.0, generator=torch.Generator())


def test_plain_module_samples_by_recomputation():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB)).double()
    out = sample(plain, 5, 20, bos=BOS, generator=torch.Generator().manual_seed(1))  # longer than any block
    assert out.shape == (5, 21) and not (out[:, 1:] == BOS).any()
    # A bigram model: its recomputed sampling equals drawing from each step's last logits by hand.
    generator, tokens = torch.Generator().manual_seed(1), torch.full((5, 1), BOS)
    with torch.no_grad():
        for _ in range(20):
            logits = plain(tokens)[:, -1]
            logits[:, BOS] = -float("inf")
            tokens = torch.cat((tokens, torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)), 1)
    assert torch.equal(out, tokens)


def test_modes_restored_and_output_trainable():
    net = model(dtype=torch.float32)
    net.train()
    net.blocks[1].eval()
    out = sample(net, 4, 6, bos=BOS, generator=torch.Generator().manual_seed(0))
    assert net.training and net.blocks[0].training and not net.blocks[1].training
    loss = net(out[:, :-1]).logsumexp(-1).mean()  # sampled ids feed an autograd forward
    loss.backward()
    assert net.token_embedding.weight.grad is not None
