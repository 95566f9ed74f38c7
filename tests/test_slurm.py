"""The tiny study through a real SLURM cluster: Debian's SLURM 22.05 started on this
machine (tests/slurm_cluster.py), jobs submitted by snakemake-executor-plugin-slurm with
`--workflow-profile workflow/profiles/slurm`. The local run (`finished`) is copied with
jobs of every rule to redo; what SLURM writes must equal the local run's byte for byte
(same machine, same params, one thread per job).

    python -m pytest -m slurm          # needs root; installs slurmctld slurmd slurm-client munge

Settings the test adds on top of the profile, and why (measured here, Debian 12):
- `--slurm-status-command squeue`: the test cluster has no accounting database, and
  the plugin's default `sacct` status check then waits forever, silently;
- `--slurm-init-seconds-before-status-checks 1`: the first status check comes after
  1 s instead of 40 s (a 3-rule run: ~120 s -> ~27 s); later checks back off by 10 s
  while no job finishes (hard-coded in the plugin);
- `--slurm-no-account`: no accounts without accounting;
- `timeout -k`: Snakemake ignores SIGTERM while it waits on cluster jobs.

The cluster also has one fake GPU (a gres on /dev/null), so the slurm-gpu profile's
`--gpus=1` requests go through sbatch and srun for real; torch finds no CUDA there and
trains on the CPU, so the teacher's bits still equal the local run's.

Skipped, with the reason, where SLURM cannot be started: not root, or SLURM missing
and no apt-get to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import ROOT, copy_workspace, run, tool_env
from slurm_cluster import SlurmCluster, ensure_slurm, missing_binaries

PROFILE = "workflow/profiles/slurm"
GPU_PROFILE = "workflow/profiles/slurm-gpu"
TEST_CLUSTER_OPTIONS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                        "--slurm-no-account"]
RUN_LIMIT_S = 900


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "starting a SLURM test cluster needs root (munged runs as `munge`, slurmd as root)"
    if missing_binaries() and shutil.which("apt-get") is None:
        return f"SLURM is not installed ({', '.join(missing_binaries())} missing) and there is no apt-get"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        ensure_slurm()
    except RuntimeError as exc:
        pytest.fail(f"SLURM is needed and could not be installed: {exc}")
    c = SlurmCluster(gpus=1)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def remove(ws, *paths: str) -> None:
    for name in paths:
        for path in ws.glob(name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def artifacts(ws) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for d in ("data/prepared", "models") for p in sorted((ws / d).rglob("*"))
            if p.is_file()}


def snakemake_on(cluster: SlurmCluster, ws, *args: str) -> tuple[str, float]:
    """Run Snakemake against the test cluster (under `timeout -k`); return its output and wall time."""
    cmd = ["timeout", "-k", "10", str(RUN_LIMIT_S), "snakemake", *args, *TEST_CLUSTER_OPTIONS]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ws, env=cluster.env(tool_env()), capture_output=True, text=True,
                          timeout=RUN_LIMIT_S + 30)
    wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode} after {wall:.0f} s\n{out[-6000:]}\n"
                             f"{cluster.log_tails()}")
    return out, wall


def slurm_jobs(cluster: SlurmCluster) -> list[dict]:
    """Every job the controller still knows (MinJobAge=300 keeps finished ones), as
    `scontrol show job -o` key=value fields."""
    proc = subprocess.run(["scontrol", "show", "job", "-o"], env=cluster.env(), capture_output=True, text=True,
                          timeout=30, check=True)
    jobs = []
    for line in proc.stdout.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            jobs.append(dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)))
    return jobs


def jobs_of(jobs: list[dict], rule: str) -> list[dict]:
    # The plugin names each job's rule in --comment: rule_<name>[_wildcards_<values>].
    return [j for j in jobs if re.fullmatch(rf"rule_{rule}(_wildcards_.*)?", j.get("Comment", ""))]


def assert_requests(jobs: list[dict], profile: dict, rules: tuple[str, ...]) -> None:
    """Each rule's jobs asked SLURM for the profile's memory, threads and time limit."""
    for rule in rules:
        res = profile["set-resources"][rule]
        mine = jobs_of(jobs, rule)
        assert mine, f"no SLURM job for rule {rule}"
        for j in mine:
            assert j["MinMemoryNode"] == f"{res['mem_mb']}M", (rule, j)
            assert j["NumCPUs"] == str(profile["set-threads"][rule]), (rule, j)
            hours, minutes = divmod(res["runtime"], 60)
            assert j["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (rule, j)


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_study_on_slurm_equals_local_run(cluster, finished, tmp_path):
    """A copy of the local run with jobs of every rule after `teacher` to redo (one transfer
    set and its cells, the walkthrough, evaluate and report; `prepare` and `teacher` go
    through SLURM in the GPU-profile test below): the jobs go through SLURM and write
    the local run's bytes. Training the whole study again would run the same rules'
    jobs, only more of them."""
    ws = copy_workspace(finished, tmp_path / "study")
    # Snakemake re-makes a missing file only for a job that must run: the final outputs of
    # evaluate and report are removed too, or it would find them up to date and do nothing.
    remove(ws, "models/transfer/digits/labels-0.3.*", "reports/walkthrough.csv", "reports/results.csv",
           "reports/index.html")
    before = {j["JobId"] for j in slurm_jobs(cluster)}
    out, wall = snakemake_on(cluster, ws, "--workflow-profile", PROFILE, "--configfile", "tests/params.tiny.yaml")
    print(f"tiny study (7 jobs) through SLURM: {wall:.0f} s wall")

    assert artifacts(ws) == artifacts(finished)
    for name in ("results.csv", "designs.csv", "calibration.csv", "walkthrough.csv"):
        assert (ws / "reports" / name).read_bytes() == (finished / "reports" / name).read_bytes(), name
    assert (ws / "reports/index.html").exists()

    # Every job but `all` went through sbatch, with the profile's per-rule request.
    n_submitted = len(re.findall(r"has been submitted with SLURM jobid", out))
    jobs = [j for j in slurm_jobs(cluster) if j["JobId"] not in before]
    # labels-0.3: transfer, 3 cells (baseline, T1, T4); walkthrough, evaluate, report
    assert n_submitted == len(jobs) == 7, out[-3000:]
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    profile = yaml.safe_load((ws / PROFILE / "config.yaml").read_text())
    assert_requests(jobs, profile, ("transfer", "distill", "evaluate", "walkthrough", "report"))
    assert all(j.get("TresPerJob", "(null)") in ("(null)", "") for j in jobs), jobs  # no GPU asked

    # A second call, still through the profile, has nothing to do.
    proc = subprocess.run(["snakemake", "-n", "--workflow-profile", PROFILE, "--configfile", "tests/params.tiny.yaml"],
                          cwd=ws, env=cluster.env(tool_env()), capture_output=True, text=True, timeout=120)
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_gpu_profile_requests_a_gpu_for_teacher(cluster, finished, tmp_path):
    """One prepare job (no GPU) and one teacher job (a GPU), side by side, with the
    profile's memory, threads and time (the CPU profile's: see the next test)."""
    ws = copy_workspace(finished, tmp_path / "study")
    targets = ["data/prepared/sine.npz", "models/teachers/digits.logits.npz"]
    remove(ws, "data/prepared/sine.*", "models/teachers/digits.*")
    before = {j["JobId"] for j in slurm_jobs(cluster)}
    snakemake_on(cluster, ws, *targets, "--workflow-profile", GPU_PROFILE, "--configfile", "tests/params.tiny.yaml")

    assert artifacts(ws) == artifacts(finished)
    jobs = [j for j in slurm_jobs(cluster) if j["JobId"] not in before]
    teacher, prepare = jobs_of(jobs, "teacher"), jobs_of(jobs, "prepare")
    assert len(teacher) == len(prepare) == 1 and len(jobs) == 2, jobs
    assert teacher[0]["TresPerJob"] == "gres:gpu:1", teacher[0]
    assert prepare[0].get("TresPerJob", "(null)") == "(null)", prepare[0]
    assert all(j["JobState"] == "COMPLETED" for j in jobs)
    assert_requests(jobs, yaml.safe_load((ws / GPU_PROFILE / "config.yaml").read_text()), ("prepare", "teacher"))


def test_gpu_profile_is_the_slurm_profile_plus_gpus():
    """The two SLURM profiles differ only by `gpu: 1` for teacher, transfer, distill and the
    standard engine's replicate jobs."""
    cpu = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    gpu = yaml.safe_load((ROOT / GPU_PROFILE / "config.yaml").read_text())
    gpu_rules = {rule for rule, res in gpu["set-resources"].items() if "gpu" in res}
    assert gpu_rules == {"teacher", "transfer", "distill", "distill_replicate"}
    for rule in gpu_rules:
        assert gpu["set-resources"][rule].pop("gpu") == 1
    assert gpu == cpu
    assert cpu["executor"] == "slurm"
    assert all(n == 1 for n in cpu["set-threads"].values())  # 1 vs 2 threads change the bits


def test_slurm_profiles_dry_run(workspace):
    """Both profiles load and plan the whole study without a cluster (dry run)."""
    for profile in (PROFILE, GPU_PROFILE):
        proc = subprocess.run(["snakemake", "-n", "--workflow-profile", profile], cwd=workspace, env=tool_env(),
                              capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert f"Using workflow specific profile {profile}" in out
        distill = [line for line in out.splitlines() if "resources:" in line and "runtime=60, mem_mb=2000" in line]
        assert distill and all(("gpu=1" in line) == (profile == GPU_PROFILE) for line in distill), out[-3000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_gpu_profile_gives_each_standard_engine_replicate_a_gpu(cluster, tmp_path):
    """The standard engine's jobs, one per (cell, replicate), each ask SLURM for one GPU
    (the request: the test cluster's GPU is a fake gres, and torch, finding no CUDA there,
    trains on the CPU under device: auto); the gather job asks for none."""
    from test_standard_workflow import STUDENT, byo_study

    ws = byo_study(tmp_path / "study", epochs=1)
    run(["snakemake", "models/teachers/shapes.logits.npz", "-c2", "--configfile", "mine.yaml"], ws, timeout=600)
    target = f"models/students/shapes/{STUDENT}/baseline.logits.npz"
    before = {j["JobId"] for j in slurm_jobs(cluster)}
    out, _ = snakemake_on(cluster, ws, target, "--workflow-profile", GPU_PROFILE, "--configfile", "mine.yaml")
    jobs = [j for j in slurm_jobs(cluster) if j["JobId"] not in before]
    replicates, gather = jobs_of(jobs, "distill_replicate"), jobs_of(jobs, "distill_gather")
    assert len(replicates) == 2 and len(gather) == 1, out[-3000:]
    assert all(j["TresPerJob"] == "gres:gpu:1" for j in replicates), replicates
    assert gather[0].get("TresPerJob", "(null)") == "(null)", gather[0]
    assert all(j["JobState"] == "COMPLETED" for j in jobs)
    assert_requests(jobs, yaml.safe_load((ws / GPU_PROFILE / "config.yaml").read_text()),
                    ("distill_replicate", "distill_gather"))
    record = json.loads(str(np.load(ws / target)["record"]))
    assert record["runtime"]["device"] == "cpu" and len(record["seeds"]) == 2
