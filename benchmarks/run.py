"""`make bench`: how fast the study engine trains a distillation grid, against the
usual ways, and against the machine's matmul limit. Writes reports/bench.json and
prints a table.

    python benchmarks/run.py            # the issue's grid at 50 epochs (~17 min on 2 cores)
    python benchmarks/run.py --quick    # same shapes, 5 epochs (~6 min): for development

The grid (issue 5): MNIST-1D (4,000 x 40 train, 10 classes), students 40 -> H -> H -> 10,
H in {32, 128, 512}, T in {1, 2, 4, 8} at alpha = 0.9 plus a hard-label baseline,
3 seeds, Adam, batch 128, lr 1e-3: 45 runs. Timed, on the same data and teacher:

  (a) naive   one process per run, teacher forward every batch, DataLoader, default
              torch threads, runs one after another           (benchmarks/naive_kd.py)
  (b) cached  all runs in one process, teacher logits cached, otherwise as (a); timed
              with default threads and with 1 thread, the faster is the reference
                                                              (benchmarks/cached_loop.py)
  (c) engine  the pipeline as the workflow runs it: `snakemake` with the default profile
              runs the `distill` rule, one `distillstudy distill` process per
              (dataset, size, cell), process start and Snakemake included

  (d) job     the per-job overhead of a 1-epoch distill job, through the warm worker
              and in a fresh process (benchmarks/job_overhead.py)
  (e) stacks  the designs' stackable teachers stacked vs one at a time
              (benchmarks/teacher_stacking.py); the generic student path vs the closed
              form on the bench grid, CNN students stacked vs one seed at a time
              (benchmarks/generic_path.py)
  (f) standard the standard engine (engine/standard.py) training KD with crop + flip and
              the teacher online, against a plain loop written as mdistiller's trainer
              (DataLoader, per-image augmentation, teacher every batch, SGD), images/s
              on CPU, one thread (benchmarks/standard_loop.py)
  (g) sampling on-policy sampling from a gpt student with the KV cache against recomputing
              the prefix each token, length 64, one thread (benchmarks/lm_sampling.py)
  (h) LM step the LM distill step (engine/lm_train.fit, fkl, alpha 0.9) against a plain
              loop calling GPT-2 teacher and student as Hugging Face modules, same
              sizes, tokens/s on CPU, one thread (benchmarks/lm_step.py)

(c) runs three times, interleaved with the others (other work on the machine comes and
goes): speedups use the two (c) runs around (a) and (b), growth the two around the
doubled grids.
The matmul limit is the time the grid's matmul FLOPs take at the best rate the
machine sustains for these GEMM shapes, one single-threaded copy per core running
at the same time (benchmarks/matmul_limit.py). No-op timings use a finished study
built in a temporary folder (the default study's DAG with cut training budgets, or
the tiny study with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from distillstudy import grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generic_path  # noqa: E402  (benchmarks/ is not a package)
import job_overhead  # noqa: E402
import lm_sampling  # noqa: E402
import lm_step  # noqa: E402
import standard_loop  # noqa: E402
import teacher_stacking  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BIN = Path(sys.executable).parent
GRID = {"sizes": [32, 128, 512], "temperatures": [1, 2, 4, 8], "seeds": 3, "alpha": 0.9,
        "batch_size": 128, "lr": 0.001, "n_in": 40, "n_classes": 10}
TARGETS = {"speedup_vs_naive": 7, "speedup_vs_cached_loop": 1.5, "fraction_of_matmul_limit": 0.75,
           "noop_snakemake_s": 3, "noop_dvc_repro_s": 5, "job_overhead_s": 0.6,
           "teacher_stacking_speedup": 3, "generic_vs_closed_form": 1.5, "standard_vs_plain_loop": 1.0,
           "kv_cache_speedup": 3, "lm_step_vs_hf_loop": 1.0}
#: Targets where lower is better (the others: higher is better).
LOWER_IS_BETTER = ("noop_snakemake_s", "noop_dvc_repro_s", "job_overhead_s", "generic_vs_closed_form")
WORKFLOW_FILES = ["Snakefile", "profiles", "workflow", "src", "dvc.yaml", "data/raw", ".gitignore"]


def tool_env(default_threads: bool = False) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if default_threads:  # (a) and (b) run with torch's defaults, as the usual scripts do
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(key, None)
    return env


def sh(cmd: list[str], cwd: Path | None = None, log: Path | None = None, **env_opts) -> float:
    """Run a command; return its wall time. Output goes to `log` (or is captured)."""
    started = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=tool_env(**env_opts),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if log is not None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    return seconds


# ---------------------------------------------------------------- data and teacher

def make_data(work: Path, teacher_epochs: int) -> dict:
    """MNIST-1D's 4,000 training rows (val = the 1,000 test rows), a CNN teacher, its logits."""
    import torch
    from mnist1d.data import get_dataset_args, make_dataset

    from distillstudy.engine.datasets import Splits, to_arrays
    from distillstudy.artifacts import save_npz
    from distillstudy.engine.models import CNN1D
    from distillstudy.engine.models import save_state
    from distillstudy.engine.train import predict, train_teacher

    raw = make_dataset(get_dataset_args())
    xs = {"train": raw["x"], "val": raw["x_test"], "test": raw["x_test"]}
    ys = {"train": raw["y"], "val": raw["y_test"], "test": raw["y_test"]}
    arrays = to_arrays(Splits(xs, ys, [], []))
    paths = {"data": work / "data/prepared/mnist1d.npz", "teacher": work / "models/teachers/mnist1d.pt",
             "logits": work / "models/teachers/mnist1d.logits.npz"}
    save_npz(paths["data"], arrays)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    teacher = CNN1D(GRID["n_in"], GRID["n_classes"], 32, arrays["mean"], arrays["std"], dropout=0.3)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(("x_", "y_"))}
    fit = train_teacher(teacher, tensors, seed=0, max_epochs=teacher_epochs, patience=teacher_epochs,
                        batch_size=128, lr=3e-3, weight_decay=0.0, run_name="bench teacher")
    logits = {f"logits_{s}": predict(teacher, tensors[f"x_{s}"]).numpy() for s in ("train", "val", "test")}
    save_state(paths["teacher"], teacher.state_dict())
    save_npz(paths["logits"], logits)
    accuracy = float((logits["logits_test"].argmax(1) == arrays["y_test"]).mean())
    return {**paths, "n_train": int(arrays["x_train"].shape[0]), "teacher_test_accuracy": accuracy,
            "teacher_epochs": fit["epochs_run"]}


# ---------------------------------------------------------------- FLOPs and the limit

def step_flops(hidden: int, batch: int = 1) -> int:
    """Matmul FLOPs to train one model on `batch` examples: forward, weight and input grads."""
    sizes = [GRID["n_in"], hidden, hidden, GRID["n_classes"]]
    layers = list(zip(sizes[:-1], sizes[1:]))
    return sum(2 * batch * i * o * (3 if k > 0 else 2) for k, (i, o) in enumerate(layers))


def grid_flops(n_train: int, epochs: int, seeds: int, n_cells: int) -> dict[int, int]:
    return {h: step_flops(h) * n_train * epochs * seeds * n_cells for h in GRID["sizes"]}


def matmul_limit(work: Path, seconds: float) -> dict:
    """Run one single-threaded matmul_limit.py per core at once; per H, the best rate."""
    cores = os.cpu_count() or 1
    cmd = [sys.executable, BENCH / "matmul_limit.py", "--hidden", *map(str, GRID["sizes"]),
           "--members", "1", "3", "15", "--seconds", str(seconds)]
    procs = [subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, text=True, env=tool_env())
             for _ in range(cores)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    per_core = {}
    for rows in results:
        for r in rows:
            key = (r["hidden"], r["members"], r["layout"])
            per_core.setdefault(key, []).append(r["gflops"])
    best = {}
    for (h, m, layout), rates in per_core.items():
        rate = statistics.mean(rates)  # per core, all cores busy
        if rate > best.get(h, {}).get("gflops_per_core", 0):
            best[h] = {"gflops_per_core": rate, "members": m, "layout": layout}
    return {"cores": cores, "best": best,
            "all": [{"hidden": h, "members": m, "layout": lay, "gflops_per_core": statistics.mean(v)}
                    for (h, m, lay), v in sorted(per_core.items())]}


def seconds_of(limit: dict, data: dict, epochs: int) -> list[tuple[float, dict]]:
    """The grid's matmul FLOPs at the measured best rates, spread over all cores."""
    flops = grid_flops(data["n_train"], epochs, GRID["seeds"], 1 + len(GRID["temperatures"]))
    seconds = sum(flops[h] / (limit["best"][h]["gflops_per_core"] * 1e9) for h in GRID["sizes"]) / limit["cores"]
    return [(seconds, limit)]


# ---------------------------------------------------------------- (a), (b), (c)

def run_naive(work: Path, data: dict, epochs: int) -> dict:
    out = work / "naive"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    runs = 0
    for h in GRID["sizes"]:
        for t in [0] + GRID["temperatures"]:
            for seed in range(GRID["seeds"]):
                sh([sys.executable, BENCH / "naive_kd.py", "--data", data["data"], "--teacher", data["teacher"],
                    "--hidden", h, "--temperature", t, "--alpha", GRID["alpha"], "--seed", seed,
                    "--epochs", epochs, "--batch-size", GRID["batch_size"], "--lr", GRID["lr"],
                    "--out", out / f"h{h}_T{t}_{seed}.pt"], log=work / "naive.log", default_threads=True)
                runs += 1
    return {"seconds": time.perf_counter() - started, "runs": runs}


def run_cached(work: Path, data: dict, epochs: int, threads: int | None = None) -> dict:
    """(b); threads=None is torch's default (all cores), as the usual scripts run."""
    cmd = [sys.executable, BENCH / "cached_loop.py", "--data", data["data"], "--teacher-logits", data["logits"],
           "--sizes", *GRID["sizes"], "--temperatures", *GRID["temperatures"], "--seeds", GRID["seeds"],
           "--alpha", GRID["alpha"], "--epochs", epochs, "--batch-size", GRID["batch_size"], "--lr", GRID["lr"]]
    log = work / f"cached_{threads or 'default'}.log"
    seconds = sh(cmd + (["--threads", threads] if threads else []), log=log, default_threads=threads is None)
    return {"seconds": seconds, **json.loads(log.read_text().strip().splitlines()[-1])}


def engine_workspace(work: Path, name: str, data: dict, epochs: int, seeds: int, temperatures: list) -> Path:
    ws = work / name
    ws.mkdir(parents=True)
    for item in ("Snakefile", "profiles", "workflow", "src"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, ws / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, ws / item)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["datasets"] = [{"name": "mnist1d", "kind": "mnist1d"}]
    # The grid: mlps of GRID["sizes"] at the grid's fixed lr and epochs (no tuning: its
    # candidates would multiply the work the matmul limit is computed for).
    for key in ("temperatures", "logit_mse", "students", "tune"):
        params["distill"].pop(key, None)
    params["distill"].update({"sizes": GRID["sizes"], "objectives": {"kd": {"temperature": temperatures}},
                              "alpha": [GRID["alpha"]], "seeds": seeds, "epochs": epochs,
                              "batch_size": GRID["batch_size"], "lr": GRID["lr"], "weight_decay": 0.0})
    if "designs" in params:  # the grid alone: no study-design axes (their sizes must be grid sizes)
        params["designs"].update({"datasets": [], "sizes": GRID["sizes"][:1]})
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for key in ("data", "logits"):  # the rule's inputs, as prepare and teacher leave them
        target = ws / Path(data[key]).relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data[key], target)
    return ws


def run_engine(work: Path, name: str, data: dict, epochs: int, seeds: int | None = None,
               temperatures: list | None = None) -> dict:
    seeds = GRID["seeds"] if seeds is None else seeds
    temperatures = GRID["temperatures"] if temperatures is None else temperatures
    ws = engine_workspace(work, name, data, epochs, seeds, temperatures)
    cells = [grid.BASELINE] + [grid.cell_name("kd", {"temperature": t}, GRID["alpha"]) for t in temperatures]
    targets = [f"models/students/mnist1d/h{h}/{c}.logits.npz" for h in GRID["sizes"] for c in cells]
    seconds = sh(["snakemake", *targets,
                  "--allowed-rules", "distill"], cwd=ws, log=work / f"{name}.log")
    jobs = sorted((ws / "logs/benchmarks/distill").rglob("*.tsv"))
    job_seconds = [float(p.read_text().splitlines()[1].split("\t")[0]) for p in jobs]
    train_seconds = []
    for log in sorted((ws / "logs/distill").rglob("*.log")):
        last = log.read_text().strip().splitlines()[-1]
        train_seconds.append(float(last.rsplit(",", 1)[1].strip().removesuffix(" s")))
    record = json.loads(str(np.load(ws / targets[-1])["record"]))
    return {"seconds": seconds, "runs": len(cells) * len(GRID["sizes"]) * seeds, "jobs": len(jobs),
            "seeds": seeds, "temperatures": temperatures, "job_seconds_sum": sum(job_seconds),
            "train_seconds_sum": sum(train_seconds), "runtime": record["runtime"]}


# ---------------------------------------------------------------- no-op runs

def noop_study(work: Path, quick: bool) -> dict:
    """Build a finished study in a temporary git + DVC repository, then time no-op runs."""
    ws = work / "study"
    ws.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (ws / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ws / name)
    if quick:
        params = yaml.safe_load((ROOT / "tests/params.tiny.yaml").read_text())
        shape = "tests/params.tiny.yaml"
    else:  # the default study's DAG (78 jobs), with budgets cut: a no-op run never trains
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["teacher"].update({"max_epochs": 2, "patience": 1})
        params["distill"]["epochs"] = 1
        params["walkthrough"].update({"trials": 1, "pool_size": 1000})
        if "designs" in params:  # its axes stay (same DAG), with budgets cut too
            params["designs"]["epochs"] = [2]
        shape = "params.yaml's grid, training budgets cut"
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = work / "study.log"
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.com"],
                ["git", "config", "user.name", "bench"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "bench study"]):
        sh(cmd, cwd=ws, log=log)
    build = sh(["dvc", "repro"], cwd=ws, log=log)
    sh(["git", "add", "-A"], cwd=ws, log=log)
    sh(["git", "commit", "-qm", "results"], cwd=ws, log=log)
    snake, dvc = [], []
    for _ in range(3):
        snake.append(sh(["snakemake"], cwd=ws, log=log))
        dvc.append(sh(["dvc", "repro"], cwd=ws, log=log))
    text = log.read_text()
    tail = text[text.rindex("$ dvc repro"):]
    if "Running stage" in tail:
        raise RuntimeError("the no-op dvc repro ran a stage:\n" + tail[-2000:])
    n_jobs = sum(1 for line in text.splitlines() if line.startswith("localrule "))
    return {"study": shape, "build_s": build, "jobs_built": n_jobs, "noop_snakemake_runs_s": snake,
            "noop_dvc_repro_runs_s": dvc, "noop_snakemake_s": statistics.median(snake),
            "noop_dvc_repro_s": statistics.median(dvc)}


# ---------------------------------------------------------------- report

def machine() -> dict:
    import torch

    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def table(result: dict) -> str:
    r = result
    rows = [
        ("(a) one process per run, teacher every batch", f"{r['naive']['seconds']:.1f} s",
         f"{r['speedup_vs_naive']:.2f}x"),
        ("(b) one process, cached teacher logits", f"{r['cached_loop']['seconds']:.1f} s",
         f"{r['speedup_vs_cached_loop']:.2f}x ({r['cached_loop']['threads']} thread(s): the faster of "
         f"{r['cached_loop_runs']['default_threads']['seconds']:.0f} s default, "
         f"{r['cached_loop_runs']['one_thread']['seconds']:.0f} s 1 thread)"),
        ("(c) the engine, via snakemake (mean of 3)", f"{r['engine']['seconds']:.1f} s", "1.00x"),
        ("    matmul limit for the grid's FLOPs", f"{r['matmul_limit_s']:.1f} s",
         f"fraction {r['fraction_of_matmul_limit']:.2f}"),
        ("    grid x2 seeds", f"{r['growth']['seeds_x2_s']:.1f} s", f"{r['growth']['seeds_x2_ratio']:.2f}x time"),
        ("    grid x2 temperatures", f"{r['growth']['temperatures_x2_s']:.1f} s",
         f"{r['growth']['temperatures_x2_ratio']:.2f}x time"),
        ("1-epoch distill job, overhead (warm worker)", f"{r['job_overhead_s']:.2f} s",
         f"fresh process: {r['job_overhead']['job_overhead_fresh_process_s']:.2f} s"),
        ("teachers stacked (5 folds, 4 members) vs one at a time", f"{r['teacher_stacking_speedup']:.2f}x", ""),
        ("generic student path / closed form (bench grid)", f"{r['generic_vs_closed_form']:.2f}x time",
         f"CNN students stacked vs one seed at a time: {r['cnn_stacking_speedup']:.2f}x"),
        (f"standard engine vs plain loop ({r['standard_loop']['student']} <- {r['standard_loop']['teacher']}, CPU)",
         f"{r['standard_vs_plain_loop']:.2f}x",
         f"{r['standard_loop']['standard_images_per_s']:.0f} vs {r['standard_loop']['plain_images_per_s']:.0f} images/s "
         f"(plain: {r['standard_loop']['plain_num_workers']} DataLoader worker(s))"),
        (f"LM sampling, KV cache vs recompute (length {r['lm_sampling']['length']}, CPU)",
         f"{r['kv_cache_speedup']:.2f}x",
         f"{r['lm_sampling']['cached_tokens_per_s']:.0f} vs {r['lm_sampling']['recompute_tokens_per_s']:.0f} tokens/s"),
        (f"LM distill step vs plain HF loop (gpt {r['lm_step']['student']['size']} <- "
         f"{r['lm_step']['teacher']['size']}, CPU)", f"{r['lm_step_vs_hf_loop']:.2f}x",
         f"{r['lm_step']['pipeline_tokens_per_s']:.0f} vs {r['lm_step']['plain_tokens_per_s']:.0f} tokens/s"),
        ("no-op snakemake (finished study)", f"{r['noop_snakemake_s']:.2f} s", ""),
        ("no-op dvc repro (finished study)", f"{r['noop_dvc_repro_s']:.2f} s", ""),
    ]
    width = max(len(a) for a, _, _ in rows)
    lines = [f"mode: {r['mode']} ({r['epochs']} epochs), {r['machine']['cpu']}, {r['machine']['cores']} cores",
             f"{'':{width}}  {'wall':>9}  vs (c) / note"]
    lines += [f"{a:{width}}  {b:>9}  {c}" for a, b, c in rows]
    lines.append("targets: " + ", ".join(
        f"{k} {'<=' if k in LOWER_IS_BETTER else '>='} {v}: "
        f"{'met' if r['targets_met'][k] else 'NOT met'} ({r[k]:.2f})" for k, v in TARGETS.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 epochs instead of 50 (same shapes, same runs)")
    parser.add_argument("--epochs", type=int, help="override the epochs of (a), (b), (c)")
    parser.add_argument("--out", default=str(ROOT / "reports/bench.json"))
    parser.add_argument("--workdir", help="keep the work here instead of a temporary folder")
    args = parser.parse_args()
    epochs = args.epochs or (5 if args.quick else 50)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="distillstudy-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"mode": "quick" if args.quick else "full", "epochs": epochs, "grid": GRID, "machine": machine()}

    def say(text):
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    say(f"data and teacher in {work}")
    data = make_data(work, teacher_epochs=3 if args.quick else 10)
    limit_seconds = 1.0 if args.quick else 2.0
    result["data"] = {"n_train": data["n_train"], "teacher": "CNN1D (32 channels)",
                      "teacher_epochs": data["teacher_epochs"], "teacher_test_accuracy": data["teacher_test_accuracy"]}
    # Interleaved: every figure below is a ratio to (c) runs made next to it, and the
    # matmul limit is measured three times, since other work on the machine comes and goes.
    limit_s = seconds_of(matmul_limit(work, limit_seconds), data, epochs)
    say(f"(c) engine, run 1 (matmul limit {limit_s[0][0]:.1f} s)")
    engine = [run_engine(work, "engine1", data, epochs)]
    say("(c) engine, seeds x2")
    seeds_x2 = run_engine(work, "seeds_x2", data, epochs, seeds=2 * GRID["seeds"])
    say("(c) engine, temperatures x2")
    temps_x2 = run_engine(work, "temps_x2", data, epochs, temperatures=[1, 1.5, 2, 3, 4, 6, 8, 16])
    say("(c) engine, run 2")
    engine.append(run_engine(work, "engine2", data, epochs))
    limit_s += seconds_of(matmul_limit(work, limit_seconds), data, epochs)
    say("(b) cached loop, torch's default threads")
    cached_default = run_cached(work, data, epochs)
    say("(b) cached loop, 1 thread")
    cached_one = run_cached(work, data, epochs, threads=1)
    # The reference is the faster of the two: 2 threads in one process stall when anything
    # else runs on the machine, 1 thread leaves a core idle.
    cached = min(cached_default, cached_one, key=lambda r: r["seconds"])
    say("(a) naive, 45 processes")
    naive = run_naive(work, data, epochs)
    say("(c) engine, run 3")
    engine.append(run_engine(work, "engine3", data, epochs))
    limit_s += seconds_of(matmul_limit(work, limit_seconds), data, epochs)
    say("per-job overhead, warm worker vs a fresh process")
    overhead = job_overhead.measure(data["data"], data["logits"], repeats=4 if args.quick else 12)
    say("teachers: stacked vs one at a time")
    stacking = teacher_stacking.measure(epochs=1 if args.quick else 3, rounds=1 if args.quick else 2)
    say("generic student path vs the closed form; CNN students stacked vs one seed at a time")
    generic = generic_path.measure(data["data"], data["logits"], epochs=1 if args.quick else 3)
    say("standard engine vs a plain mdistiller-style loop (CPU, one thread)")
    student, teacher, steps = standard_loop.QUICK if args.quick else standard_loop.FULL
    standard_cmp = standard_loop.measure(student, teacher, steps=steps)
    say("LM: KV-cache sampling vs recomputing the prefix; distill step vs a plain Hugging Face loop")
    sampling = lm_sampling.measure(rounds=3 if args.quick else 5)
    lm_steps, lm_rounds = lm_step.QUICK if args.quick else lm_step.FULL
    lm_cmp = lm_step.measure(lm_steps, lm_rounds)
    say("no-op snakemake and dvc repro on a finished study")
    noop = noop_study(work, args.quick)

    c = statistics.mean(e["seconds"] for e in engine)
    c_growth = statistics.mean(e["seconds"] for e in engine[:2])  # the runs beside the doubled grids
    c_speedup = statistics.mean(e["seconds"] for e in engine[1:])  # the runs beside (a) and (b)
    flops = grid_flops(data["n_train"], epochs, GRID["seeds"], 1 + len(GRID["temperatures"]))
    total_flops = sum(flops.values())
    limit = statistics.mean(s for s, _ in limit_s)
    result.update({
        "naive": naive, "cached_loop": cached,
        "cached_loop_runs": {"default_threads": cached_default, "one_thread": cached_one},
        "engine": {"seconds": c, "runs_s": [e["seconds"] for e in engine], "detail": engine},
        "speedup_vs_naive": naive["seconds"] / c_speedup,
        "speedup_vs_cached_loop": cached["seconds"] / c_speedup,
        "grid_gflop": total_flops / 1e9,
        "grid_gflop_by_size": {str(h): f / 1e9 for h, f in flops.items()},
        "achieved_gflops": total_flops / c / 1e9,
        "matmul_limit_gflops": total_flops / limit / 1e9,
        "matmul_limit_s": limit,
        "matmul_limit_runs_s": [s for s, _ in limit_s],
        "fraction_of_matmul_limit": limit / c,
        "matmul": [m for _, m in limit_s],
        "growth": {"base_s": c_growth, "seeds_x2_s": seeds_x2["seconds"],
                   "seeds_x2_ratio": seeds_x2["seconds"] / c_growth,
                   "temperatures_x2_s": temps_x2["seconds"],
                   "temperatures_x2_ratio": temps_x2["seconds"] / c_growth,
                   "detail": {"seeds_x2": seeds_x2, "temperatures_x2": temps_x2}},
        "noop": noop, "noop_snakemake_s": noop["noop_snakemake_s"], "noop_dvc_repro_s": noop["noop_dvc_repro_s"],
        "job_overhead": overhead, "job_overhead_s": overhead["job_overhead_s"],
        "teacher_stacking": stacking, "teacher_stacking_speedup": stacking["teacher_stacking_speedup"],
        "generic_path": generic, "generic_vs_closed_form": generic["generic_vs_closed_form"],
        "cnn_stacking_speedup": generic["cnn_stacking_speedup"],
        "standard_loop": standard_cmp, "standard_vs_plain_loop": standard_cmp["standard_vs_plain_loop"],
        "lm_sampling": sampling, "kv_cache_speedup": sampling["kv_cache_speedup"],
        "lm_step": lm_cmp, "lm_step_vs_hf_loop": lm_cmp["lm_step_vs_hf_loop"],
        "bench_seconds": time.perf_counter() - started,
    })
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["targets"] = TARGETS
    result["targets_met"] = {k: (result[k] <= v if k in LOWER_IS_BETTER else result[k] >= v)
                             for k, v in TARGETS.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
