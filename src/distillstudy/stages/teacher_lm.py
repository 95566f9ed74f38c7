"""The teacher stage on language-model data: train the dataset's teacher (gpt or your factory,
teacher.lm_recipe) or load a local Hugging Face causal LM, then score it, and on synthetic_lm
the oracle (the language's true next-token distribution) beside it.

    distillstudy teacher --lm '{"dataset": "hmm", "teacher": {"family": "gpt", "size": 64}, ...}' \
        --data data/prepared/hmm.npz --out-model models/teachers/hmm.lm.pt --out-meta models/teachers/hmm.lm.json

The record holds the teacher's (and the oracle's) metrics per split, with the names of
engine/lm_eval.METRICS: the reference rows of reports/lm_results.csv. The teacher stage's own
module (stages/teacher.py) imports this one; no other does.
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py).
from distillstudy.engine import runtime  # noqa: I001

import json
import time
from pathlib import Path

import torch

from distillstudy.artifacts import file_sha256, load_npz, write_json
from distillstudy.engine import hf, lm_eval, lm_models, lm_train, seeds, standard
from distillstudy.engine.models import save_state
from distillstudy.engine.recipe import Recipe


def run(*, job: dict, data: str, out_model: str | None, out_meta: str, threads: int = 1,
        checkpoint: str | None = None) -> dict:
    """`job`: dataset, teacher (its prepare.datasets entry's, or the default), recipe (teacher.lm_recipe),
    seed (global), lm_samples."""
    # distill.device: CUDA when asked for (or auto and present); the data then live on the GPU.
    settings = runtime.configure(threads, device=job.get("device", "cpu"))
    dev = torch.device(settings["device"])
    arrays = load_npz(data)
    vocab_size, bos = int(arrays["vocab_size"]), int(arrays["bos"])
    block = int(arrays["tokens_train"].shape[1]) - 1
    dataset, teacher = job["dataset"], job["teacher"]
    name = f"teacher[{dataset}]"
    record = {"dataset": dataset, "teacher": teacher, "vocab_size": vocab_size, "bos": bos, "block": block,
              "data_sha256": file_sha256(data), "runtime": settings}
    started = time.perf_counter()
    if "hf" in teacher:
        net = lm_models.load_teacher(teacher, vocab_size, block, None, name).to(dev)
        record["hf"] = hf.describe(net)
    elif "weights" in teacher:  # your factory with weights trained elsewhere: loaded, scored, not retrained
        net = lm_models.load_teacher(teacher, vocab_size, block, teacher["weights"], name).to(dev)
        record["weights_sha256"] = file_sha256(teacher["weights"])
    else:
        family = teacher.get("family") or teacher["factory"]
        net = lm_models.build_lm(family, vocab_size, block, int(teacher["size"]),
                                 seeds.teacher_seed(job["seed"], dataset), name).to(dev)
        recipe = Recipe.from_params(job["recipe"])
        run_spec = lm_train.LMRun(name=name, seed=seeds.teacher_seed(job["seed"], dataset), recipe=recipe,
                                  objective="baseline", bos=bos,
                                  checkpoint=None if checkpoint is None else Path(checkpoint),
                                  fingerprint=json.dumps({"job": job, "data": record["data_sha256"],
                                                          "code": standard.code_sha256()}, sort_keys=True))
        train = torch.from_numpy(arrays["tokens_train"]).to(dev)
        record["curves"] = lm_train.fit(net, train, torch.from_numpy(arrays["tokens_val"]).to(dev), run_spec)
        record["recipe"] = recipe.about()
        standard.remove_checkpoint(run_spec)
    record["n_params"] = lm_models.n_params(net)
    truth = lm_eval.truth_of(arrays)
    record["metrics"] = {"teacher": {}, "oracle": {}}
    for split in lm_eval.EVAL_SPLITS:
        seed = lm_eval.sample_seed(job["seed"], dataset, split)
        record["metrics"]["teacher"][split] = lm_eval.evaluate(net, arrays, split, truth=truth, device=dev,
                                                               n_samples=job["lm_samples"], sample_seed=seed)
        if truth is not None:
            record["metrics"]["oracle"][split] = lm_eval.oracle(truth, arrays, split, n_samples=job["lm_samples"],
                                                                sample_seed=seed)
    seconds = time.perf_counter() - started  # logged, not recorded: reruns write identical files
    if out_model is not None:  # a Hugging Face teacher stays in its folder: no tensor here
        save_state(out_model, {} if "hf" in teacher else net.state_dict())
    write_json(out_meta, record)
    test = record["metrics"]["teacher"]["test"]
    print(f"{name}: {record['n_params']} parameters, {seconds:.1f} s, test nll {test['nll']:.4f}"
          + (f", exact KL to the truth {test['kl_truth']:.4f} (oracle nll {record['metrics']['oracle']['test']['nll']:.4f})"
             if truth is not None else ""), flush=True)
    return record
