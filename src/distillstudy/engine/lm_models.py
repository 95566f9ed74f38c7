"""Language models of a study: the built-in `gpt` family, your factory, a local Hugging Face
teacher; all map token ids (batch, length) to logits (batch, length, vocab_size).

    family "gpt"                        engine/gpt.py, size = width
    family "<file>.py:<function>"       your f(vocab_size, block, size) -> nn.Module
    teacher {hf: <folder>}              engine/hf.py, loaded with local_files_only, never trained

Every module is built under torch.manual_seed(seed) (its initial weights come from the seed)
and checked on one batch before training: a wrong output shape is refused naming the family.
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py).
from distillstudy.engine import runtime  # noqa: F401,I001

from pathlib import Path

import torch
from torch import nn

from distillstudy.engine import factories, gpt, hf
from distillstudy.errors import ParamsError


def lm_factory(family: str, root: str | Path = "."):
    """f(vocab_size, block, size) -> nn.Module of a family name."""
    if family == "gpt":
        return gpt.gpt
    return factories.load_factory(family, root, "language model", f"family {family!r}")


def check_lm(module: nn.Module, vocab_size: int, block: int, where: str) -> None:
    """Ids (2, block) must give float logits (2, block, vocab_size)."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((2, block), dtype=torch.long))
    except Exception as exc:  # noqa: BLE001
        raise ParamsError(f"{where}: the module fails on token ids shaped (2, {block}): "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        module.train(was)
    out = getattr(out, "logits", out)
    if not torch.is_tensor(out) or not out.is_floating_point() or tuple(out.shape) != (2, block, vocab_size):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ParamsError(f"{where}: expected float logits shaped (2, {block}, {vocab_size}) = (batch, length, "
                          f"vocab_size), got {shape}")


class Logits(nn.Module):
    """A module whose output carries `.logits` (a Hugging Face model) as a plain logits module."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, ids):
        out = self.net(ids)
        return getattr(out, "logits", out)


def build_lm(family: str, vocab_size: int, block: int, size: int, seed: int, where: str) -> nn.Module:
    """A freshly initialised language model of `family`, checked on one batch."""
    module = factories.build(lm_factory(family), (vocab_size, block, size), seed, where)
    check_lm(module, vocab_size, block, where)
    return module if hasattr(module, "step") or family == "gpt" else Logits(module)


def n_params(module: nn.Module) -> int:
    """Parameters counted once (a tied embedding and head is one matrix)."""
    return int(sum(p.numel() for p in {id(p): p for p in module.parameters()}.values()))


def load_teacher(teacher: dict, vocab_size: int, block: int, weights: str | None, where: str) -> nn.Module:
    """A dataset's teacher module in eval mode, without gradients: a local Hugging Face causal LM,
    or the family the teacher stage trained (rebuilt, then its weights loaded)."""
    if "hf" in teacher:
        net = hf.load_causal_lm(teacher["hf"], vocab_size=vocab_size, block=block)
    else:
        family = teacher.get("family") or teacher["factory"]
        net = build_lm(family, vocab_size, block, int(teacher["size"]), 0, where)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
