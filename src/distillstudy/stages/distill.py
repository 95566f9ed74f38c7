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

import copy
import json
import time

import numpy as np
import torch

from distillstudy.artifacts import file_sha256, load_npz, read_record, save_npz
from distillstudy.engine import consistent, convex, factories, seeds, tuning
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, count_student_params, save_state, student_layer_sizes
from distillstudy.engine.train import stacked_logits, train_stacked
from distillstudy.errors import ParamsError, TrainingDiverged
from distillstudy.grid import (BASELINE, FIXED_TEACHER_KINDS, REFERENCE, SPLITS, TUNING_KEYS, factory_file,
                               hyper_columns, parse_cell, parse_variant)
from distillstudy.engine.teachers import factory_from_spec
# The standard engine's jobs, run through this stage module (cli: distill.train_replicate,
# distill.gather), so the distill stage's code (workflow/codedeps.py) includes them.
from distillstudy.stages.distill_standard import gather, train_replicate  # noqa: F401
from distillstudy.stages.distill_lm import run as run_lm  # noqa: F401  (language-model cells)
from distillstudy.students import DEFAULT_DEPTH, SELF_FAMILY, family_label, is_factory, student_name

# Recorded in every cell's provenance: how the cell was trained.
ENGINE = "stacked seeds, batched matmuls, closed-form backward, fused Adam"  # the mlp (train.train_stacked)
CONVEX_ENGINE = "each seed fitted to convergence by full-batch L-BFGS (a convex class, as its teacher)"
GENERIC_ENGINE = "stacked seeds, vmap(functional_call), the loss's logits gradient through autograd, fused Adam"


def training_set(arrays: dict, teacher_logits: str | None, transfer: str | None) -> tuple:
    """(x, y, teacher logits) the students train on, and a note of where they came from
    (with a consistent-teaching set's record["consistent"]: how to draw its views)."""
    if (teacher_logits is None) == (transfer is None):
        raise ValueError("give exactly one of teacher_logits (the reference) and transfer (a variant's set)")
    if transfer is not None:
        tset = load_npz(transfer)
        record = read_record(tset)
        views, generation = record.get("consistent"), record.get("generation")
        # A born-again generation's targets are per replicate (M, n, C): member_logits.
        targets = tset["member_logits"] if "member_logits" in tset else tset["logits"]
        return tset["x"], tset["y"], targets, {
            "transfer_set": str(transfer), "n_transfer": int(len(tset["y"])),
            **({"consistent": {**views, "logits_val": tset["logits_val"]}} if views else {}),
            **({"generation": generation} if generation else {})}
    teacher = load_npz(teacher_logits)
    return (arrays["x_train"], arrays["y_train"], teacher["logits_train"],
            {"transfer_set": None, "n_transfer": int(len(arrays["y_train"]))})


def run(*, data: str, dataset: str, size: int, cell: str,
        n_seeds: int, global_seed: int, epochs: int, batch_size: int, lr: float,
        weight_decay: float, out_model: str, out_logits: str, teacher_logits: str | None = None,
        transfer: str | None = None, variant: str = REFERENCE, threads: int = 1,
        family: str = "mlp", depth: int | None = None, tune: dict | None = None,
        teacher_model: str | None = None, previous_generation: str | None = None) -> dict:
    """Train every seed of one cell of one student family (`family`: mlp, cnn or your
    factory '<file>.py:<function>'; `depth`: an mlp's hidden layers). With `tune`
    ({"lr": [...], "weight_decay": [...], "epochs": [...]}) the cell is trained at every
    candidate of that grid and reported at the one chosen on validation
    (engine/tuning.py); `lr`, `weight_decay`, `epochs` are then the untuned setting, whose
    logits a baseline cell also keeps (untuned_logits_*) when it is a candidate.
    `teacher_model`: the reference teacher's weights, which a consistent-teaching set
    (grid.CONSISTENT) needs: its students meet fresh views each epoch, the teacher run on each.
    `previous_generation`: born-again generation k > 1's targets, generation k - 1's alpha = 1
    cell, replicate r teaching replicate r (with generation 1's transfer set as `transfer`)."""
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
    generation = source.get("generation")
    k = parse_variant(variant)["value"] if generation else None
    if (label == SELF_FAMILY) != (generation is not None) or (k is not None and (k > 1) != bool(previous_generation)):
        raise ParamsError(f"distill[{dataset}, {variant}]: the {SELF_FAMILY!r} family (the teacher's own "
                          "architecture) trains on born-again generation 1's transfer set, and only it does; "
                          "generation k > 1 also needs generation k - 1's cell (--previous-generation)")
    # Each generation draws fresh initial weights (Furlanello et al. train every generation from
    # scratch): its number takes the size's place in the seeds; replicate r is still paired.
    member_seeds = seeds.student_seeds(global_seed, dataset, k or size, n_seeds, family=label)
    if generation:
        source["generation"] = {**generation, "k": k}
    if previous_generation:  # (M, n, C): replicate r's teacher is replicate r of generation k - 1
        previous = load_npz(previous_generation)
        t_np = previous["logits_train"]
        source["generation"] = {**generation, "k": k, "previous": str(previous_generation),
                                "previous_sha256": file_sha256(previous_generation),
                                "previous_seeds": read_record(previous)["seeds"]}
        if t_np.shape[0] != len(member_seeds):
            raise ParamsError(f"distill[{dataset}, {variant}]: generation {k - 1} has {t_np.shape[0]} replicates, "
                              f"this cell {len(member_seeds)} (distill.seeds changed?)")
    x, y, t = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (x_np, y_np, t_np))
    inputs = {s: torch.from_numpy(arrays[f"x_{s}"]).to(device) for s in SPLITS}
    where = "" if variant == REFERENCE else f"{variant}, "
    run_name = f"distill[{dataset}, {where}{student_name(label, size)}, {cell}]"
    objective = objective_fn(spec["objective"], spec["alpha"], spec["hyper"])
    if family == SELF_FAMILY:
        def build():
            return _own_architecture(arrays, generation["teacher"], member_seeds, device, run_name)
    elif family == "mlp":
        def build():
            return _closed_form(arrays, t, entry["depth"], size, member_seeds, device)
    else:
        def build():
            return _generic(arrays, x, t, {**entry, "label": label}, size, member_seeds, device)
    views = _views(source.pop("consistent", None), arrays, teacher_model, device, run_name)
    levels = sorted({int(e) for e in tune["epochs"]}) if tune else [int(epochs)]
    grid = tuning.runs(tune["lr"], tune["weight_decay"]) if tune else [(float(lr), float(weight_decay))]
    started = time.perf_counter()
    candidates, kept = [], {}
    for run_lr, run_decay in grid:
        student = build()

        def checkpoint(epoch, student=student, run_lr=run_lr, run_decay=run_decay):
            if epoch in levels:  # the logits of every split and the weights at this epochs level
                logits = {s: student["logits"](inputs[s]).cpu().numpy().astype(np.float32) for s in SPLITS}
                kept[(run_lr, run_decay, epoch)] = (logits, copy.deepcopy(student["state"]()))
        try:
            history = student["train"](x, y, t, objective, epochs=levels[-1], batch_size=batch_size, lr=run_lr,
                                       weight_decay=run_decay, run_name=run_name, on_epoch=checkpoint,
                                       epoch_data=None if views is None else views(student.get("inputs")))
        except TrainingDiverged as exc:
            if not tune:
                raise
            # The whole run is out, its earlier checkpoints too: an lr that diverges later is
            # unstable, and each candidate keeps the loss history its run finished with.
            for e in levels:
                kept.pop((run_lr, run_decay, e), None)
                candidates.append({"lr": run_lr, "weight_decay": run_decay, "epochs": e, "diverged": str(exc)})
            continue
        for e in levels:
            if (run_lr, run_decay, e) in kept:
                candidates.append({"lr": run_lr, "weight_decay": run_decay, "epochs": e, "final_train_loss": history[e - 1],
                                   **tuning.val_scores(kept[(run_lr, run_decay, e)][0]["val"], arrays["y_val"])})
    try:
        chosen = tuning.choose(candidates)
    except ValueError:
        raise TrainingDiverged(f"{run_name}: every tuning candidate diverged: "
                               f"{'; '.join(c['diverged'] for c in candidates)}") from None
    seconds = time.perf_counter() - started
    logits, state = kept[(chosen["lr"], chosen["weight_decay"], chosen["epochs"])]
    out = {f"logits_{s}": logits[s] for s in SPLITS}
    untuned = (float(lr), float(weight_decay), int(epochs))
    if tune and spec["model"] == BASELINE and untuned in kept:  # the tuned baseline's comparison
        out.update({f"untuned_logits_{s}": kept[untuned][0][s] for s in SPLITS})
    if not all(np.isfinite(v).all() for v in out.values()):
        raise RuntimeError(f"{run_name}: non-finite logits after training")
    record = {
        "dataset": dataset, "variant": variant, "family": label, "family_spec": family,
        "student_size": int(size), "cell": cell, **spec, **hyper_columns(spec["hyper"]), **source,
        "seeds": member_seeds, **student["about"],
        "epochs": chosen["epochs"], "batch_size": batch_size, "lr": chosen["lr"], "weight_decay": chosen["weight_decay"],
        "final_train_loss": chosen["final_train_loss"],
        "selection": "epochs, lr and weight decay chosen on validation" if tune else "last epoch",
        "runtime": {**settings, "engine": student["engine"], "stacked_members": len(member_seeds)},
    }
    if views is not None:  # no seconds in the record: reruns write the same bytes
        record["consistent"] = {k: v for k, v in views.last.settings().items() if not k.endswith("seconds")}
        print(f"{run_name}: consistent teaching, {views.last.epochs_drawn} epochs of views: "
              f"{views.last.augment_seconds:.1f} s drawing them, {views.last.teacher_seconds:.1f} s in the teacher")
    if tune:
        record["tuning"] = {"grid": {k: sorted(float(v) for v in tune[k]) for k in TUNING_KEYS},
                            "candidates": candidates, "chosen": tuning.candidate_name(**{k: chosen[k] for k in TUNING_KEYS}),
                            "untuned": dict(zip(TUNING_KEYS, untuned)), "untuned_kept": "untuned_logits_test" in out}
    save_state(out_model, state)
    save_npz(out_logits, {**out, "record": np.array(json.dumps(record, sort_keys=True))})
    print(f"{run_name}: {len(member_seeds)} seeds, {tuning.candidate_name(chosen['lr'], chosen['weight_decay'], chosen['epochs'])}"
          f"{f' chosen of {len(candidates)}' if tune else ''}, final loss {chosen['final_train_loss']:.4f}, {seconds:.1f} s")
    return record


class _Views:
    """A consistent-teaching set's views (engine/consistent.py), made per training run:
    `views(inputs)` -> epoch_data, the student's input map applied to each view."""

    def __init__(self, spec: dict, arrays: dict, teacher, device):
        self.spec, self.arrays, self.teacher, self.device, self.last = spec, arrays, teacher, device, None

    def __call__(self, inputs=None):
        s = self.spec
        self.last = consistent.consistent_views(s["kind"], self.arrays["x_train"], self.teacher, seed=s["seed"],
                                                noise=s["noise"], shift=s["shift"], pixel_shift=s["pixel_shift"],
                                                device=self.device, inputs=inputs)
        return self.last


def _views(spec: dict | None, arrays: dict, teacher_model: str | None, device, run_name: str) -> _Views | None:
    if spec is None:
        return None
    if teacher_model is None:
        raise ParamsError(f"{run_name}: a consistent-teaching transfer set needs the reference teacher's weights "
                          "(--teacher-model models/teachers/<dataset>.pt)")
    teacher = consistent.reference_teacher(spec["teacher"], arrays, teacher_model, spec.pop("logits_val"), device,
                                           run_name)
    return _Views(spec, arrays, teacher, device)


def _own_architecture(arrays, spec, member_seeds, device, where) -> dict:
    """The teacher's own architecture as the students (born-again generations): built as the
    reference teacher is (its knobs, or your factory; standardising inside, so on raw inputs),
    trained by engine/generic.py, its dropout drawn per replicate (engine/stacked.py)."""
    factory = factory_from_spec(spec, arrays, device, where)
    sample = torch.from_numpy(arrays["x_train"][:2]).to(device)
    stack = GenericStack(factory.module, member_seeds, sample, where)
    about = {"architecture": factory.architecture, "n_params": int(sum(p[0].numel() for p in stack.params.values()))}
    if spec["kind"] in FIXED_TEACHER_KINDS:  # a convex class: fitted as its teacher was (engine/convex.py)
        def train(x, y, t, objective, *, epochs, on_epoch, run_name, **_):
            final = convex.fit_members(stack, x, y, t, objective, run_name)
            on_epoch(epochs)  # the one "checkpoint": the fit
            return [float(np.mean(final))] * epochs
        return {"train": train, "state": lambda: {**{k: v.detach() for k, v in stack.params.items()}, **stack.buffers},
                "engine": CONVEX_ENGINE, "logits": stack.logits, "about": about}
    return {"train": lambda x, y, t, objective, **how: train_generic(stack, x, y, t, objective, **how),
            "state": lambda: {**{k: v.detach() for k, v in stack.params.items()}, **stack.buffers},
            "engine": GENERIC_ENGINE, "logits": stack.logits, "about": about}


def _closed_form(arrays, t, depth, size, member_seeds, device) -> dict:
    """The mlp: StackedMLP and train.train_stacked's closed-form backward."""
    sizes = student_layer_sizes(arrays["x_train"].shape[1], size, t.shape[1], depth)
    # Standardised with the training split's statistics in every variant, so a transfer
    # set's copies or subset are seen on the scale the test points are.
    model = StackedMLP(sizes, member_seeds, arrays["mean"], arrays["std"]).to(device)
    return {"train": lambda x, y, t, objective, **how: train_stacked(model, x, y, t, objective, **how),
            "state": model.state_dict, "engine": ENGINE,
            "logits": lambda inputs: stacked_logits(model, inputs),
            "about": {"layer_sizes": sizes, "depth": depth, "n_params": count_student_params(sizes)}}


def _generic(arrays, x, t, entry, size, member_seeds, device) -> dict:
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

    stack = GenericStack(lambda: fn(shape, n_classes, size), member_seeds, standardise(x[:2]), where)
    about = {"input_shape": list(shape), "n_params": int(sum(p[0].numel() for p in stack.params.values()))}
    if is_factory(entry["family"]):
        about["factory_sha256"] = file_sha256(factory_file(entry["family"]))
    return {"train": lambda x, y, t, objective, **how: train_generic(stack, standardise(x), y, t, objective, **how),
            "inputs": standardise,  # a consistent-teaching view, mapped as x is
            "state": lambda: {**{k: v.detach() for k, v in stack.params.items()}, **stack.buffers},
            "engine": GENERIC_ENGINE, "logits": lambda inputs: stack.logits(standardise(inputs)), "about": about}

