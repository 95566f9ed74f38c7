"""Your own models: a factory named "<file>.py:<function>", the file relative to the
repository root, loaded and checked here.

    teacher factory  f(input_shape: tuple[int, ...], n_classes: int) -> torch.nn.Module
    student factory  f(input_shape: tuple[int, ...], n_classes: int, size: int) -> torch.nn.Module

The module maps a float32 batch (batch, *input_shape) to logits (batch, n_classes). The
pipeline seeds it (torch.manual_seed before the call) and feeds it inputs standardised
with the training split's mean and standard deviation, reshaped to input_shape. Every
error names the factory, the file and what is wrong (tests/test_factories.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Callable

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch import nn

from distillstudy.artifacts import file_sha256
from distillstudy.engine import families, zoo
from distillstudy.engine.stacked import unstackable
from distillstudy.engine.models import Standardize
from distillstudy.errors import ParamsError
from distillstudy.students import STACKED, STANDARD, builtin_engine, distill_students, is_factory
from distillstudy.userfiles import dataset_input_shape

SPEC = re.compile(r"(?P<file>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")
#: Positional arguments of each kind of factory, in order.
ARGUMENTS = {"teacher": ("input_shape", "n_classes"), "student": ("input_shape", "n_classes", "size"),
             "language model": ("vocab_size", "block", "size")}


def parse_spec(spec: str, where: str) -> tuple[str, str]:
    match = SPEC.fullmatch(spec.strip())
    if not match:
        raise ParamsError(f"{where}: {spec!r} is not a factory '<file>.py:<function>' (e.g. 'zoo/models.py:big_cnn')")
    return match["file"], match["function"]


def load_factory(spec: str, root: str | Path, role: str, where: str) -> Callable:
    """The factory function `spec` names, imported from its file under `root`, with a
    signature that accepts the `role`'s arguments."""
    file, function = parse_spec(spec, where)
    path = Path(root) / file
    if not path.is_file():
        raise ParamsError(f"{where}: factory file {file!r} does not exist (relative to {Path(root).resolve()})")
    # One module per file content: an edited file is imported afresh, never a stale copy.
    name = f"distillstudy_factory_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]}_{file_sha256(path)[:10]}"
    module = sys.modules.get(name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001  (the user's code: report whatever it raised)
            raise ParamsError(f"{where}: importing {file} failed: {type(exc).__name__}: {exc}") from None
        sys.modules[name] = module
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ParamsError(f"{where}: {file} has no function {function!r}")
    try:
        inspect.signature(fn).bind(*ARGUMENTS[role])
    except TypeError:
        raise ParamsError(f"{where}: {file}:{function}{inspect.signature(fn)} must take "
                          f"({', '.join(ARGUMENTS[role])}), a {role} factory") from None
    except ValueError:  # no signature to inspect (a builtin): trust it, the call will tell
        pass
    return fn


def build(fn: Callable, args: tuple, seed: int, where: str) -> nn.Module:
    torch.manual_seed(int(seed))  # the pipeline seeds it: the initial weights come from the seed
    try:
        module = fn(*args)
    except Exception as exc:  # noqa: BLE001
        raise ParamsError(f"{where}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ParamsError(f"{where}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


def check_output(module: nn.Module, input_shape: tuple[int, ...], n_classes: int, where: str) -> None:
    """One batch of two zero examples must give float logits shaped (2, n_classes)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((2, *input_shape)))
    except Exception as exc:  # noqa: BLE001
        raise ParamsError(f"{where}: the module fails on a batch shaped {(2, *input_shape)}: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes) or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ParamsError(f"{where}: the module maps a batch shaped {(2, *input_shape)} to {got}; it must give "
                          f"logits shaped (batch, n_classes) = (2, {n_classes})")


class OnFeatures(nn.Module):
    """A factory's module on the pipeline's flat feature rows: standardised, reshaped to
    input_shape, then the module (`standardize` and `net` in the state dict)."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], mean, std, standardize: bool = True):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.standardize = Standardize(mean, std) if standardize else nn.Identity()
        self.net = net

    def forward(self, x):
        return self.net(self.standardize(x).reshape(-1, *self.input_shape))


def load_weights(module: nn.Module, path: str | Path, where: str) -> None:
    """A state_dict trained elsewhere, loaded with weights_only=True; it must fit exactly."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{where}: weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ParamsError(f"{where}: {path} is not a state_dict torch.load(weights_only=True) can read: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise ParamsError(f"{where}: {path} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ParamsError(f"{where}: {path} does not fit the factory's module: {exc}") from None


# ---- student families: built-in or yours, resolved and checked before any job --------

def student_factory(entry: dict, root: str | Path = ".") -> Callable:
    """f(input_shape, n_classes, size) -> nn.Module for one distill.students entry
    (distill_students): the built-in mlp (with its depth) or cnn, or your factory."""
    where = f"student family {entry['label']!r}"
    if entry["family"] == "mlp":
        depth = entry.get("depth", 2)
        return lambda shape, n_classes, size: families.mlp(shape, n_classes, size, depth=depth)
    if entry["family"] == "cnn":
        return families.cnn
    if entry["family"] == "cifar":  # the KD zoo: size is the model's name, inputs (C, H, W)
        return lambda shape, n_classes, size: zoo.build(str(size), n_classes, in_channels=shape[0])
    return load_factory(entry["family"], root, "student", where)


def teacher_net(spec: dict, input_shape: tuple[int, ...], n_classes: int, where: str) -> nn.Module:
    """The bare network of a teacher the standard engine trains or loads (inputs are
    normalised by the engine, not inside the module): a zoo model {family: cifar, size} or
    your factory f(input_shape, n_classes). Seeded by the caller."""
    if spec.get("family") == "cifar":
        return zoo.build(str(spec["size"]), n_classes, in_channels=input_shape[0])
    fn = load_factory(spec["factory"], ".", "teacher", where)
    module = fn(tuple(input_shape), n_classes)
    if not isinstance(module, nn.Module):
        raise ParamsError(f"{where}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


def family_engine(entry: dict, dataset_kind: str, input_shape: tuple[int, ...], base: str | Path = ".") -> str:
    """`stacked` or `standard` for a distill.students entry on one dataset: the names decide
    (students.builtin_engine) or, for your factory under `auto`, its module does: the
    stacked engines take modules whose buffers never change and whose only random op is
    nn.Dropout (one call per forward); anything else (BatchNorm, stochastic depth, random
    ops of its own) goes to the standard engine. `engine: stacked` on such a module is
    refused, naming why."""
    engine = builtin_engine(entry, dataset_kind)
    if engine is not None:
        return engine
    where = f"student family {entry['label']!r} ({entry['family']})"
    fn = load_factory(entry["family"], base, "student", where)
    module = build(fn, (tuple(input_shape), 3, entry["sizes"][0]), 0, where)
    reason = unstackable(module, torch.zeros((2, *input_shape)), where)
    if reason is None:
        return STACKED
    if entry.get("engine", "auto") == STACKED:
        raise ParamsError(f"{where}: engine: stacked, but {reason}; use engine: standard (or auto)")
    return STANDARD


def check_students(params: dict, base: str | Path = ".") -> None:
    """Every student family of params.yaml, built for each dataset it trains on and run on
    one batch there: a factory that is missing, has the wrong signature, raises, or maps
    (2, *input_shape) to anything but (2, n_classes) logits stops the run before any job,
    naming the family, the dataset and what is wrong. Classes are counted later (prepare),
    so the check uses a stand-in count and verifies the output follows it."""
    datasets = {d["name"]: d for d in params["prepare"]["datasets"]}
    for entry in distill_students(params["distill"]):
        if not is_factory(entry["family"]):
            continue  # built here (the cnn's input ranks are checked by params.check_params)
        fn = student_factory(entry, base)
        shapes = {dataset_input_shape(datasets[name], base): name
                  for name in (entry["datasets"] or datasets) if name in datasets}
        for shape, name in shapes.items():
            for size in entry["sizes"]:
                where = f"student family {entry['label']!r} ({entry['family']}), size {size}, dataset {name!r}"
                for n_classes in (3, 7):  # two counts: an output that ignores n_classes is caught
                    check_output(build(fn, (shape, n_classes, size), 0, where), shape, n_classes, where)


def teacher_builder(spec: str, input_shape: tuple[int, ...], n_classes: int, mean, std,
                    where: str) -> Callable[[], nn.Module]:
    """Your teacher factory as the study designs rebuild it (seeded by the caller): the
    module on standardised inputs shaped like the data's examples, built exactly as the
    teacher stage builds the reference (stages/teacher.from_factory), so a teacher of the
    reference's seed starts from the reference's weights."""
    fn = load_factory(spec, ".", "teacher", where)
    shape = tuple(int(d) for d in input_shape)
    return lambda: OnFeatures(fn(shape, n_classes), shape, mean, std)
