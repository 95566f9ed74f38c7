"""The distill stage on the standard engine (engine/standard.py): one job per (cell,
replicate), then one job that gathers a cell's replicates into the file every engine
writes, so evaluate, the report and the statistics read it as any other cell.

    distillstudy distill --replicate 0 --recipe '{...}' ... --out-logits <cell>/seed0.logits.npz
    distillstudy distill --gather <cell>/seed0.logits.npz <cell>/seed1.logits.npz ... --out-logits <cell>.logits.npz

Replicate r of every cell of a (dataset, family, size) starts from the same initial weights
(seed r of seeds.student_seeds) and meets the same batches and the same augmented views
(the engine derives them from that seed and the epoch): comparisons stay paired by seed.
The stacked engines' own module (stages/distill.py) imports this one; no other does.
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py).
from distillstudy.engine import runtime  # noqa: I001

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from distillstudy.artifacts import file_sha256, load_npz, read_record, save_npz
from distillstudy.engine import factories, seeds, standard
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.models import save_state, save_states
from distillstudy.engine.recipe import Recipe
from distillstudy.errors import ParamsError
from distillstudy.grid import REFERENCE, SPLITS, factory_file, hyper_columns, parse_cell
from distillstudy.students import family_label, is_factory, student_name

#: Recorded in every standard-engine cell's provenance.
ENGINE = "standard: one replicate per job, autograd, torch.optim"


def _log(line: str) -> None:
    print(line, flush=True)  # a long job's log file shows each epoch as it ends


def fingerprint(**parts) -> str:
    """sha256 of everything a replicate's result depends on (params, data, the teacher, your
    factory, the package's code): a checkpoint made under any other is not resumed."""
    return hashlib.sha256(json.dumps({**parts, "code": standard.code_sha256()}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def teacher_module(teacher_meta: dict, teacher_model: str, inputs, n_classes: int, where: str):
    """The teacher the standard engine trained (or loaded) for this dataset, rebuilt from its
    record and weights: the module the student's augmented batches run through."""
    spec = teacher_meta.get("standard")
    if spec is None:
        raise ParamsError(f"{where}: the teacher of {teacher_meta['dataset']!r} was not trained by the standard "
                          "engine, so it cannot run on augmented image batches (give the dataset a teacher "
                          "{family: cifar, size: ...} or a factory)")
    net = factories.teacher_net(spec, inputs.shape, n_classes, where)
    net.load_state_dict(torch.load(teacher_model, map_location="cpu", weights_only=True))
    return standard.place(net, inputs).eval()


def train_replicate(*, data: str, teacher_logits: str, dataset: str, family: str, size, cell: str, replicate: int,
                    n_seeds: int, global_seed: int, recipe: str, device: str, precision: str,
                    out_model: str, out_logits: str, checkpoint: str | None = None,
                    teacher_model: str | None = None, teacher_meta: str | None = None, threads: int = 1,
                    deterministic: bool = True) -> dict:
    """Train replicate `replicate` of one cell and write its logits (1, n, C) on every split
    and its weights; `recipe` is the distill.recipe section as JSON."""
    spec = parse_cell(cell)
    label = family_label({"family": family})
    settings = runtime.configure(threads, device=device, deterministic=deterministic)
    dev = torch.device(settings["device"])
    the_recipe = Recipe.from_json(recipe)
    if precision == "bf16" and dev.type != "cuda":
        precision = "fp32"  # autocast to bf16 is a CUDA option; recorded as what ran
    member_seeds = seeds.student_seeds(global_seed, dataset, size, n_seeds, family=label)
    if not 0 <= replicate < len(member_seeds):
        raise ParamsError(f"distill[{dataset}]: replicate {replicate} is not one of 0..{len(member_seeds) - 1}")
    seed = member_seeds[replicate]
    arrays = load_npz(data)
    shape = tuple(int(d) for d in arrays["input_shape"])
    teacher = load_npz(teacher_logits)
    n_classes = teacher["logits_train"].shape[1]
    name = f"distill[{dataset}, {student_name(label, size)}, {cell}, replicate {replicate}]"
    entry = {"family": family, "label": label}
    fn = factories.student_factory(entry, ".")
    inputs = standard.Inputs(arrays, dev)
    model = standard.place(factories.build(fn, (shape, n_classes, size), seed, name), inputs)
    objective = objective_fn(spec["objective"], spec["alpha"], spec["hyper"])
    online = objective.alpha != 0 and the_recipe.augments
    net = None
    if online:
        if teacher_model is None or teacher_meta is None:
            raise ParamsError(f"{name}: an augmenting recipe runs the teacher on each batch: give --teacher-model "
                              "and --teacher-meta")
        meta = json.loads(Path(teacher_meta).read_text())
        net = teacher_module(meta, teacher_model, inputs, n_classes, name)
    cached = None if online or objective.alpha == 0 else torch.from_numpy(teacher["logits_train"]).to(dev)
    run = standard.Run(name=name, seed=seed, recipe=the_recipe, objective=objective, precision=precision,
                       checkpoint=None if checkpoint is None else Path(checkpoint),
                       fingerprint=fingerprint(data=file_sha256(data), teacher=file_sha256(teacher_logits),
                                               teacher_model=file_sha256(teacher_model) if online else None,
                                               cell=cell, seed=seed, recipe=the_recipe.about(), precision=precision,
                                               device=settings["device"], family=family, size=size,
                                               factory=file_sha256(factory_file(family)) if is_factory(family) else None))
    started = time.perf_counter()
    history = standard.fit(model, inputs, run, teacher=net, teacher_logits=cached, log=_log)
    seconds = time.perf_counter() - started
    out = {f"logits_{s}": standard.logits(model, inputs, s, precision).cpu().numpy().astype(np.float32)[None]
           for s in SPLITS}
    if not all(np.isfinite(v).all() for v in out.values()):
        raise RuntimeError(f"{name}: non-finite logits after training")
    record = {
        "dataset": dataset, "variant": REFERENCE, "family": label, "family_spec": family,
        "student_size": size, "cell": cell, **spec, **hyper_columns(spec["hyper"]),
        "transfer_set": None, "n_transfer": int(len(arrays["y_train"])), "seeds": [seed], "replicate": replicate,
        "n_params": int(sum(p.numel() for p in model.parameters())), "input_shape": list(shape),
        "epochs": the_recipe.epochs, "batch_size": the_recipe.batch_size, "lr": the_recipe.lr,
        "weight_decay": the_recipe.weight_decay, "recipe": the_recipe.about(),
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "selection": "last epoch", "curves": [history],
        "teacher": "run online on each augmented batch" if online else "cached logits",
        "runtime": {**settings, "engine": ENGINE, "precision": precision, "stacked_members": 1},
    }
    if is_factory(family):
        record["factory_sha256"] = file_sha256(factory_file(family))
    save_state(out_model, model.state_dict())
    save_npz(out_logits, {**out, "record": np.array(json.dumps(record, sort_keys=True))})
    standard.remove_checkpoint(run)
    _log(f"{name}: {the_recipe.epochs} epochs, final loss {record['final_train_loss']:.4f}, "
         f"val acc {history[-1]['val_accuracy']:.4f}, {seconds:.1f} s")
    return record


def gather(replicates: list[str], *, out_model: str, out_logits: str) -> dict:
    """A cell's replicates (in replicate order) as one cell file: logits (M, n, C) per split,
    the record with every seed, the loss curves per replicate; weights as {replicate<r>: state}."""
    cells = [load_npz(path) for path in replicates]
    records = [read_record(c) for c in cells]
    first = records[0]
    for path, record, r in zip(replicates, records, range(len(records))):
        same = {k: record[k] for k in ("dataset", "cell", "family", "student_size", "recipe")}
        if same != {k: first[k] for k in same} or record["replicate"] != r:
            raise ValueError(f"{path}: replicate {record['replicate']} of {same}, expected replicate {r} of "
                             f"{ {k: first[k] for k in same} }")
    record = {**first, "seeds": [s for rec in records for s in rec["seeds"]],
              "final_train_loss": float(np.mean([rec["final_train_loss"] for rec in records])),
              "curves": [rec["curves"][0] for rec in records],
              "runtime": {**first["runtime"], "replicate_jobs": len(records)}}
    record.pop("replicate")
    out = {f"logits_{s}": np.concatenate([c[f"logits_{s}"] for c in cells]) for s in SPLITS}
    save_states(out_model, {f"replicate{r}": torch.load(Path(p).with_suffix("").with_suffix(".pt"),
                                                        weights_only=True)
                            for r, p in enumerate(replicates)})
    save_npz(out_logits, {**out, "record": np.array(json.dumps(record, sort_keys=True))})
    print(f"distill[{first['dataset']}, {first['cell']}]: gathered {len(records)} replicates", file=sys.stdout)
    return record
