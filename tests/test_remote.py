"""Sharing a study through a DVC remote: after a tiny study, `dvc push` to a local-folder
remote; a fresh `git clone` plus the pull steps below restores data/, models/ and the
reports with the same hashes, and neither DVC nor Snakemake wants to redo anything there.

The pull steps are what `make pull` runs (keep them in step with the Makefile):

    dvc pull                     # data/prepared, models, reports (and logs/benchmarks)
    dvc status                   # must be clean: the outputs are the ones dvc.lock names
    snakemake --touch

Why the touch, measured on the tiny study: `dvc pull` writes files in its own order and
`git clone` writes the small git-tracked outputs (reports/plots, metrics.json,
walkthrough.csv) before src/, so Snakemake, which compares modification times, saw
inputs newer than outputs and planned to re-run jobs (3 or 4 of them with every output
present; all 23 when the benchmark files were missing too, see below). DVC's status is by content
hash, so once it says the outputs match dvc.lock, `--touch` only tells Snakemake the same
(it re-dates outputs in DAG order and runs nothing). Dropping `mtime` from Snakemake's
rerun-triggers instead would also hide real code edits: the rules list their source files
as inputs precisely so that mtimes catch those.

Benchmark files: the report reads logs/benchmarks/**.tsv and Snakemake counts a missing
benchmark file as a missing output, so unless dvc.yaml tracks logs/benchmarks, a clone
has none and any target rule re-runs (an experiment there re-ran the whole grid:
measured). dvc.yaml tracks them; the two tests that need them check that first.

The origin is a copy of the session's DVC repository (`dvc_study` in conftest.py): the
local tiny run's code, params and outputs, recorded by `dvc repro` without retraining
(what a user does after running the study with Snakemake directly, e.g. on a cluster;
tests/test_dvc.py checks that recording).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import OUTPUT_DIRS, copy_workspace, git_identity, run

pytestmark = pytest.mark.slow

PULL = [
    ["dvc", "pull"],
    ["dvc", "status", "--json"],
    ["snakemake", "--touch"],
]


def tracks_benchmarks(repo: Path) -> bool:
    """Whether dvc.yaml lists logs/benchmarks/* as stage outputs (the report reads them and
    Snakemake counts a missing benchmark file as a missing output)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])]
    return any(str(o).startswith("logs/benchmarks") for o in outs)


def tracked_files(repo: Path) -> dict[str, str]:
    """sha256 of every file under the output folders (and logs/benchmarks when DVC tracks it)."""
    dirs = OUTPUT_DIRS + (["logs/benchmarks"] if tracks_benchmarks(repo) else [])
    out = {}
    for d in dirs:
        for f in sorted((repo / d).rglob("*")):
            if f.is_file() and f.name != ".gitignore":
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def planned_jobs(dry_run: str) -> int:
    """Jobs a `snakemake -n` output plans (its "Job stats" table), `all` not counted."""
    counts = {}
    for line in dry_run.split("Job stats:")[-1].splitlines() if "Job stats:" in dry_run else []:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts.get("total", 0) - counts.get("all", 0)


@pytest.fixture(scope="module")
def shared(dvc_study, tmp_path_factory):
    base = tmp_path_factory.mktemp("remote")
    origin, clone, remote = base / "origin", base / "clone", base / "remote"
    timings = {}

    copy_workspace(dvc_study["repo"], origin)
    run(["dvc", "remote", "add", "-d", "store", str(remote)], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "tiny study results, remote"], origin)
    t = time.monotonic()
    run(["dvc", "push"], origin)
    timings["dvc push"] = time.monotonic() - t

    # A new user: clone, pull, and what Snakemake would do before and after the touch.
    t = time.monotonic()
    run(["git", "clone", "-q", str(origin), str(clone)], base)
    git_identity(clone)  # for `dvc exp run`
    run(PULL[0], clone)
    timings["git clone + dvc pull"] = time.monotonic() - t
    status = json.loads(run(PULL[1], clone).stdout or "{}")
    before = run(["snakemake", "-n"], clone).stdout
    t = time.monotonic()
    touch = run(PULL[2], clone)
    timings["snakemake --touch"] = time.monotonic() - t
    print(f"\nDVC remote round trip: jobs Snakemake planned after `dvc pull`, before --touch: "
          f"{planned_jobs(before)}; " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return {"origin": origin, "clone": clone, "remote": remote, "status": status,
            "before_touch": before, "touch": touch.stdout + touch.stderr}


def test_pull_restores_every_output_with_the_same_hash(shared):
    origin, clone = shared["origin"], shared["clone"]
    want, got = tracked_files(origin), tracked_files(clone)
    assert any(p.startswith("models/students/") for p in want) and "reports/index.html" in want
    assert any(p.startswith("data/prepared/") for p in want)
    assert sorted(got) == sorted(want)
    assert got == want
    assert any(shared["remote"].rglob("*")), "nothing was pushed to the remote"


def test_pulled_outputs_match_dvc_lock(shared):
    assert shared["status"] == {}, shared["status"]


def test_dvc_repro_in_the_clone_has_nothing_to_do(shared):
    out = run(["dvc", "repro"], shared["clone"]).stdout
    assert "Running stage" not in out, out
    assert "Data and pipelines are up to date" in out


def test_snakemake_in_the_clone_has_nothing_to_do(shared):
    """The whole DAG, hence also what each DVC stage runs (`snakemake --until <stage>`, a
    part of it; all but evaluate's and the report's (forced) ran for real, finding nothing to do, when DVC recorded
    the study: tests/test_dvc.py). With the benchmark files missing, a target rule's own missing
    benchmark would make it re-run."""
    clone = shared["clone"]
    assert tracks_benchmarks(clone), ("dvc.yaml does not track logs/benchmarks: after `dvc pull` the benchmark files are "
                                      "missing, and `snakemake --until evaluate` then plans 21 jobs (measured)")
    out = run(["snakemake", "-n"], clone).stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_experiment_in_the_clone_trains_only_the_new_cells(shared):
    """The point of sharing: a colleague who pulled the study adds a temperature and
    trains only the new cells (19: 2 datasets x 2 sizes x 2 alphas + 11 design
    variants; the born-again generations train at T = 1 only), not the whole grid."""
    clone = shared["clone"]
    assert tracks_benchmarks(clone), ("dvc.yaml does not track logs/benchmarks: the experiment re-runs every job "
                     "(measured: 2 prepare, 2 teacher, 20 distill, walkthrough, evaluate, report)")
    proc = run(["dvc", "exp", "run", "-S", "distill.objectives.kd.temperature=[1,4,8]"], clone, timeout=900)
    out = proc.stdout + proc.stderr
    assert out.count("(Rule: distill)") == 19, out[-3000:]
    for rule in ("prepare", "teacher", "transfer", "walkthrough"):
        assert f"(Rule: {rule})" not in out, out[-3000:]
    assert (clone / "models/students/digits/h8/kd_T8_mix0.9.logits.npz").exists()
    results = (clone / "reports/results.csv").read_text()
    assert ",distilled,kd,T8,8,8," in results and ",distilled,kd,T8,16,8," in results  # the new cells, evaluated
