"""The `teacher` stage: train one teacher per dataset and save its weights AND its
logits on every split, so no student ever recomputes it; or, for a dataset with an
offline teacher (logits computed elsewhere, in any framework), write those logits.

    distillstudy teacher --data data/prepared/mnist1d.npz --meta data/prepared/mnist1d.json ...
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py; 0.5 s a job).
from distillstudy.engine import runtime  # noqa: I001

import json
import time
from pathlib import Path

import numpy as np
import torch

from distillstudy.analysis import metrics
from distillstudy.engine import factories, seeds, standard
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.recipe import Recipe
from distillstudy.artifacts import file_sha256, write_json
from distillstudy.grid import SPLITS, factory_file
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.engine.models import save_state, SinLogistic, make_teacher, teacher_architecture
from distillstudy.engine.train import fit_convex, predict, train_teacher
from distillstudy.stages.teacher_lm import run as run_lm  # noqa: F401  (language-model data)


def to_tensors(arrays: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items() if k.startswith(("x_", "y_"))}


def offline(arrays: dict[str, np.ndarray], info: dict, settings: dict, *, out_model: str, out_logits: str,
            out_meta: str) -> dict:
    """An offline teacher (prepare.datasets[*].teacher.logits): its logits, split by the
    prepare stage with their rows, become the teacher's logits file; nothing is trained,
    and the model file holds no weights."""
    logits = {f"logits_{s}": arrays[f"teacher_logits_{s}"] for s in SPLITS}
    scores = {s: metrics.all_metrics(logits[f"logits_{s}"], arrays[f"y_{s}"]) for s in SPLITS}
    record = {
        "dataset": info["name"],
        "architecture": "offline logits",
        "n_params": None,
        "seed": None,
        "data_sha256": info["sha256"],
        "source": info["teacher"],
        "metrics": scores,
        "fit": {"selection": f"offline logits from {info['teacher']['path']}, not trained here"},
        "runtime": settings,
    }
    save_state(out_model, {})
    save_npz(out_logits, logits)
    write_json(out_meta, record)
    print(f"teacher[{info['name']}]: offline logits ({info['teacher']['path']}), test accuracy "
          f"{scores['test']['accuracy']:.4f}, train mean max-prob {scores['train']['mean_max_prob']:.4f}")
    return record


def from_factory(spec: str, weights: str | None, info: dict, arrays: dict, seed: int, where: str):
    """Your teacher: the factory's module on standardised inputs shaped like the data's
    examples, or, with `weights`, on the raw inputs it was trained on elsewhere (loaded,
    not retrained). Returns the model (OnFeatures) and the record's provenance."""
    shape = tuple(info["input_shape"])
    fn = factories.load_factory(spec, ".", "teacher", where)
    net = factories.build(fn, (shape, info["n_classes"]), seed, where)
    factories.check_output(net, shape, info["n_classes"], where)
    if weights is not None:
        factories.load_weights(net, weights, where)
    model = factories.OnFeatures(net, shape, arrays["mean"], arrays["std"], standardize=weights is None)
    source = {"factory": spec, "factory_sha256": file_sha256(factory_file(spec)),
              "inputs": "raw" if weights else "standardised with the training split's mean and std"}
    if weights is not None:
        source.update(weights=weights, weights_sha256=file_sha256(weights))
    return model, source


def on_standard_engine(spec: dict, weights: str | None, info: dict, arrays: dict, seed: int, recipe: str,
                       settings: dict, precision: str, checkpoint: str | None, name: str):
    """A teacher of the standard engine (engine/standard.py): a zoo model or your factory,
    trained with teacher.recipe (the last epoch is kept, as the field's recipe does), or
    your weights loaded. Returns the module, its fit record and the source to record."""
    device = torch.device(settings["device"])
    shape, n_classes = tuple(info["input_shape"]), int(info["n_classes"])
    torch.manual_seed(seed)
    inputs = standard.Inputs(arrays, device)
    net = standard.place(factories.teacher_net(spec, shape, n_classes, name), inputs)
    if weights is not None:
        factories.load_weights(net, weights, name)
        return net.eval(), inputs, {"selection": f"weights {weights} trained elsewhere, loaded, not retrained"}
    the_recipe = Recipe.from_json(recipe)
    run = standard.Run(name=name, seed=seed, recipe=the_recipe, objective=objective_fn("", 0.0), precision=precision,
                       checkpoint=None if checkpoint is None else Path(checkpoint),
                       fingerprint=json.dumps({"data": info["sha256"], "spec": spec, "seed": seed,
                                               "recipe": the_recipe.about(), "precision": precision,
                                               "device": settings["device"], "code": standard.code_sha256(),
                                               "factory": file_sha256(factory_file(spec["factory"]))
                                               if "factory" in spec else None}, sort_keys=True))
    history = standard.fit(net, inputs, run, log=lambda line: print(line, flush=True))
    standard.remove_checkpoint(run)
    return net, inputs, {"selection": "last epoch of teacher.recipe (the standard engine)", "epochs_run": len(history),
                         "recipe": the_recipe.about(), "curves": history}


def run(*, data: str, meta: str, global_seed: int, max_epochs: int, patience: int, batch_size: int,
        lr: float, weight_decay: float, cnn_channels: int, mlp_width: int, dropout: float,
        out_model: str, out_logits: str, out_meta: str, threads: int = 1, factory: str | None = None,
        weights: str | None = None, zoo: str | None = None, recipe: str | None = None, device: str = "auto",
        precision: str = "fp32", checkpoint: str | None = None, deterministic: bool = True) -> dict:
    settings = runtime.configure(threads, device=device if recipe is not None else None, deterministic=deterministic)
    arrays = load_npz(data)
    info = json.loads(Path(meta).read_text())
    if "teacher" in info:
        return offline(arrays, info, settings, out_model=out_model, out_logits=out_logits, out_meta=out_meta)
    seed = seeds.teacher_seed(global_seed, info["name"])
    if recipe is not None or zoo is not None:
        return standard_teacher(arrays, info, settings, seed=seed, factory=factory, weights=weights, zoo=zoo,
                                recipe=recipe, precision=precision, checkpoint=checkpoint, out_model=out_model,
                                out_logits=out_logits, out_meta=out_meta)
    source = None
    if factory is not None:
        model, source = from_factory(factory, weights, info, arrays, seed, f"teacher[{info['name']}] {factory}")
    else:
        torch.manual_seed(seed)
        model = make_teacher(info["kind"], info["n_features"], info["n_classes"], arrays["mean"],
                             arrays["std"], cnn_channels, mlp_width, dropout)
    model = model.to(settings["device"])
    tensors = to_tensors(arrays, settings["device"])
    started = time.perf_counter()
    run_name = f"teacher[{info['name']}]"
    if weights is not None:
        fit = {"selection": f"weights {weights} trained elsewhere, loaded, not retrained"}
    elif isinstance(model, SinLogistic):
        fit = fit_convex(model, tensors, run_name)
    else:
        fit = train_teacher(model, tensors, seed=seed, max_epochs=max_epochs, patience=patience,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, run_name=run_name)
    model.eval()
    seconds = time.perf_counter() - started
    logits = {f"logits_{s}": predict(model, tensors[f"x_{s}"]).cpu().numpy().astype(np.float32)
              for s in SPLITS}
    scores = {s: metrics.all_metrics(logits[f"logits_{s}"], arrays[f"y_{s}"]) for s in SPLITS}
    record = {
        "dataset": info["name"],
        "architecture": factory or teacher_architecture(info["kind"]),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "seed": seed,
        "data_sha256": info["sha256"],
        "metrics": scores,
        "fit": fit,
        "runtime": settings,
    }
    if source is not None:
        record["source"] = source
    save_state(out_model, model.state_dict())
    save_npz(out_logits, logits)
    write_json(out_meta, record)
    trained = f"best epoch {fit['best_epoch']} of {fit['epochs_run']}" if "best_epoch" in fit else fit["selection"]
    print(f"teacher[{info['name']}]: {record['architecture']}, {trained}, test accuracy {scores['test']['accuracy']:.4f}, train mean max-prob "
          f"{scores['train']['mean_max_prob']:.4f}, {seconds:.1f} s")
    return record


def standard_teacher(arrays: dict, info: dict, settings: dict, *, seed: int, factory: str | None,
                     weights: str | None, zoo: str | None, recipe: str | None, precision: str,
                     checkpoint: str | None, out_model: str, out_logits: str, out_meta: str) -> dict:
    """The teacher stage on the standard engine; its record's `standard` entry is what the
    distill jobs rebuild it from to run it on augmented batches."""
    name = f"teacher[{info['name']}]"
    spec = {"family": "cifar", "size": zoo} if zoo is not None else {"factory": factory}
    if weights is None and recipe is None:
        raise ValueError(f"{name}: a zoo or image-data teacher is trained with teacher.recipe (--recipe)")
    if precision == "bf16" and settings["device"] != "cuda":
        precision = "fp32"  # bf16 autocast is a CUDA option; recorded as what ran
    started = time.perf_counter()
    net, inputs, fit = on_standard_engine(spec, weights, info, arrays, seed, recipe, settings, precision, checkpoint,
                                          name)
    seconds = time.perf_counter() - started
    logits = {f"logits_{s}": standard.logits(net, inputs, s, precision).cpu().numpy().astype(np.float32) for s in SPLITS}
    scores = {s: metrics.all_metrics(logits[f"logits_{s}"], arrays[f"y_{s}"]) for s in SPLITS}
    record = {"dataset": info["name"], "architecture": zoo or factory, "standard": spec,
              "n_params": int(sum(p.numel() for p in net.parameters())), "seed": seed, "data_sha256": info["sha256"],
              "metrics": scores, "fit": fit,
              "runtime": {**settings, "engine": "standard: autograd, torch.optim", "precision": precision}}
    if factory is not None:
        record["source"] = {"factory": factory, "factory_sha256": file_sha256(factory_file(factory)),
                            **({"weights": weights, "weights_sha256": file_sha256(weights)} if weights else {})}
    save_state(out_model, net.state_dict())
    save_npz(out_logits, logits)
    write_json(out_meta, record)
    print(f"{name}: {record['architecture']} (standard engine), {fit['selection']}, test accuracy "
          f"{scores['test']['accuracy']:.4f}, {seconds:.1f} s")
    return record
