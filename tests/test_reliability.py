"""Guarantees, each proven: kill -9 mid-grid then resume gives byte-identical results;
a second run while one is running fails fast; a diverging cell fails alone with its
name and epoch; bad data stops `prepare`; bad params stop every front door.
(That two clean runs are byte-identical: each rule run again in tests/test_rules.py
writes the full run's bytes; the grid re-trained here gives the full run's results.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from conftest import copy_workspace, make_workspace, run, tiny_params, tool_env

pytestmark = pytest.mark.slow
PROFILE = ["--workflow-profile", "workflow/profiles/default", "--cores", "2", "--configfile", "tests/params.tiny.yaml"]
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
    """Part of the grid (15 cells) and what follows it re-run in a copy of the finished
    study, killed mid-grid, resumed: the same bytes as the uninterrupted run."""
    clean_run = finished  # an uninterrupted run of the same effective params
    ws = copy_workspace(finished, tmp_path / "study")
    grid = ["models/students/sine/h8"]
    cells = {p.relative_to(finished) for g in grid for p in (finished / g).rglob("*.logits.npz")}
    for g in grid:
        shutil.rmtree(ws / g)
    for name in ("results.csv", "metrics.json", "calibration.csv", "designs.csv", "index.html"):
        (ws / "reports" / name).unlink()

    def done() -> int:
        return sum((ws / c).exists() for c in cells)

    assert len(cells) == 15 and done() == 0
    # Each job in its own process (no warm worker): a warm job of this tiny grid takes
    # ~0.1 s, and all 15 would finish before the kill. The resumed run is warm, so the
    # comparison below also checks that both ways write the same bytes.
    proc = subprocess.Popen(["snakemake", *PROFILE], cwd=ws, env={**tool_env(), "DISTILLSTUDY_WARM": "0"},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while done() < 3:
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
    done_before = done()
    assert 0 < done_before < len(cells)
    # Nothing half-written under a final name: only temp files (dot-prefixed) may remain.
    for path in distill_outputs(ws):
        assert path.stat().st_size > 0
    run(["snakemake", "--unlock"], ws)
    resumed = run(["snakemake", *PROFILE], ws)
    redone = (resumed.stdout + resumed.stderr).count("(Rule: distill)")
    for rule in ("prepare", "teacher", "transfer", "walkthrough"):  # upstream of the grid: kept
        assert f"(Rule: {rule})" not in resumed.stdout + resumed.stderr, rule
    # Cells finished before the kill are kept; a job killed after writing its files but
    # before Snakemake recorded it as complete is redone (at most the 2 jobs in flight).
    assert len(cells) - done_before <= redone <= len(cells) - done_before + 2, (redone, done_before)
    assert digests(ws) == digests(clean_run)
    assert (ws / "reports/results.csv").read_bytes() == (clean_run / "reports/results.csv").read_bytes()
    for path in (ws / "models").rglob("*.pt"):
        assert only_tensors(torch.load(path, weights_only=True)), path
    # Temp files of killed jobs are removed when their job re-runs.
    assert not list(ws.rglob(".*.tmp")), list(ws.rglob(".*.tmp"))


def test_diverging_cell_fails_alone_with_its_name_and_epoch(finished, tmp_path):
    """The sine grid at H = 8 with one more temperature that diverges, in a copy of the
    finished study whose sine H = 8 cells are removed: those train again beside it."""
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "sine", "kind": "sine", "n_train": 120, "n_test": 400}]
    params["distill"]["students"] = [{"family": "mlp", "sizes": [8]}]
    # float32 logits / T overflow to inf
    params["distill"]["objectives"] = {"kd": {"temperature": [1, 1e-40]}, "logit_mse": {}}
    params["distill"]["alpha"] = [0.9]
    params["designs"]["alpha"] = [0.9]
    params["walkthrough"]["enabled"] = False
    params["designs"]["datasets"] = []  # the grid alone
    ws = copy_workspace(finished, tmp_path / "study")
    shutil.rmtree(ws / "models/students/sine/h8")
    # As params.yaml, not --configfile: a config file is merged into params.yaml mapping by
    # mapping, so params.yaml's other objectives would join the grid.
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-c2", "--keep-going", "--show-failed-logs"], ws, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "distill[sine, h8, kd_T1e-40_mix0.9]: loss is not finite at epoch 1" in out
    assert out.count("(Rule: distill)") == 3, "the other cells of the grid ran to the end"
    cells = {p.name for p in (ws / "models/students/sine/h8").glob("*.logits.npz")}
    assert cells == {"baseline.logits.npz", "kd_T1_mix0.9.logits.npz", "logit_mse_mix0.9.logits.npz"}
    assert "(Rule: evaluate)" not in out, "no metrics from a failed grid"
    assert (ws / "reports/results.csv").read_bytes() == (finished / "reports/results.csv").read_bytes()


def test_bad_csv_stops_prepare_and_writes_nothing_downstream(tmp_path):
    params = tiny_params()
    params["prepare"]["datasets"] = [{"name": "table", "kind": "csv", "path": "data/raw/t.csv", "label": "y"}]
    params["designs"]["datasets"] = ["table"]  # a CSV dataset may carry the study designs too
    params["distill"].pop("tune")  # it names the tiny study's sine
    ws = make_workspace(tmp_path / "study", params)
    (ws / "data/raw/t.csv").write_text("a,b,y\n1,2,x\n3,oops,z\n4,5,x\n")
    proc = run(["snakemake", "-c2", "--show-failed-logs"], ws, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data/raw/t.csv: row 3, column 'b': 'oops' is not a finite number" in out
    assert not (ws / "data/prepared/table.npz").exists()
    assert not (ws / "models").exists()


BAD_PARAMS = [
    ("distill.alpha", [0.9, 0.90], "distill.alpha[1]: 0.9 duplicates 0.9"),
    ("distill.alpha", 1.5, "distill.alpha: 1.5"),
    ("distill.sizes", [], "distill.sizes: []"),
    ("distill.seeds", "three", 'distill.seeds: "three"'),
    ("prepare.datasets", [{"name": "d", "kind": "imagenet"}], 'prepare.datasets[0].kind: "imagenet"'),
    ("prepare.datasets", [{"name": "d", "kind": "csv", "path": "data/raw/missing.csv", "label": "y"}],
     "prepare.datasets[0].path: 'data/raw/missing.csv' does not exist"),
    ("teacher.lr_typo", 0.1, "teacher.lr_typo: unknown key"),
]


DOORS = [["distillstudy", "validate", "params.yaml"], ["snakemake", "-c1"], ["dvc", "repro"]]


@pytest.fixture(scope="module")
def front_doors(tmp_path_factory) -> list[dict]:
    """Each bad value in its own git + DVC workspace of the tiny study, tried at every
    front door. The 21 commands are mostly interpreter start-up: they run 4 at a time."""
    base = tmp_path_factory.mktemp("bad-params")
    template = make_workspace(base / "template")
    run(["git", "init", "-q"], template)
    run(["dvc", "init", "-q"], template)
    cases = []
    for i, (key, value, _) in enumerate(BAD_PARAMS):
        params = tiny_params()
        section, name = key.split(".")
        params[section][name] = value
        ws = copy_workspace(template, base / f"case{i}")
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        cases.append(ws)

    def attempt(job):
        ws, cmd = job
        proc = subprocess.run(cmd, cwd=ws, env=tool_env(), capture_output=True, text=True, timeout=300)
        return cmd, proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        attempts = list(pool.map(attempt, [(ws, cmd) for ws in cases for cmd in DOORS]))
    return [{"ws": ws, "attempts": attempts[i * len(DOORS):(i + 1) * len(DOORS)]} for i, ws in enumerate(cases)]


# One worker (conftest.ONE_WORKER): the module fixture tries every case at every door.
@pytest.mark.parametrize("case", range(len(BAD_PARAMS)), ids=[f"{k}={v}" for k, v, _ in BAD_PARAMS])
def test_bad_params_stop_every_front_door(front_doors, case):
    key, value, message = BAD_PARAMS[case]
    for cmd, returncode, out in front_doors[case]["attempts"]:
        assert returncode != 0, f"{cmd} accepted {key}={value!r}"
        assert message in out, f"{cmd}: {message!r} not in:\n{out[-2000:]}"
    assert not (front_doors[case]["ws"] / "data/prepared").exists(), "no job may start"
