"""The `distill` stage: one grid cell = one (dataset, student size, cell) with all
its seeds trained together as a stacked model.

    distillstudy distill --dataset mnist1d --size 64 --cell kd_T4_mix0.9 ...

Cells (grid.parse_cell): `baseline` (alpha = 0, hard labels only),
`<objective>[_<setting>]_mix<alpha>` (L = (1 - alpha) CE + alpha term, the term one
of distillstudy.objectives with that hyper-parameter setting: kd_T4_mix0.9,
logit_mse_mix0.9, dkd_alpha1_beta8_T4_mix0.5, ...) and `control` (alpha = 0 on an
augmented transfer set: the same copies with their source's hard label, no teacher). Every cell of a (dataset, size), in every study-design variant,
uses the same seeds, hence the same initial weights per replicate (and the same batch
order where the training sets have the same size): comparisons are paired.
Students are reported at their last epoch (a fixed budget; no test peeking).

The students learn from the reference teacher's logits on the training split
(`--teacher-logits`), or from a variant's transfer set (`--transfer`, built by the
`transfer` stage: its own inputs x, hard labels y and teacher logits).
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py; 0.5 s a job).
from distillstudy.engine import runtime  # noqa: I001

import json
import time

import numpy as np
import torch

from distillstudy.artifacts import file_sha256, load_npz, save_npz
from distillstudy.engine import factories, seeds
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, count_student_params, save_state, student_layer_sizes
from distillstudy.engine.train import stacked_logits, train_stacked
from distillstudy.errors import ParamsError
from distillstudy.grid import HYPER_COLUMN, REFERENCE, SPLITS, factory_file, parse_cell
from distillstudy.students import DEFAULT_DEPTH, family_label, is_factory, student_name

# Recorded in every cell's provenance: how the cell was trained.
ENGINE = "stacked seeds, batched matmuls, closed-form backward, fused Adam"  # the mlp (train.train_stacked)
GENERIC_ENGINE = "stacked seeds, vmap(functional_call), the loss's logits gradient through autograd, fused Adam"


def training_set(arrays: dict, teacher_logits: str | None, transfer: str | None) -> tuple:
    """(x, y, teacher logits) the students train on, and a note of where they came from."""
    if (teacher_logits is None) == (transfer is None):
        raise ValueError("give exactly one of teacher_logits (the reference) and transfer (a variant's set)")
    if transfer is not None:
        tset = load_npz(transfer)
        return tset["x"], tset["y"], tset["logits"], {"transfer_set": str(transfer), "n_transfer": int(len(tset["y"]))}
    teacher = load_npz(teacher_logits)
    return (arrays["x_train"], arrays["y_train"], teacher["logits_train"],
            {"transfer_set": None, "n_transfer": int(len(arrays["y_train"]))})


def hyper_columns(hyper: dict) -> dict:
    """Every hyper-parameter column of results.csv: the setting's values, None elsewhere."""
    return {column: hyper.get(key) for key, column in HYPER_COLUMN.items()}


def run(*, data: str, dataset: str, size: int, cell: str,
        n_seeds: int, global_seed: int, epochs: int, batch_size: int, lr: float,
        weight_decay: float, out_model: str, out_logits: str, teacher_logits: str | None = None,
        transfer: str | None = None, variant: str = REFERENCE, threads: int = 1,
        family: str = "mlp", depth: int | None = None) -> dict:
    """Train every seed of one cell of one student family (`family`: mlp, cnn or your
    factory '<file>.py:<function>'; `depth`: an mlp's hidden layers)."""
    try:
        spec = parse_cell(cell)
    except ValueError as error:
        raise ParamsError(str(error)) from None
    if depth is not None and family != "mlp":
        raise ParamsError(f"--depth is for the mlp family, not {family!r}")
    entry = {"family": family, "depth": DEFAULT_DEPTH if depth is None else int(depth)}
    label = family_label(entry)
    settings = runtime.configure(threads)
    device = settings["device"]
    arrays = load_npz(data)
    x_np, y_np, t_np, source = training_set(arrays, teacher_logits, transfer)
    member_seeds = seeds.student_seeds(global_seed, dataset, size, n_seeds, family=label)
    n_classes = t_np.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(y_np)).to(device)
    t = torch.from_numpy(np.ascontiguousarray(t_np)).to(device)
    where = "" if variant == REFERENCE else f"{variant}, "
    run_name = f"distill[{dataset}, {where}{student_name(label, size)}, {cell}]"
    objective = objective_fn(spec["objective"], spec["alpha"], spec["hyper"])
    train = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, run_name=run_name)
    started = time.perf_counter()
    if family == "mlp":
        student = _closed_form(arrays, x, y, t, objective, entry["depth"], size, member_seeds, device, train)
    else:
        student = _generic(arrays, x, y, t, objective, {**entry, "label": label}, size, member_seeds, device, train)
    seconds = time.perf_counter() - started
    logits = {f"logits_{s}": student["logits"](torch.from_numpy(arrays[f"x_{s}"]).to(device))
              .cpu().numpy().astype(np.float32) for s in SPLITS}
    if not all(np.isfinite(v).all() for v in logits.values()):
        raise RuntimeError(f"{run_name}: non-finite logits after training")
    history = student["history"]
    record = {
        "dataset": dataset, "variant": variant, "family": label, "family_spec": family,
        "student_size": int(size), "cell": cell, **spec, **hyper_columns(spec["hyper"]), **source,
        "seeds": member_seeds, **student["about"],
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "final_train_loss": history[-1], "selection": "last epoch",
        "runtime": {**settings, "engine": student["engine"], "stacked_members": len(member_seeds)},
    }
    save_state(out_model, student["state"])
    save_npz(out_logits, {**logits, "record": np.array(json.dumps(record, sort_keys=True))})
    print(f"{run_name}: {len(member_seeds)} seeds, {epochs} epochs, final loss {history[-1]:.4f}, "
          f"{seconds:.1f} s")
    return record


def _closed_form(arrays, x, y, t, objective, depth, size, member_seeds, device, train) -> dict:
    """The mlp: StackedMLP and train.train_stacked's closed-form backward."""
    sizes = student_layer_sizes(arrays["x_train"].shape[1], size, t.shape[1], depth)
    # Standardised with the training split's statistics in every variant, so a transfer
    # set's copies or subset are seen on the scale the test points are.
    model = StackedMLP(sizes, member_seeds, arrays["mean"], arrays["std"]).to(device)
    history = train_stacked(model, x, y, t, objective, **train)
    return {"history": history, "state": model.state_dict(), "engine": ENGINE,
            "logits": lambda inputs: stacked_logits(model, inputs),
            "about": {"layer_sizes": sizes, "depth": depth, "n_params": count_student_params(sizes)}}


def _generic(arrays, x, y, t, objective, entry, size, member_seeds, device, train) -> dict:
    """Any other family: built by its factory, trained by engine/generic.py (vmap over the
    seeds). Inputs are standardised with the training split's statistics, then reshaped
    to one example's shape (input_shape) as the factory contract says."""
    shape = tuple(int(d) for d in arrays["input_shape"])
    n_classes = t.shape[1]
    where = f"student family {entry['label']!r} ({entry['family']}), size {size}"
    fn = factories.student_factory(entry, ".")
    # One batch through the first replicate's module before training: a wrong output shape
    # stops here with the family's name, not deep inside vmap.
    factories.check_output(factories.build(fn, (shape, n_classes, size), member_seeds[0], where), shape,
                           n_classes, where)
    mean = torch.from_numpy(arrays["mean"]).to(device)
    std = torch.from_numpy(arrays["std"]).to(device)

    def standardise(inputs):
        return ((inputs - mean) / std).reshape(-1, *shape)

    sample = standardise(x[:2])
    stack = GenericStack(lambda: fn(shape, n_classes, size), member_seeds, sample, where)
    history = train_generic(stack, standardise(x), y, t, objective, **train)
    about = {"input_shape": list(shape), "n_params": int(sum(p[0].numel() for p in stack.params.values()))}
    if is_factory(entry["family"]):
        about["factory_sha256"] = file_sha256(factory_file(entry["family"]))
    state = {**{k: v.detach() for k, v in stack.params.items()}, **stack.buffers}
    return {"history": history, "state": state, "engine": GENERIC_ENGINE,
            "logits": lambda inputs: stack.logits(standardise(inputs)), "about": about}


def read_record(logits_npz: dict) -> dict:
    return json.loads(str(logits_npz["record"]))
