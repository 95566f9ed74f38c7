"""The built-in `gpt` family: a compact decoder-only transformer (GPT-2's layout, after
karpathy's nanoGPT `model.py`), and `sample`, token-by-token generation from any causal LM.

    model = gpt(vocab_size=33, block=32, size=64)           # size = width d_model
    logits = model(ids)                                     # (batch, length) int64 -> (batch, length, vocab)
    ids = sample(model, n=64, length=32, bos=32, generator=torch.Generator().manual_seed(0))

The model (Radford et al. 2019, "Language models are unsupervised multitask learners"):

    x_0 = E[ids] + P[positions]                               token + learned position embedding
    x   = x + proj(attention(LN(x)))                          n_layer pre-LayerNorm blocks,
    x   = x + W_2 GELU(W_1 LN(x))                             MLP of width 4d
    logits = LN(x) E^T                                        output head tied to E (Press & Wolf 2017)

Attention is causal multi-head scaled dot-product attention
(torch.nn.functional.scaled_dot_product_attention) with max(1, d // 16) heads: head width
16 keeps every tiny width valid (d = 16 or 24 get one head, d = 64 gets four), where a fixed
head count would leave d = 16 with heads of width 2 or 4. When d // 16 does not divide d
(d = 40: 2 heads of 20; d = 100: 6 does not divide 100), the largest divisor of d not above
it is used (`n_heads`). Initialisation is nanoGPT's: every weight normal(0, 0.02), biases
zero, the two residual projections of each block normal(0, 0.02 / sqrt(2 n_layer)) so the
residual stream's variance does not grow with depth (GPT-2's scaling). No dropout: training
is deterministic given the seed.

Parameters (the tied head adds none), with V = vocab_size, B = block, d = size:

    n_params = V d + B d + n_layer (12 d^2 + 13 d) + 2 d

Incremental decoding. `model.step(ids, cache)` runs only the new tokens `ids` (batch, k),
attending to the keys and values of the earlier positions kept in `cache` (a `KVCache`:
per layer a (key, value) pair of shape (batch, heads, length, d / heads), and `length`,
the position the new tokens start at; None before the first token). Sampling then costs
one token's forward per step instead of the whole prefix's: the KV cache of every
autoregressive transformer implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 16  # d_model per attention head (see n_heads)
N_LAYER = 2      # blocks of the built-in family
INIT_STD = 0.02  # nanoGPT's (and GPT-2's) weight initialisation


def n_heads(size: int) -> int:
    """Attention heads of a width-`size` model: max(1, size // 16), lowered to the largest
    divisor of `size` when it does not divide it (heads must split d_model evenly)."""
    heads = max(1, size // HEAD_WIDTH)
    while size % heads:
        heads -= 1
    return heads


@dataclass(frozen=True)
class KVCache:
    """Keys and values of the positions already seen, per layer: layers[i] = (keys, values),
    each (batch, heads, length, head width); `length` = how many positions they hold = the
    position of the next token."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    length: int


class CausalSelfAttention(nn.Module):
    def __init__(self, size: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(size, 3 * size)
        self.proj = nn.Linear(size, size)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (batch, k, d) at the positions after the `past` keys/values -> (output, (keys, values))."""
        batch, k, size = x.shape
        q, key, value = (t.view(batch, k, self.heads, size // self.heads).transpose(1, 2)
                         for t in self.qkv(x).split(size, dim=2))
        if past is not None:
            key, value = torch.cat((past[0], key), dim=2), torch.cat((past[1], value), dim=2)
        offset = key.shape[2] - k
        if offset == 0:
            y = F.scaled_dot_product_attention(q, key, value, is_causal=True)
        elif k == 1:  # one new token sees every earlier position: no mask
            y = F.scaled_dot_product_attention(q, key, value)
        else:
            # is_causal aligns the mask top-left; new query i sits at position offset + i.
            mask = torch.ones(k, offset + k, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            y = F.scaled_dot_product_attention(q, key, value, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(batch, k, size)), (key, value)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, size: int, heads: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(size)
        self.attn = CausalSelfAttention(size, heads)
        self.mlp_norm = nn.LayerNorm(size)
        self.expand = nn.Linear(size, 4 * size)
        self.proj = nn.Linear(4 * size, size)

    def forward(self, x: torch.Tensor, past=None):
        attended, present = self.attn(self.attn_norm(x), past)
        x = x + attended
        return x + self.proj(F.gelu(self.expand(self.mlp_norm(x)))), present


class GPT(nn.Module):
    """Decoder-only transformer: token ids (batch, length <= block) int64 -> logits
    (batch, length, vocab_size); see the module docstring for the architecture."""

    def __init__(self, vocab_size: int, block: int, size: int, *, n_layer: int = N_LAYER):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block", block), ("size", size), ("n_layer", n_layer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"gpt: {name} must be a positive integer, got {value!r}")
        self.vocab_size, self.block, self.size, self.n_layer = vocab_size, block, size, n_layer
        self.heads = n_heads(size)
        self.token_embedding = nn.Embedding(vocab_size, size)
        self.position_embedding = nn.Embedding(block, size)
        self.blocks = nn.ModuleList(Block(size, self.heads) for _ in range(n_layer))
        self.final_norm = nn.LayerNorm(size)
        self.apply(_init_weights)
        residual_std = INIT_STD / math.sqrt(2 * n_layer)
        for layer in self.blocks:
            nn.init.normal_(layer.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.proj.weight, mean=0.0, std=residual_std)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, block={self.block}, size={self.size}, heads={self.heads}"

    def _run(self, ids: torch.Tensor, cache: KVCache | None):
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"gpt: token ids must be an integer tensor (batch, length), got {ids.dtype} "
                             f"of shape {tuple(ids.shape)}")
        start = 0 if cache is None else cache.length
        if start + ids.shape[1] > self.block:
            raise ValueError(f"gpt: {start + ids.shape[1]} positions ({start} cached + {ids.shape[1]} new) exceed "
                             f"the model's block of {self.block}")
        if cache is not None and cache.layers[0][0].shape[0] != ids.shape[0]:
            raise ValueError(f"gpt: {ids.shape[0]} sequences stepped with a cache of "
                             f"{cache.layers[0][0].shape[0]}")
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        present = []
        for i, layer in enumerate(self.blocks):
            x, kv = layer(x, None if cache is None else cache.layers[i])
            present.append(kv)
        logits = F.linear(self.final_norm(x), self.token_embedding.weight)  # tied head
        return logits, KVCache(tuple(present), start + ids.shape[1])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(ids, None)[0]

    def step(self, ids: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """ids (batch, k) of the positions after those in `cache` (None at the start) ->
        (their logits (batch, k, vocab_size), the cache extended by them). The given cache
        is not modified."""
        return self._run(ids, cache)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)


def gpt(vocab_size: int, block: int, size: int) -> GPT:
    """The `gpt` family's factory: the same signature as a user's `"<file>.py:<function>"`."""
    return GPT(vocab_size, block, size)


def n_params(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor (the tied head) counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _logits_of(output) -> torch.Tensor:
    """A module's logits: the tensor itself, or a Hugging Face output's `.logits`."""
    return getattr(output, "logits", output)


def sample(model: nn.Module, n: int, length: int, *, bos: int, generator: torch.Generator,
           temperature: float = 1.0, banned: tuple[int, ...] | None = None, cache: bool = True,
           device=None) -> torch.Tensor:
    """`n` sequences of `length` tokens drawn from `model`, as int64 (n, length + 1) with
    column 0 = `bos` (the token data format: input = ids[:, :-1], targets = ids[:, 1:]).

    Token t + 1 is drawn by torch.multinomial(softmax(logits_t / temperature), 1, generator)
    with the `banned` ids' logits (default: (bos,), a token the data never emit) at -inf:
    one (n, vocab) draw per step whichever path runs, so the same generator state gives the
    same tokens with and without the cache (up to the last bits of the logits: exactly in
    float64). With `cache` and a module offering `step(ids, cache)`, each step runs only the
    newest token against the KV cache; otherwise the whole prefix is recomputed each step,
    which serves any module mapping ids (batch, length) to logits (batch, length, vocab)
    (a user's factory, a Hugging Face causal LM: its output's `.logits` is used).
    Runs under torch.inference_mode in eval mode; every submodule's train/eval flag is
    restored afterwards. The returned tensor is an ordinary one (it can feed training).
    `device`: where the ids live (default: the model's); `generator` must be on it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sample: n must be a positive integer, got {n!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"sample: length must be a positive integer, got {length!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"sample: temperature must be a positive number, got {temperature!r}")
    device = _model_device(model) if device is None else torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(f"sample: the generator is on {generator.device}, the ids on {device}: "
                         f"multinomial needs them on the same kind of device")
    banned = (bos,) if banned is None else tuple(int(b) for b in banned)
    incremental = cache and callable(getattr(model, "step", None))
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            ids = torch.full((n, length + 1), int(bos), dtype=torch.int64, device=device)
            state, ban = None, None
            for t in range(length):
                if incremental:
                    logits, state = model.step(ids[:, t:t + 1], state)
                else:
                    logits = _logits_of(model(ids[:, :t + 1]))
                last = logits[:, -1]
                if last.dtype in (torch.float16, torch.bfloat16):
                    last = last.float()
                if ban is None:
                    ban = _ban_mask(banned, last.shape[-1], device)
                probs = torch.softmax(last.masked_fill(ban, -math.inf) / temperature, dim=-1)
                ids[:, t + 1] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    finally:
        for module, training in modes:
            module.training = training
    return ids.clone()  # outside inference_mode: an ordinary tensor autograd may save


def _ban_mask(banned: tuple[int, ...], vocab_size: int, device) -> torch.Tensor:
    outside = [b for b in banned if not 0 <= b < vocab_size]
    if outside:
        raise ValueError(f"sample: banned ids {outside} are outside the model's vocabulary [0, {vocab_size})")
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[list(banned)] = True
    if bool(mask.all()):
        raise ValueError(f"sample: every one of the {vocab_size} token ids is banned")
    return mask
