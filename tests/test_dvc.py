"""DVC front door on a tiny study: `dvc repro`, a no-op second repro, metrics, and an
experiment that adds one temperature re-running only the new cells."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import ROOT, make_workspace, run, tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("dvc") / "study")
    shutil.copy2(ROOT / ".gitignore", ws / ".gitignore")
    run(["git", "init", "-q"], ws)
    run(["git", "config", "user.email", "test@example.com"], ws)
    run(["git", "config", "user.name", "test"], ws)
    run(["dvc", "init", "-q"], ws)
    run(["dvc", "config", "core.analytics", "false"], ws)
    run(["git", "add", "-A"], ws)
    run(["git", "commit", "-qm", "tiny study"], ws)
    proc = run(["dvc", "repro"], ws)
    return ws, proc.stdout + proc.stderr


def test_repro_runs_every_stage(repo):
    ws, out = repo
    for stage in ("prepare", "teacher", "distill", "evaluate", "walkthrough", "report"):
        assert f"Running stage '{stage}'" in out
    assert (ws / "reports/index.html").exists()
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "teacher", "distill", "evaluate", "walkthrough", "report"}
    assert lock["stages"]["distill"]["params"]["params.yaml"]["distill"]["temperatures"] == [1, 4]


def test_second_repro_does_nothing(repo):
    ws, _ = repo
    out = run(["dvc", "repro"], ws).stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_metrics_show_prints_the_summary(repo):
    ws, _ = repo
    out = run(["dvc", "metrics", "show", "--json"], ws).stdout
    metrics = json.loads(out)
    flat = json.dumps(metrics)
    assert "teacher" in flat and "baseline_test_accuracy" in flat


def test_experiment_adding_a_temperature_runs_only_new_cells(repo):
    ws, _ = repo
    run(["git", "add", "-A"], ws)
    run(["git", "commit", "-qm", "tiny study results"], ws)
    proc = run(["dvc", "exp", "run", "-S", "distill.temperatures=[1,4,8]"], ws)
    out = proc.stdout + proc.stderr
    distill_jobs = out.count("(Rule: distill)")
    assert distill_jobs == 4, out[-3000:]  # 2 datasets x 2 sizes, only T = 8
    assert "(Rule: teacher)" not in out and "(Rule: prepare)" not in out
    assert (ws / "models/students/digits/h8/T8.logits.npz").exists()
