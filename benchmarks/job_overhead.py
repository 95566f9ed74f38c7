"""Per-job overhead of a `distill` job: what a job costs beyond its training.

A 1-epoch job (MNIST-1D, H = 32, 3 seeds, the bench grid's teacher logits) is launched
exactly as the rule launches it (`distillstudy distill ...` with stdout/stderr to a log
file), one after another, N times through the warm worker (launch.py; started and warmed
before the timed runs) and N times each in a fresh process (DISTILLSTUDY_WARM=0),
interleaved. overhead = job wall time - the training seconds the job itself reports.

    python benchmarks/job_overhead.py DATA.npz TEACHER_LOGITS.npz    # prints the result as JSON
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _env(folder: Path, warm: bool) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DISTILLSTUDY_WARM_DIR": str(folder), "DISTILLSTUDY_WARM_IDLE": "30"}
    env["DISTILLSTUDY_WARM"] = "1" if warm else "0"
    return env


def _job(data: Path, logits: Path, out: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, training seconds the job reports) of one 1-epoch job."""
    cmd = ["distillstudy", "distill", "--data", str(data), "--teacher-logits", str(logits), "--dataset", "mnist1d",
           "--size", "32", "--cell", "kd_T4_mix0.9", "--seeds", "3", "--seed", "2026", "--epochs", "1",
           "--batch-size", "128", "--lr", "0.001", "--weight-decay", "0", "--threads", "1",
           "--out-model", str(out / "job.pt"), "--out-logits", str(out / "job.logits.npz")]
    log = out / "job.log"
    with open(log, "w") as handle:
        started = time.perf_counter()
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - started
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{text[-2000:]}")
    train = float(text.strip().splitlines()[-1].rsplit(",", 1)[1].strip().removesuffix(" s"))
    return wall, train


def measure(data: Path, logits: Path, repeats: int = 12) -> dict:
    with tempfile.TemporaryDirectory(prefix="distillstudy-overhead-") as tmp:
        out = Path(tmp)
        warm_env, cold_env = _env(out / "w", True), _env(out / "w", False)
        _job(data, logits, out, warm_env)  # starts the worker (this job runs by itself)
        deadline = time.monotonic() + 120
        while not list((out / "w").glob("distillstudy-*/*.sock")):
            if time.monotonic() > deadline:
                raise RuntimeError("the warm worker did not start within 120 s")
            time.sleep(0.1)
        _job(data, logits, out, warm_env)  # the worker's first child pays its page faults
        warm, cold = [], []
        for _ in range(repeats):
            warm.append(_job(data, logits, out, warm_env))
            cold.append(_job(data, logits, out, cold_env))
    overhead = {"warm": [w - t for w, t in warm], "fresh_process": [w - t for w, t in cold]}
    return {
        "job_overhead_s": statistics.median(overhead["warm"]),
        "job_overhead_fresh_process_s": statistics.median(overhead["fresh_process"]),
        "job_wall_s": {"warm": statistics.median(w for w, _ in warm),
                       "fresh_process": statistics.median(w for w, _ in cold)},
        "job": "distill, MNIST-1D, H = 32, 3 seeds, kd_T4_mix0.9, 1 epoch, 1 thread",
        "repeats": repeats,
        "overhead_runs_s": overhead,
    }


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
