"""The tiny study through a real SLURM cluster: Debian's SLURM 22.05 started on this
machine (tests/slurm_cluster.py), jobs submitted by snakemake-executor-plugin-slurm with
`--workflow-profile workflow/profiles/slurm`. Its reports/results.csv must equal the
local run's byte for byte (same machine, same params, one thread per job).

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

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, WORKFLOW_FILES, tool_env
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


def copy_inputs(finished, dest):
    """A fresh workspace with exactly the code and params the local run used (not
    today's tree, which may have changed since): its inputs, none of its outputs."""
    for name in [*WORKFLOW_FILES, "params.yaml"]:
        src, target = finished / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    return dest


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


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_study_on_slurm_equals_local_run(cluster, finished, tmp_path):
    ws = copy_inputs(finished, tmp_path / "study")
    before = {j["JobId"] for j in slurm_jobs(cluster)}
    out, wall = snakemake_on(cluster, ws, "--workflow-profile", PROFILE, "--configfile", "tests/params.tiny.yaml")
    print(f"tiny study through SLURM: {wall:.0f} s wall")

    assert (ws / "reports/results.csv").read_bytes() == (finished / "reports/results.csv").read_bytes()
    assert (ws / "reports/index.html").exists()

    # Every job but `all` went through sbatch, with the profile's per-rule request.
    n_submitted = len(re.findall(r"has been submitted with SLURM jobid", out))
    jobs = [j for j in slurm_jobs(cluster) if j["JobId"] not in before]
    # 2 prepare, 2 teacher, 6 transfer sets, 16 + 17 distill (grid + study designs), 3 more
    assert n_submitted == len(jobs) == 46, out[-3000:]
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    profile = yaml.safe_load((ws / PROFILE / "config.yaml").read_text())
    for rule, res in profile["set-resources"].items():
        mine = jobs_of(jobs, rule)
        assert mine, f"no SLURM job for rule {rule}"
        for j in mine:
            assert j["MinMemoryNode"] == f"{res['mem_mb']}M", (rule, j)
            assert j["NumCPUs"] == str(profile["set-threads"][rule]), (rule, j)
            hours, minutes = divmod(res["runtime"], 60)
            assert j["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (rule, j)
            assert j.get("TresPerJob", "(null)") in ("(null)", ""), (rule, j)  # no GPU asked

    # A second call, still through the profile, has nothing to do.
    proc = subprocess.run(["snakemake", "-n", "--workflow-profile", PROFILE, "--configfile", "tests/params.tiny.yaml"],
                          cwd=ws, env=cluster.env(tool_env()), capture_output=True, text=True, timeout=120)
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_gpu_profile_requests_a_gpu_for_teacher(cluster, finished, tmp_path):
    ws = copy_inputs(finished, tmp_path / "study")
    before = {j["JobId"] for j in slurm_jobs(cluster)}
    target = "models/teachers/sine.logits.npz"
    snakemake_on(cluster, ws, target, "--workflow-profile", GPU_PROFILE, "--configfile", "tests/params.tiny.yaml")

    assert (ws / target).read_bytes() == (finished / target).read_bytes()
    jobs = [j for j in slurm_jobs(cluster) if j["JobId"] not in before]
    teacher, prepare = jobs_of(jobs, "teacher"), jobs_of(jobs, "prepare")
    assert len(teacher) == len(prepare) == 1, jobs
    assert teacher[0]["TresPerJob"] == "gres:gpu:1", teacher[0]
    assert prepare[0].get("TresPerJob", "(null)") == "(null)", prepare[0]
    assert all(j["JobState"] == "COMPLETED" for j in jobs)


def test_gpu_profile_is_the_slurm_profile_plus_gpus():
    """The two SLURM profiles differ only by `gpu: 1` for teacher, transfer and distill."""
    cpu = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    gpu = yaml.safe_load((ROOT / GPU_PROFILE / "config.yaml").read_text())
    gpu_rules = {rule for rule, res in gpu["set-resources"].items() if "gpu" in res}
    assert gpu_rules == {"teacher", "transfer", "distill"}
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
