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
from distillstudy.engine import factories, seeds
from distillstudy.artifacts import file_sha256, write_json
from distillstudy.grid import SPLITS, factory_file
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.engine.models import save_state, SinLogistic, make_teacher, teacher_architecture
from distillstudy.engine.train import fit_convex, predict, train_teacher


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


def run(*, data: str, meta: str, global_seed: int, max_epochs: int, patience: int, batch_size: int,
        lr: float, weight_decay: float, cnn_channels: int, mlp_width: int, dropout: float,
        out_model: str, out_logits: str, out_meta: str, threads: int = 1, factory: str | None = None,
        weights: str | None = None) -> dict:
    settings = runtime.configure(threads)
    arrays = load_npz(data)
    info = json.loads(Path(meta).read_text())
    if "teacher" in info:
        return offline(arrays, info, settings, out_model=out_model, out_logits=out_logits, out_meta=out_meta)
    seed = seeds.teacher_seed(global_seed, info["name"])
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
