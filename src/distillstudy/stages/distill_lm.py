"""The distill stage on language-model data: one job per (dataset, student, cell) trains the
cell's replicates one after the other (engine/lm_train.py) and scores each (engine/lm_eval.py).

    distillstudy distill --lm '{"dataset": "hmm", "family": "gpt", "size": 16, "cell": "fkl_T1_data_mix0.9", ...}' \
        --data data/prepared/hmm.npz --teacher-model models/teachers/hmm.lm.pt \
        --out-model models/students/hmm/gpt-16/fkl_T1_data_mix0.9.lm.pt \
        --out-logits models/students/hmm/gpt-16/fkl_T1_data_mix0.9.lm.npz

Replicate r of every cell of a (dataset, family, size) starts from the same initial weights
(seed r of seeds.student_seeds) and meets the same batch order, and every model of a dataset
is judged on the same sampling streams (lm_eval.sample_seed): gains are paired by seed.
Per replicate, a checkpoint every epoch and, once it is scored, a finished-replicate file under
--checkpoint (a folder outside the DVC outputs): a killed job resumes where it stopped and
ends with the bits of an uninterrupted one. The distill stage's module imports this one.
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py).
from distillstudy.engine import runtime  # noqa: I001

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from distillstudy.artifacts import file_sha256, load_npz, save_npz, write_bytes
from distillstudy.engine import lm_eval, lm_models, lm_train, seeds, standard
from distillstudy.engine.models import save_states
from distillstudy.engine.recipe import Recipe
from distillstudy.lm_grid import parse_lm_cell
from distillstudy.students import family_label, student_name


def _finished(path: Path, fingerprint: str):
    """A finished replicate's (state, row) saved by an earlier, killed run of this job."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (unreadable: only lost time)
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def run(*, job: dict, data: str, out_model: str, out_logits: str, teacher_model: str | None = None,
        checkpoint: str | None = None, threads: int = 1) -> dict:
    """`job`: dataset, family, size, cell, seeds (replicates), seed (global), recipe (distill.lm_recipe),
    teacher (the dataset's teacher entry), lm_samples."""
    # distill.device: CUDA when asked for (or auto and present); the data then live on the GPU.
    settings = runtime.configure(threads, device=job.get("device", "cpu"))
    dev = torch.device(settings["device"])
    arrays = load_npz(data)
    vocab_size, bos = int(arrays["vocab_size"]), int(arrays["bos"])
    block = int(arrays["tokens_train"].shape[1]) - 1
    dataset, family, size, cell = job["dataset"], job["family"], int(job["size"]), job["cell"]
    spec = parse_lm_cell(cell)
    label = family_label({"family": family})
    student = student_name(label, size)
    recipe = Recipe.from_params(job["recipe"])
    name = f"distill[{dataset}, {student}, {cell}]"
    teacher = lm_models.load_teacher(job["teacher"], vocab_size, block, teacher_model, f"teacher of {dataset}").to(dev)
    truth = lm_eval.truth_of(arrays)
    train = torch.from_numpy(arrays["tokens_train"]).to(dev)
    val = torch.from_numpy(arrays["tokens_val"]).to(dev)
    member_seeds = seeds.student_seeds(job["seed"], dataset, size, job["seeds"], family=label)
    base = {"job": job, "data": file_sha256(data), "teacher": file_sha256(teacher_model) if teacher_model else None,
            "code": standard.code_sha256()}
    states, rows, curves = {}, [], []
    started = time.perf_counter()
    for r, seed in enumerate(member_seeds):
        fingerprint = json.dumps({**base, "replicate": r}, sort_keys=True)
        folder = None if checkpoint is None else Path(checkpoint)
        done = None if folder is None else _finished(folder / f"seed{r}.done.pt", fingerprint)
        if done is None:
            model = lm_models.build_lm(family, vocab_size, block, size, seed, name).to(dev)
            run_spec = lm_train.LMRun(
                name=f"{name} replicate {r}", seed=seed, recipe=recipe, objective=spec["objective"],
                source=spec["source"], alpha=spec["alpha"], on_policy_fraction=spec["on_policy_fraction"],
                hyper=spec["hyper"], bos=bos, checkpoint=None if folder is None else folder / f"seed{r}.pt",
                fingerprint=fingerprint)
            history = lm_train.fit(model, train, val, run_spec, teacher=teacher)
            metrics = {split: lm_eval.evaluate(model, arrays, split, teacher=teacher, truth=truth, device=dev,
                                               n_samples=job["lm_samples"],
                                               sample_seed=lm_eval.sample_seed(job["seed"], dataset, split))
                       for split in lm_eval.EVAL_SPLITS}
            done = {"fingerprint": fingerprint, "state": {k: v.cpu() for k, v in model.state_dict().items()},
                    "result": json.dumps({"metrics": metrics, "history": history, "n_params": lm_models.n_params(model)})}
            if folder is not None:
                buffer = io.BytesIO()
                torch.save(done, buffer)
                write_bytes(folder / f"seed{r}.done.pt", buffer.getvalue())
                standard.remove_checkpoint(run_spec)
        result = json.loads(done["result"])
        states[f"replicate{r}"] = done["state"]
        curves.append(result["history"])
        for split, values in result["metrics"].items():
            rows += [{"replicate": r, "seed": seed, "split": split, "metric": k, "value": v} for k, v in values.items()]
        n_params = result["n_params"]
    values = np.array([row["value"] for row in rows], dtype=np.float64)
    if not np.isfinite(values).all():
        raise RuntimeError(f"{name}: a metric is not finite")
    record = {"dataset": dataset, "student": student, "family": label, "family_spec": family, "student_size": size,
              "n_params": n_params, "cell": cell, **{k: v for k, v in spec.items() if k != "hyper"},
              "hyper": spec["hyper"], "seeds": member_seeds, "recipe": recipe.about(), "rows": rows,
              "curves": curves, "teacher": job["teacher"], "runtime": {**settings, "engine": lm_train.__name__}}
    seconds = time.perf_counter() - started  # logged, not recorded: reruns write identical files
    save_states(out_model, states)
    save_npz(out_logits, {"values": values, "record": np.array(json.dumps(record, sort_keys=True))})
    if checkpoint is not None:
        for r in range(len(member_seeds)):
            (Path(checkpoint) / f"seed{r}.done.pt").unlink(missing_ok=True)
    test = [row["value"] for row in rows if row["split"] == "test" and row["metric"] == "nll"]
    print(f"{name}: {len(member_seeds)} replicates, test nll {np.mean(test):.4f}, {seconds:.1f} s",
          flush=True)
    return record
