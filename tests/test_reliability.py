"""Guarantees, each proven: kill -9 mid-grid then resume gives byte-identical results;
two clean runs are byte-identical; a second run while one is running fails fast;
a diverging cell fails alone with its name and epoch; bad data stops `prepare`."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_workspace, run, tiny_params, tool_env

pytestmark = pytest.mark.slow
PROFILE = ["--workflow-profile", "workflow/profiles/default", "--cores", "2"]
ARTIFACT_DIRS = ("data/prepared", "models", "reports/results.csv", "reports/metrics.json",
                 "reports/calibration.csv")


def digests(ws: Path) -> dict[str, str]:
    out = {}
    for name in ARTIFACT_DIRS:
        root = ws / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path.relative_to(ws))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def only_tensors(state) -> bool:
    """A state dict, or (transfer sets' teachers) a dict of state dicts: tensors at the leaves."""
    if isinstance(state, dict):
        return all(only_tensors(v) for v in state.values())
    return isinstance(state, torch.Tensor)


def distill_outputs(ws: Path) -> list[Path]:
    return sorted((ws / "models/students").rglob("*.logits.npz")) if (ws / "models/students").exists() else []


def test_kill_minus_nine_then_resume_is_byte_identical(finished, tmp_path):
    clean_run = finished  # an uninterrupted run of the same effective params
    ws = make_workspace(tmp_path / "study")
    total_cells = len(distill_outputs(clean_run))
    proc = subprocess.Popen(["snakemake", *PROFILE], cwd=ws, env=tool_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(distill_outputs(ws)) < 3:
            assert proc.poll() is None, "workflow ended before it could be interrupted"
            assert time.monotonic() < deadline, "no distill cell finished in time"
            time.sleep(0.05)
        # A second run while this one holds the directory: refused at once, first unharmed.
        second = run(["snakemake", *PROFILE], ws, check=False, timeout=60)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(distill_outputs(ws))
    assert 0 < done_before < total_cells
    # Nothing half-written under a final name: only temp files (dot-prefixed) may remain.
    for path in distill_outputs(ws):
        assert path.stat().st_size > 0
    run(["snakemake", "--unlock"], ws)
    resumed = run(["snakemake", *PROFILE], ws)
    redone = (resumed.stdout + resumed.stderr).count("(Rule: distill)")
    # Cells finished before the kill are kept; a job killed after writing its files but
    # before Snakemake recorded it as complete is redone (at most the 2 jobs in flight).
    assert total_cells - done_before <= redone <= total_cells - done_before + 2, (redone, done_before)
    assert digests(ws) == digests(clean_run)
    assert (ws / "reports/results.csv").read_bytes() == (clean_run / "reports/results.csv").read_bytes()
    for path in (ws / "models").rglob("*.pt"):
        assert only_tensors(torch.load(path, weights_only=True)), path
    # Temp files of killed jobs are removed when their job re-runs.
    assert not list(ws.rglob(".*.tmp")), list(ws.rglob(".*.tmp"))


def test_diverging_cell_fails_alone_with_its_name_and_epoch(tmp_path):
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "sine", "kind": "sine", "n_train": 120, "n_test": 400}]
    params["distill"]["sizes"] = [8]
    params["distill"]["temperatures"] = [1, 1e-40]  # float32 logits / T overflow to inf
    params["walkthrough"]["enabled"] = False
    params["designs"]["datasets"] = []  # the grid alone
    ws = make_workspace(tmp_path / "study", params)
    proc = run(["snakemake", "-c2", "--keep-going", "--show-failed-logs"], ws, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "distill[sine, h8, T1e-40]: loss is not finite at epoch 1" in out
    cells = {p.name for p in distill_outputs(ws)}
    assert cells == {"baseline.logits.npz", "T1.logits.npz", "logit_mse.logits.npz"}
    assert not (ws / "reports/results.csv").exists(), "no metrics from a failed grid"


def test_bad_csv_stops_prepare_and_writes_nothing_downstream(tmp_path):
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "table", "kind": "csv", "path": "data/raw/t.csv", "label": "y"}]
    params["designs"]["datasets"] = ["table"]  # a CSV dataset may carry the study designs too
    ws = make_workspace(tmp_path / "study", params)
    (ws / "data/raw/t.csv").write_text("a,b,y\n1,2,x\n3,oops,z\n4,5,x\n")
    proc = run(["snakemake", "-c2", "--show-failed-logs"], ws, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data/raw/t.csv: row 3, column 'b': 'oops' is not a finite number" in out
    assert not (ws / "data/prepared/table.npz").exists()
    assert not (ws / "models").exists()


BAD_PARAMS = [
    ("distill.temperatures", [1, 1.0], "distill.temperatures[1]: 1.0 duplicates 1"),
    ("distill.alpha", 1.5, "distill.alpha: 1.5"),
    ("distill.sizes", [], "distill.sizes: []"),
    ("distill.seeds", "three", 'distill.seeds: "three"'),
    ("prepare.datasets", [{"name": "d", "kind": "imagenet"}], 'prepare.datasets[0].kind: "imagenet"'),
    ("prepare.datasets", [{"name": "d", "kind": "csv", "path": "data/raw/missing.csv", "label": "y"}],
     "prepare.datasets[0].path: 'data/raw/missing.csv' does not exist"),
    ("teacher.lr_typo", 0.1, "teacher.lr_typo: unknown key"),
]


@pytest.mark.parametrize("key, value, message", BAD_PARAMS, ids=[f"{k}={v}" for k, v, _ in BAD_PARAMS])
def test_bad_params_stop_every_front_door(tmp_path, key, value, message):
    params = tiny_params()
    section, name = key.split(".")
    params[section][name] = value
    ws = make_workspace(tmp_path / "study", params)
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)
    for cmd in (["distillstudy", "validate", "params.yaml"], ["snakemake", "-c1"], ["dvc", "repro"]):
        proc = run(cmd, ws, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{cmd} accepted {key}={value!r}"
        assert message in out, f"{cmd}: {message!r} not in:\n{out[-2000:]}"
    assert not (ws / "data/prepared").exists(), "no job may start"
