"""The standard engine's recipe: optimiser, learning-rate schedule and image augmentation,
as the field writes them (distill.recipe / teacher.recipe in params.yaml).

    recipe = Recipe.from_params({"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9,
                                               "weight_decay": 5e-4},
                                 "schedule": {"name": "multistep", "milestones": [150, 180, 210]},
                                 "epochs": 240, "batch_size": 64,
                                 "augment": {"random_crop": {"size": 32, "padding": 4}, "hflip": True}})

The CIFAR KD benchmark's recipe (RepDistiller, mdistiller; Tian et al. 2020, Zhao et al.
2022): SGD, lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr x 0.1 after
epochs 150, 180 and 210, random crop 32 with 4 pixels of zero padding and a horizontal flip.

The learning rate of epoch e (1-based) is lr * factor(e), set at the start of each epoch:

    warm-up (e <= W):   e / W                                   (linear, Goyal et al. 2017)
    constant:           1
    multistep:          gamma ** #{m in milestones : m < e}     (torch MultiStepLR's epochs)
    cosine:             (1 + cos(pi * (e - 1 - W) / (E - W))) / 2   (Loshchilov & Hutter 2017)

so multistep with milestones [150] trains epochs 1..150 at lr and 151.. at lr * gamma, as
torch.optim.lr_scheduler.MultiStepLR stepped once per epoch does; cosine starts at lr and
reaches its last, smallest value at epoch E (without warm-up: E epochs of the curve).
The schedule is a pure function of the epoch, so a resumed run needs only the epoch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch import nn

from distillstudy.engine_params import recipe_errors

OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("constant", "multistep", "cosine")


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    epochs: int = 1
    batch_size: int = 64
    grad_clip: float | None = None
    crop_size: int | None = None
    crop_padding: int = 0
    hflip: bool = False

    @classmethod
    def from_params(cls, recipe: dict) -> "Recipe":
        """A params.yaml recipe section (validated by the schema) as a Recipe."""
        opt, sched, aug = recipe["optimizer"], recipe["schedule"], recipe.get("augment") or {}
        crop = aug.get("random_crop")
        out = cls(optimizer=opt["name"], lr=float(opt["lr"]), momentum=float(opt.get("momentum", 0.0)),
                  nesterov=bool(opt.get("nesterov", False)), weight_decay=float(opt.get("weight_decay", 0.0)),
                  schedule=sched["name"], milestones=tuple(int(m) for m in sched.get("milestones", ())),
                  gamma=float(sched.get("gamma", 0.1)), warmup_epochs=int(sched.get("warmup_epochs", 0)),
                  epochs=int(recipe["epochs"]), batch_size=int(recipe["batch_size"]),
                  grad_clip=None if recipe.get("grad_clip") is None else float(recipe["grad_clip"]),
                  crop_size=None if crop is None else int(crop["size"]),
                  crop_padding=0 if crop is None else int(crop["padding"]), hflip=bool(aug.get("hflip", False)))
        if out.optimizer not in OPTIMIZERS or out.schedule not in SCHEDULES:
            raise ValueError(f"recipe: optimizer {out.optimizer!r} (one of {', '.join(OPTIMIZERS)}), schedule "
                             f"{out.schedule!r} (one of {', '.join(SCHEDULES)})")
        errors = recipe_errors("recipe", recipe)  # params.check_params says the same before any job
        if errors:
            raise ValueError("; ".join(errors))
        return out

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_params(json.loads(text))

    @property
    def augments(self) -> bool:
        return self.crop_size is not None or self.hflip

    def about(self) -> dict:
        """The recipe as recorded beside the results (every field, canonical)."""
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out


def lr_factor(recipe: Recipe, epoch: int) -> float:
    """The factor of recipe.lr in epoch `epoch` (1-based): warm-up, then the schedule."""
    w = recipe.warmup_epochs
    if epoch <= w:
        return epoch / w
    if recipe.schedule == "multistep":
        return recipe.gamma ** sum(1 for m in recipe.milestones if m < epoch)
    if recipe.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1 - w) / (recipe.epochs - w)))
    return 1.0


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """torch.optim's SGD, AdamW or Adam over every parameter, as the recipe names it
    (weight decay on every parameter, BatchNorm's included, as RepDistiller and mdistiller do)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int) -> float:
    lr = recipe.lr * lr_factor(recipe, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def augment_images(x: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding, as torchvision's RandomCrop(size, padding)) and horizontal
    flip of a float image batch (B, C, H, W), drawn from `generator` (on x's device) so a
    (seed, epoch) gives the same views on every run; each image its own offsets and flip.

    The crop is one gather: padded[b, :, i_b + r, j_b + c] for r, c < size."""
    if recipe.crop_size is not None:
        b, _, h, w = x.shape
        size, pad = recipe.crop_size, recipe.crop_padding
        padded = nn.functional.pad(x, (pad, pad, pad, pad))
        if size > h + 2 * pad or size > w + 2 * pad:
            raise ValueError(f"recipe.augment.random_crop.size {size} exceeds the padded image ({h + 2 * pad} x "
                             f"{w + 2 * pad})")
        top = torch.randint(0, h + 2 * pad - size + 1, (b,), generator=generator, device=x.device)
        left = torch.randint(0, w + 2 * pad - size + 1, (b,), generator=generator, device=x.device)
        steps = torch.arange(size, device=x.device)
        rows = (top[:, None] + steps)[:, None, :, None]  # (B, 1, size, 1)
        cols = (left[:, None] + steps)[:, None, None, :]  # (B, 1, 1, size)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, channels, rows, cols]
    if recipe.hflip:
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x
