"""The standard engine (engine/standard.py, engine/recipe.py): the field's recipe equals a
hand-written torch loop, reruns are bit-identical, a resumed run equals an uninterrupted
one, augmentation is the crop + flip it says, and the teacher sees the student's batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distillstudy.engine import standard
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.recipe import Recipe, augment_images, lr_factor
from distillstudy.engine.seeds import derive_seed

SGD_MULTISTEP = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                 "schedule": {"name": "multistep", "milestones": [2, 3], "gamma": 0.1}, "epochs": 4, "batch_size": 16}
COSINE_WARMUP = {"optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.05},
                 "schedule": {"name": "cosine", "warmup_epochs": 2}, "epochs": 5, "batch_size": 16, "grad_clip": 1.0}


def features(n=70, d=6, classes=3, dtype=np.float64, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, rows in (("train", n), ("val", 20), ("test", 20)):
        y = rng.integers(0, classes, rows)
        out[f"x_{split}"] = (rng.standard_normal((rows, d)) + y[:, None]).astype(dtype)
        out[f"y_{split}"] = y.astype(np.int64)
    out["mean"], out["std"] = out["x_train"].mean(0), out["x_train"].std(0)
    out["input_shape"] = np.array([d])
    return out


def bn_net(d=6, classes=3, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, classes)).to(dtype)


def test_lr_factor_follows_the_formulas():
    multistep = Recipe.from_params(SGD_MULTISTEP)
    assert [lr_factor(multistep, e) for e in range(1, 5)] == [1, 1, pytest.approx(0.1), pytest.approx(0.01)]
    cosine = Recipe.from_params(COSINE_WARMUP)
    assert [lr_factor(cosine, e) for e in (1, 2)] == [0.5, 1.0]
    assert lr_factor(cosine, 3) == pytest.approx(1.0) and lr_factor(cosine, 5) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 2 / 3)))


def hand_written(arrays: dict, recipe: dict, seed: int, scheduler) -> nn.Module:
    """The loop a researcher writes: torch.optim with a torch LR scheduler stepped once per
    epoch, CE on each batch, the same seeds for order and dropout as the engine's contract."""
    model = bn_net()
    opt = recipe["optimizer"]
    if opt["name"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                                    nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=opt["lr"], weight_decay=opt["weight_decay"])
    schedule = scheduler(optimizer)
    x = torch.from_numpy((arrays["x_train"] - arrays["mean"]) / arrays["std"])
    y = torch.from_numpy(arrays["y_train"])
    for epoch in range(1, recipe["epochs"] + 1):
        torch.manual_seed(derive_seed(seed, "standard", "model", epoch))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(
            derive_seed(seed, "standard", "order", epoch)))
        model.train()
        for start in range(0, len(y), recipe["batch_size"]):
            rows = order[start:start + recipe["batch_size"]]
            if len(rows) < 2:
                continue
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            if recipe.get("grad_clip"):
                nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
            optimizer.step()
        schedule.step()
    return model.eval()


def engine_run(arrays, recipe: dict, seed=11, checkpoint=None, log=lambda line: None) -> nn.Module:
    model = bn_net()
    run = standard.Run(name="t", seed=seed, recipe=Recipe.from_params(recipe), objective=objective_fn("", 0.0),
                       checkpoint=checkpoint, fingerprint="f")
    standard.fit(model, standard.Inputs(arrays, "cpu"), run, log=log)
    return model


@pytest.mark.parametrize("recipe,scheduler", [
    (SGD_MULTISTEP, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 3], gamma=0.1)),
    # warm-up e / 2 for e = 1, 2, then the cosine over the 3 remaining epochs (LambdaLR's epoch is 0-based)
    (COSINE_WARMUP, lambda o: torch.optim.lr_scheduler.LambdaLR(
        o, lambda e: (e + 1) / 2 if e < 2 else 0.5 * (1 + math.cos(math.pi * (e - 2) / 3)))),
])
def test_the_recipe_equals_a_hand_written_torch_loop(recipe, scheduler):
    arrays = features()
    ours, theirs = engine_run(arrays, recipe), hand_written(arrays, recipe, 11, scheduler)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name


def test_reruns_are_bit_identical_and_seeds_matter():
    arrays = features(dtype=np.float32)
    recipe = {**SGD_MULTISTEP}

    def weights(seed):
        model = bn_net(dtype=torch.float32)
        run = standard.Run(name="t", seed=seed, recipe=Recipe.from_params(recipe), objective=objective_fn("", 0.0))
        standard.fit(model, standard.Inputs(arrays, "cpu"), run, log=lambda line: None)
        return torch.cat([v.flatten().float() for v in model.state_dict().values()])

    assert torch.equal(weights(5), weights(5))
    assert not torch.equal(weights(5), weights(6))


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    arrays = features()
    uninterrupted = engine_run(arrays, SGD_MULTISTEP)
    ckpt = tmp_path / "ckpt.pt"

    class Killed(Exception):
        pass

    def kill_after_epoch_2(line):
        if "epoch 2/" in line:
            raise Killed

    with pytest.raises(Killed):
        engine_run(arrays, SGD_MULTISTEP, checkpoint=ckpt, log=kill_after_epoch_2)
    assert ckpt.is_file()
    lines = []
    resumed = engine_run(arrays, SGD_MULTISTEP, checkpoint=ckpt, log=lines.append)
    assert lines[0] == "t: resumed from epoch 2" and "epoch 3/4" in lines[1]
    for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()):
        assert torch.equal(a, b)


def test_a_stale_checkpoint_is_not_resumed(tmp_path):
    arrays = features()
    ckpt = tmp_path / "ckpt.pt"
    engine_run(arrays, SGD_MULTISTEP, checkpoint=ckpt)
    lines = []
    model = bn_net()
    run = standard.Run(name="t", seed=11, recipe=Recipe.from_params(SGD_MULTISTEP), objective=objective_fn("", 0.0),
                       checkpoint=ckpt, fingerprint="other params")
    standard.fit(model, standard.Inputs(arrays, "cpu"), run, log=lines.append)
    assert "from other params or data" in lines[0] and "epoch 1/4" in lines[1]


def test_crop_and_flip_are_torchvision_s_random_crop_with_zero_padding():
    recipe = Recipe.from_params({**SGD_MULTISTEP, "augment": {"random_crop": {"size": 4, "padding": 2},
                                                              "hflip": True}})
    x = torch.rand(6, 3, 4, 4)
    out = augment_images(x, recipe, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws, in the same order: tops, lefts, flips
    tops, lefts = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    for b in range(6):
        padded = torch.zeros(3, 8, 8)
        padded[:, 2:6, 2:6] = x[b]
        view = padded[:, tops[b]:tops[b] + 4, lefts[b]:lefts[b] + 4]
        assert torch.equal(out[b], view.flip(-1) if flips[b] else view)
    assert torch.equal(augment_images(x, recipe, torch.Generator().manual_seed(0)), out)
    assert not torch.equal(augment_images(x, recipe, torch.Generator().manual_seed(1)), out)


def image_arrays(n=40, classes=2, size=8, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, rows in (("train", n), ("val", 10), ("test", 10)):
        out[f"x_{split}"] = rng.integers(0, 256, (rows, 3, size, size), dtype=np.uint8)
        out[f"y_{split}"] = rng.integers(0, classes, rows).astype(np.int64)
    out["mean"], out["std"] = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    out["input_shape"] = np.array([3, size, size])
    return out


class Recorder(nn.Module):
    """A tiny conv net that keeps every input batch it sees in training or inference."""

    def __init__(self, classes=2):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, classes)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_the_teacher_runs_on_exactly_the_student_s_augmented_batch_in_eval_mode():
    arrays = image_arrays()
    recipe = Recipe.from_params({**SGD_MULTISTEP, "epochs": 2, "augment": {"random_crop": {"size": 8, "padding": 2},
                                                                           "hflip": True}})
    torch.manual_seed(0)
    student, teacher = Recorder(), Recorder()
    run = standard.Run(name="t", seed=1, recipe=recipe, objective=objective_fn("kd", 0.9, {"temperature": 4}))
    inputs = standard.Inputs(arrays, "cpu")
    standard.fit(student, inputs, run, teacher=teacher, log=lambda line: None)
    batches = 2 * math.ceil(40 / 16)
    trained = [b for b in student.seen if len(b) != 10][:batches]  # leave out the per-epoch validation passes
    assert len(teacher.seen) == batches and all(torch.equal(a, b) for a, b in zip(trained, teacher.seen))
    assert not teacher.training and teacher.bn.num_batches_tracked == 0  # eval mode: its statistics untouched
    raw = inputs.model_input(inputs.x["train"][:16])
    assert not any(torch.equal(raw, b) for b in trained)  # the views are augmented, not the raw images


def test_an_augmenting_recipe_without_a_teacher_module_is_refused():
    recipe = Recipe.from_params({**SGD_MULTISTEP, "augment": {"hflip": True}})
    run = standard.Run(name="cell", seed=1, recipe=recipe, objective=objective_fn("kd", 0.9, {"temperature": 4}))
    with pytest.raises(ValueError, match="cell: an augmenting recipe runs the teacher"):
        standard.fit(Recorder(), standard.Inputs(image_arrays(), "cpu"), run, teacher_logits=torch.zeros(40, 2))


def test_recipe_mistakes_are_named():
    with pytest.raises(ValueError, match="nesterov"):
        Recipe.from_params({**SGD_MULTISTEP, "optimizer": {"name": "adam", "lr": 0.1, "nesterov": True}})
    with pytest.raises(ValueError, match="milestones"):
        Recipe.from_params({**SGD_MULTISTEP, "schedule": {"name": "multistep", "milestones": [3, 2]}})
