"""How much faster the default designs' stackable teachers train as one stacked model
(engine/stacked.py) than one at a time through the same engine (M = 1 each), one thread.

    python benchmarks/teacher_stacking.py                 # 3 epochs, 2 rounds: ~1 min on 2 cores
    python benchmarks/teacher_stacking.py --epochs 1 --rounds 1 --out reports/teacher_stacking.json

Workloads, on MNIST-1D made exactly as the prepare stage makes it (params.yaml's seed and
val_fraction), with the teacher section's knobs (cnn_channels, dropout, batch_size, lr,
weight_decay) and the seeds the transfer stage derives:
    cross_fitted  the K = transfer.folds fold teachers, each on the training points outside its fold
    ensemble      the M - 1 new members of ensemble-<M> (M = designs.ensemble's largest), on all of them
Each trains a SHORT fixed budget (select="last", `epochs` epochs: no early stopping, so
both ways do the same steps). Stacked and one-at-a-time runs alternate, `rounds` times;
each way's fastest round counts (others use this machine too).

teacher_stacking_speedup = one_at_a_time_s / stacked_s over both workloads. Measured on
the 2-core reference machine: about 1x (the CNN's convolutions are compute-bound, and a
stack's grouped convolutions run out of L2 cache): stacking's gains here are one process,
one Python loop, and members that stop early leaving the stack.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from distillstudy.engine import datasets, runtime, seeds, stacked
from distillstudy.engine.models import make_teacher
from distillstudy.engine.teachers import stratified_folds

ROOT = Path(__file__).resolve().parents[1]


def study_settings(params_path: Path = ROOT / "params.yaml") -> dict:
    params = yaml.safe_load(params_path.read_text())
    return {"global_seed": int(params["seed"]), "val_fraction": float(params["prepare"]["val_fraction"]),
            "test_fraction": float(params["prepare"]["test_fraction"]),
            "teacher": params["teacher"], "folds": int(params["transfer"]["folds"]),
            "ensemble": max(int(m) for m in params["designs"]["ensemble"])}


def mnist1d_arrays(settings: dict) -> dict[str, np.ndarray]:
    """The prepare stage's mnist1d arrays (same split seed, same fractions)."""
    splits = datasets.build("mnist1d", seed=seeds.derive_seed(settings["global_seed"], "split", "mnist1d"),
                            val_fraction=settings["val_fraction"], test_fraction=settings["test_fraction"])
    return datasets.to_arrays(splits)


def workloads(arrays: dict, settings: dict, dataset: str = "mnist1d") -> dict[str, dict]:
    """{name: {"seeds", "sets"}}: the teachers the transfer stage stacks, with its seeds and points."""
    g = settings["global_seed"]
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    k = settings["folds"]
    fold = stratified_folds(arrays["y_train"], k, seeds.derive_seed(g, dataset, "folds"))
    keep = [torch.from_numpy(np.flatnonzero(fold != j)) for j in range(k)]
    return {"cross_fitted": {"seeds": [seeds.derive_seed(g, dataset, "cross_fitted", j) for j in range(k)],
                             "sets": [(x[idx], y[idx]) for idx in keep]},
            "ensemble": {"seeds": [seeds.derive_seed(g, dataset, "ensemble", j) for j in range(1, settings["ensemble"])],
                         "sets": [(x, y)] * (settings["ensemble"] - 1)}}


def _timed(factory, member_seeds, sets, val, knobs) -> tuple[float, list]:
    started = time.perf_counter()
    fits = stacked.train_stack(factory, member_seeds, sets, val, run_name="benchmark", select="last", **knobs)
    return time.perf_counter() - started, fits


def measure(epochs: int = 3, rounds: int = 2, settings: dict | None = None,
            arrays: dict[str, np.ndarray] | None = None) -> dict:
    """Time every workload stacked and one member at a time; see the module docstring."""
    runtime.configure(1)
    settings = settings or study_settings()
    arrays = mnist1d_arrays(settings) if arrays is None else arrays
    t = settings["teacher"]
    n_features, n_classes = arrays["x_train"].shape[1], int(arrays["y_train"].max()) + 1

    def factory():
        return make_teacher("mnist1d", n_features, n_classes, arrays["mean"], arrays["std"], int(t["cnn_channels"]),
                            int(t["mlp_width"]), float(t["dropout"]))

    knobs = {"max_epochs": epochs, "batch_size": int(t["batch_size"]), "lr": float(t["lr"]),
             "weight_decay": float(t["weight_decay"])}
    val = (torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))
    out = {}
    for name, work in workloads(arrays, settings).items():
        stacked_s, alone_s = [], []
        for _ in range(rounds):
            seconds, together = _timed(factory, work["seeds"], work["sets"], val, knobs)
            stacked_s.append(seconds)
            singles = [_timed(factory, [s], [d], val, knobs) for s, d in zip(work["seeds"], work["sets"])]
            alone_s.append(sum(seconds for seconds, _ in singles))
        n_train = len(work["sets"][0][1])
        steps = epochs * -(-n_train // knobs["batch_size"])  # per member
        members = len(work["seeds"])
        # float32: a stacked member's bits differ from alone (other summation order; float64
        # agrees to ~1e-15, tests/test_stacked.py). Adam turns rounding noise in near-zero
        # gradients into full-size steps, so weights drift further apart than the predictions.
        alone = [fits[0] for _, fits in singles]
        gap = max(float((p - q).detach().abs().max()) for a, b in zip(together, alone)
                  for p, q in zip(a.model.parameters(), b.model.parameters()))
        nll_gap = max(abs(a.val_nll[-1] - b.val_nll[-1]) for a, b in zip(together, alone))
        out[name] = {"members": members, "n_train_per_member": n_train, "steps_per_member": steps,
                     "stacked_s": min(stacked_s), "one_at_a_time_s": min(alone_s),
                     "stacked_rounds_s": stacked_s, "one_at_a_time_rounds_s": alone_s,
                     "stacked_ms_per_step": 1e3 * min(stacked_s) / steps,
                     "one_at_a_time_ms_per_member_step": 1e3 * min(alone_s) / (steps * members),
                     "speedup": min(alone_s) / min(stacked_s),
                     "max_param_gap_stacked_vs_alone_float32": gap,
                     "max_final_val_nll_gap_stacked_vs_alone_float32": nll_gap}
    total_stacked = sum(w["stacked_s"] for w in out.values())
    total_alone = sum(w["one_at_a_time_s"] for w in out.values())
    return {"teacher_stacking_speedup": total_alone / total_stacked, "stacked_s": total_stacked,
            "one_at_a_time_s": total_alone, "workloads": out, "epochs": epochs, "rounds": rounds,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "teacher": {k: t[k] for k in ("cnn_channels", "dropout", "batch_size", "lr", "weight_decay")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the result here as JSON")
    args = parser.parse_args()
    result = measure(args.epochs, args.rounds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
