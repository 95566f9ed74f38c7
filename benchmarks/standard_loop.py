"""The standard engine (engine/standard.py) against a plain PyTorch KD loop written the way
mdistiller's trainer writes it, on the same models, data and number of steps.

    standard_vs_plain_loop   plain loop's time / the engine's time for the same training
                             images (= engine images/s / plain images/s; goal >= 1.0: the
                             pipeline adds nothing to a hand-written loop)

Both train a zoo student with KD (T = 4, alpha = 0.9: L = 0.1 CE + 0.9 T^2 KL(pt || ps),
Hinton et al. 2015) against a zoo teacher run in eval mode on every augmented batch, SGD
(lr 0.05, momentum 0.9, weight decay 5e-4), batch 64, random crop 32 with 4 pixels of
zero padding + horizontal flip, on synthetic CIFAR-shaped uint8 images (100 classes), and
evaluate the student on a 64-image validation split after each epoch (as both do):

  standard   standard.fit on standard.Inputs: batches are index slices of the stored
             tensors, the crop + flip is a few tensor ops on the whole batch
             (recipe.augment_images), the teacher runs under torch.inference_mode.
  plain      mdistiller's pattern: a torch.utils.data Dataset whose __getitem__ does
             torchvision's RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and
             Normalize on one image (written as tensor ops: torchvision is not a
             dependency), a shuffling DataLoader, the teacher in eval mode under
             torch.no_grad on every batch, loss.item() per batch. Timed with
             num_workers 0 and 1; the faster is the baseline.

One thread (the workflow's setting), alternated rounds, the fastest round of each way
counts (short runs on a shared machine); each way runs once untimed first (the first
torch.optim optimiser of a process imports torch._dynamo, ~1.2 s; oneDNN builds its
kernels on first use). Model construction is outside the timing, data setup inside.

    PYTHONPATH=src python benchmarks/standard_loop.py            # resnet8x4 <- resnet32x4, 4 steps (~2 min)
    PYTHONPATH=src python benchmarks/standard_loop.py --quick    # resnet8 <- resnet20, 8 steps (~20 s)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import time

import numpy as np

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distillstudy.engine import standard, zoo
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.recipe import Recipe

TEMPERATURE, ALPHA = 4.0, 0.9
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
CROP, PADDING = 32, 4
N_CLASSES, N_VAL = 100, 64
#: (student, teacher, steps per run) of the full bench and of --quick.
FULL = ("resnet8x4", "resnet32x4", 4)
QUICK = ("resnet8", "resnet20", 8)


def kd_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """mdistiller's KD loss: KL summed over classes, mean over the batch, times T^2."""
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1),
                  reduction="none").sum(1).mean()
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * temperature**2 * kl


def synthetic_images(n_train: int, n_val: int = N_VAL, n_classes: int = N_CLASSES, seed: int = 0) -> dict:
    """CIFAR-shaped uint8 images (n, 3, 32, 32), labels, per-channel mean/std: the arrays
    the prepare stage writes for an image dataset."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, rows in (("train", n_train), ("val", n_val), ("test", n_val)):
        out[f"x_{split}"] = rng.integers(0, 256, (rows, 3, 32, 32), dtype=np.uint8)
        out[f"y_{split}"] = rng.integers(0, n_classes, rows).astype(np.int64)
    scaled = out["x_train"].astype(np.float32) / 255.0
    out["mean"], out["std"] = scaled.mean((0, 2, 3)), scaled.std((0, 2, 3))
    out["input_shape"] = np.array([3, 32, 32])
    return out


class AugmentedImages(Dataset):
    """One image at a time, as torchvision's RandomCrop(32, padding=4),
    RandomHorizontalFlip(), ToTensor(), Normalize(mean, std) do it (same draws:
    torch.randint for the offsets, torch.rand(1) < 0.5 for the flip)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, augment: bool = True):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)
        self.mean, self.std = torch.as_tensor(mean).view(-1, 1, 1), torch.as_tensor(std).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div(255.0)
        if self.augment:
            padded = F.pad(x, (PADDING, PADDING, PADDING, PADDING))
            top = int(torch.randint(0, padded.shape[1] - CROP + 1, (1,)))
            left = int(torch.randint(0, padded.shape[2] - CROP + 1, (1,)))
            x = padded[:, top:top + CROP, left:left + CROP]
            if torch.rand(1) < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std, self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _mdistiller_backends(device: torch.device):
    """mdistiller's CUDA settings (cudnn.benchmark on, no deterministic algorithms) for the
    plain loop; restored afterwards. Nothing changes on CPU."""
    if device.type != "cuda":
        yield
        return
    deterministic, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


def student_model(name: str, device: torch.device, seed: int, channels_last: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = zoo.build(name, N_CLASSES).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def standard_run(arrays: dict, student: nn.Module, teacher: nn.Module, device: torch.device, *, epochs: int,
                 batch_size: int, seed: int = 1, precision: str = "fp32") -> float:
    """Train `student` with the standard engine; return the wall seconds (data setup included)."""
    recipe = Recipe.from_params({"optimizer": SGD, "schedule": {"name": "constant"}, "epochs": epochs,
                                 "batch_size": batch_size,
                                 "augment": {"random_crop": {"size": CROP, "padding": PADDING}, "hflip": True}})
    run = standard.Run(name="bench standard", seed=seed, recipe=recipe, precision=precision,
                       objective=objective_fn("kd", ALPHA, {"temperature": TEMPERATURE}))
    _sync(device)
    started = time.perf_counter()
    standard.fit(student, standard.Inputs(arrays, device), run, teacher=teacher, log=lambda line: None)
    _sync(device)
    return time.perf_counter() - started


def plain_run(arrays: dict, student: nn.Module, teacher: nn.Module, device: torch.device, *, epochs: int,
              batch_size: int, workers: int, seed: int = 1) -> float:
    """Train `student` the way mdistiller's trainer does; return the wall seconds."""
    torch.manual_seed(seed)
    train = DataLoader(AugmentedImages(arrays["x_train"], arrays["y_train"], arrays["mean"], arrays["std"]),
                       batch_size=batch_size, shuffle=True, num_workers=workers)
    val = DataLoader(AugmentedImages(arrays["x_val"], arrays["y_val"], arrays["mean"], arrays["std"], augment=False),
                     batch_size=batch_size, shuffle=False, num_workers=0)
    optimizer = torch.optim.SGD(student.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                weight_decay=SGD["weight_decay"])
    _sync(device)
    started = time.perf_counter()
    with _mdistiller_backends(device):
        for _ in range(epochs):
            student.train()
            teacher.eval()
            total = 0.0
            for x, y in train:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                s = student(x)
                with torch.no_grad():
                    t = teacher(x)
                loss = kd_loss(s, t, y, TEMPERATURE, ALPHA)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(y)
            student.eval()
            correct = 0
            with torch.no_grad():
                for x, y in val:
                    correct += int((student(x.to(device)).argmax(1) == y.to(device)).sum())
        _sync(device)
    return time.perf_counter() - started


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(student: str = FULL[0], teacher: str = FULL[1], *, steps: int = FULL[2], epochs: int = 1,
            batch_size: int = 64, rounds: int = 3, workers: tuple[int, ...] = (0, 1), device: str = "cpu",
            precision: str = "fp32") -> dict:
    """Images/s of the standard engine and of the plain loop (each num_workers in `workers`),
    `steps` optimiser steps per epoch, best of `rounds` alternated rounds.
    On CUDA the engine runs channels_last (as the distill stage does) at `precision`; the
    plain loop stays fp32 with mdistiller's cudnn settings."""
    dev = torch.device(device)
    settings = runtime.configure(1, device=dev.type)
    arrays = synthetic_images(steps * batch_size)
    torch.manual_seed(0)
    teacher_net = zoo.build(teacher, N_CLASSES).to(dev).eval()
    cuda = dev.type == "cuda"
    ways = {"standard": lambda: standard_run(arrays, student_model(student, dev, 1, channels_last=cuda), teacher_net,
                                             dev, epochs=epochs, batch_size=batch_size, precision=precision)}
    for w in workers:
        ways[f"plain_workers_{w}"] = (lambda w=w: plain_run(arrays, student_model(student, dev, 1), teacher_net, dev,
                                                             epochs=epochs, batch_size=batch_size, workers=w))
    warm = synthetic_images(batch_size)
    standard_run(warm, student_model(student, dev, 1, channels_last=cuda), teacher_net, dev, epochs=1,
                 batch_size=batch_size, precision=precision)
    plain_run(warm, student_model(student, dev, 1), teacher_net, dev, epochs=1, batch_size=batch_size, workers=0)
    rounds_s: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            rounds_s[name].append(run())
    images = epochs * steps * batch_size
    per_s = {name: images / min(times) for name, times in rounds_s.items()}
    plain = max((k for k in per_s if k != "standard"), key=per_s.get)
    return {"standard_vs_plain_loop": per_s["standard"] / per_s[plain],
            "standard_images_per_s": per_s["standard"], "plain_images_per_s": per_s[plain],
            "plain_num_workers": int(plain.rsplit("_", 1)[1]),
            "plain_images_per_s_by_workers": {k.rsplit("_", 1)[1]: v for k, v in per_s.items() if k != "standard"},
            "rounds_s": rounds_s, "student": student, "teacher": teacher, "n_classes": N_CLASSES,
            "images_per_run": images, "steps_per_epoch": steps, "epochs": epochs, "batch_size": batch_size,
            "val_images": N_VAL, "rounds": rounds, "device": settings["device_name"], "precision": precision,
            "plain_precision": "fp32", "cpu": cpu_model(), "threads": settings["threads"],
            "objective": f"kd T = {TEMPERATURE:g}, alpha = {ALPHA}", "augment": "random crop 32 pad 4 + hflip",
            "optimizer": SGD}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[0]} <- {QUICK[1]} instead of "
                                                             f"{FULL[0]} <- {FULL[1]}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    student, teacher, steps = QUICK if args.quick else FULL
    print(json.dumps(measure(student, teacher, steps=steps, device=args.device), indent=2))


if __name__ == "__main__":
    main()
