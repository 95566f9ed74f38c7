"""DVC front door on a tiny study: `dvc repro`, a no-op second repro, metrics, and an
experiment that adds one temperature re-running only the new cells."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import ROOT, make_workspace, run, tiny_params, tool_env

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
    first = subprocess.Popen(["dvc", "repro"], cwd=ws, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (ws / "data/prepared").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # `make study` is `dvc repro`: a second one while the first runs must fail fast.
    started = time.monotonic()
    second = run(["dvc", "repro"], ws, check=False, timeout=60)
    concurrent = (second.returncode, second.stdout + second.stderr, time.monotonic() - started)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-4000:]
    return ws, out, concurrent


def test_second_repro_while_one_runs_fails_fast(repo):
    _, _, (returncode, output, seconds) = repo
    assert returncode != 0
    assert "lock" in output.lower()
    assert seconds < 30


def test_repro_runs_every_stage(repo):
    ws, out, _ = repo
    for stage in ("prepare", "teacher", "transfer", "distill", "evaluate", "walkthrough", "report"):
        assert f"Running stage '{stage}'" in out
    assert (ws / "reports/index.html").exists()
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "teacher", "transfer", "distill", "evaluate", "walkthrough", "report"}
    assert lock["stages"]["distill"]["params"]["params.yaml"]["distill"]["temperatures"] == [1, 4]
    # every study-design axis of the tiny study ran through DVC and reached the report
    designs = (ws / "reports/designs.csv").read_text()
    for axis in ("transfer", "epochs", "teacher_width", "ensemble", "label_fraction"):
        assert f",{axis}," in designs
        assert f'id="design-{axis}"' in (ws / "reports/index.html").read_text()
    assert sorted(p.name for p in (ws / "models/transfer/digits").glob("*.npz")) == [
        "ensemble-2.npz", "labels-0.3.npz", "transfer-augmented.npz", "transfer-cross_fitted.npz",
        "transfer-in_sample.npz", "width-0.5.npz"]


def test_second_repro_does_nothing(repo):
    ws, _, _ = repo
    out = run(["dvc", "repro"], ws).stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_metrics_show_prints_the_summary(repo):
    ws, _, _ = repo
    out = run(["dvc", "metrics", "show", "--json"], ws).stdout
    metrics = json.loads(out)
    flat = json.dumps(metrics)
    assert "teacher" in flat and "baseline_test_accuracy" in flat


def test_experiment_adding_a_temperature_runs_only_new_cells(repo):
    ws, _, _ = repo
    run(["git", "add", "-A"], ws)
    run(["git", "commit", "-qm", "tiny study results"], ws)
    proc = run(["dvc", "exp", "run", "-S", "distill.temperatures=[1,4,8]"], ws)
    out = proc.stdout + proc.stderr
    distill_jobs = out.count("(Rule: distill)")
    assert distill_jobs == 11, out[-3000:]  # only T = 8: 2 datasets x 2 sizes + 7 design variants
    assert "(Rule: teacher)" not in out and "(Rule: prepare)" not in out and "(Rule: transfer)" not in out
    assert (ws / "models/students/digits/h8/T8.logits.npz").exists()
