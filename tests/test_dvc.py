"""DVC front door on the tiny study (the session's `dvc_study`, recorded by `dvc repro`
from the Snakemake run): every stage recorded without retraining, a second repro while
one runs fails fast, a no-op repro, metrics, code edits reach exactly the stages and
rules that use the code, and a smaller grid leaves no stale result behind.

Adding a temperature by `dvc exp run` (only the new cells train) is tested in a clone
that pulled the study: tests/test_remote.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import STAGES, copy_workspace, job_stats, run, tool_env
from html_tables import tables

pytestmark = pytest.mark.slow
EVALUATE_OUTS = ("reports/results.csv", "reports/designs.csv", "reports/calibration.csv")


@pytest.fixture(scope="module")
def repo(dvc_study, tmp_path_factory):
    """A copy of the session's DVC repository (its experiments change it)."""
    return copy_workspace(dvc_study["repo"], tmp_path_factory.mktemp("dvc-exp") / "study")


def test_second_repro_while_one_runs_fails_fast(dvc_study):
    c = dvc_study["concurrent"]
    assert c["first_still_running"], "the first dvc repro ended before the second one did: nothing was tested"
    assert c["returncode"] != 0
    # refused because the first one holds the repository lock, or (while a stage's command
    # runs) the outputs it is reproducing
    out = c["output"]
    blocked = "is busy, it is being blocked by" in out and f"(PID {c['first_pid']}): " in out
    assert blocked or "Unable to acquire lock" in out, out[-2000:]
    assert c["seconds"] < 30


def test_repro_records_every_stage_without_retraining(dvc_study):
    """Every stage runs its `snakemake --until <stage>` (distill: `--omit-from evaluate
    walkthrough`, everything upstream of evaluate), which finds the outputs of the
    Snakemake run up to date and trains nothing. evaluate and report run again (seconds):
    DVC forces their rules whenever it runs their stages (dvc.yaml: a smaller grid must
    not leave stale tables), and reproduce the same tables."""
    ws, out = dvc_study["repo"], dvc_study["repro"]
    ran = dict(part.split("'", 1) for part in out.split("Running stage '")[1:])
    assert set(ran) == set(STAGES), out[-3000:]
    for stage in ("prepare", "teacher", "transfer", "distill", "walkthrough"):
        # no job: "Nothing to be done", or an empty job table when a later rule (the report,
        # after the forced evaluate) is out of date but outside `--until <stage>`
        nothing = "Nothing to be done" in ran[stage] or re.search(r"total\s+0\n", ran[stage])
        assert nothing and "(Rule: " not in ran[stage], ran[stage][-3000:]
    for stage in ("evaluate", "report"):
        assert f"(Rule: {stage})" in ran[stage] and "(Rule: distill)" not in ran[stage], ran[stage][-3000:]
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert lock["stages"]["distill"]["params"]["params.yaml"]["distill"]["objectives"]["kd"]["temperature"] == [1, 4]
    # every study-design axis of the tiny study reached designs.csv and the report
    designs = pd.read_csv(ws / "reports/designs.csv", dtype=str, keep_default_na=False)
    assert set(designs["axis"]) == {"transfer", "epochs", "teacher_width", "ensemble", "label_fraction"}
    html = (ws / "reports/index.html").read_text()
    for axis in set(designs["axis"]):
        assert f'<section id="design-{axis}">' in html
    assert sorted(p.name for p in (ws / "models/transfer/digits").glob("*.npz")) == [
        "ensemble-2.npz", "generation-1.npz", "labels-0.3.npz", "resample-1.npz",
        "resample-2.npz", "transfer-augmented.npz", "transfer-consistent.npz", "transfer-cross_fitted.npz",
        "transfer-in_sample.npz", "transfer-patient.npz", "width-0.5.npz"]


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out


def _scalars(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif not isinstance(value, list):  # `dvc metrics show` leaves lists (the CIs) out
            out[prefix + key] = value
    return out


def test_metrics_show_prints_the_summary(repo):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    metrics = _scalars(shown[""]["data"]["reports/metrics.json"]["data"])
    assert metrics == _scalars(json.loads((repo / "reports/metrics.json").read_text()))
    assert {key.split(".")[0] for key in metrics} == {"sine", "digits"}
    assert 0 < metrics["digits.h8.baseline_test_accuracy"] <= 1 and "digits.teacher.test_accuracy" in metrics


def status_and_plan(repo) -> tuple[dict, dict[str, int]]:
    """`dvc status --json` and the jobs of `snakemake -n`, run side by side (both read only)."""
    procs = [subprocess.Popen(cmd, cwd=repo, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in (["dvc", "status", "--json"], ["snakemake", "-n"])]
    (status, err), (plan, plan_err) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode == 0, err[-3000:]
    assert procs[1].returncode == 0, plan_err[-3000:]
    return json.loads(status), job_stats(plan + plan_err)


# Appending a comment to one module: the DVC stages whose deps change (`dvc status`;
# `dvc repro --dry` plans the same) and the rules Snakemake plans (dry run). Measured:
# evaluate and report import the statistics; teacher, transfer and distill the models.
# DVC lists evaluate and report for models.py only once those three stages' outputs
# have changed (it compares content hashes, and a comment changes no output), while
# Snakemake, comparing mtimes, plans them at once. A stage's code is its rules' code: the
# language models' rules (teacher_lm, distill_lm, evaluate_lm) re-run with their stage's.
CODE_EDITS = {
    "src/distillstudy/analysis/stats.py": ({"evaluate", "report"}, {"evaluate", "evaluate_lm", "report"}),
    "src/distillstudy/engine/models.py": ({"teacher", "transfer", "distill"},
                                          {"teacher", "teacher_lm", "transfer", "distill", "distill_lm", "evaluate",
                                           "evaluate_lm", "report"}),
}


@pytest.fixture(scope="module")
def clean(repo):
    """The repository before any code edit: nothing to do for DVC nor for Snakemake."""
    assert status_and_plan(repo) == ({}, {})
    return repo


@pytest.mark.parametrize("module", CODE_EDITS)
def test_code_edit_reaches_exactly_the_stages_that_use_it(clean, module):
    dvc_stages, rules = CODE_EDITS[module]
    path = clean / module
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"# a comment: the code changed, its behaviour did not\n")
        status, planned = status_and_plan(clean)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert set(status) == dvc_stages, status
    for stage in dvc_stages:
        assert {"changed deps": {module: "modified"}} in status[stage], status[stage]
    assert set(planned) - {"all", "total"} == rules, planned
    assert status_and_plan(clean) == ({}, {}), "restored: nothing to do for either tool"


def _dataset_sections(html: str) -> list[str]:
    return re.findall(r'<section id="(ds-[^"]+)">', html)


def test_smaller_grid_leaves_no_stale_results_and_going_back_is_byte_identical(repo):
    """`dvc exp run` with fewer temperatures, one alpha and no logit matching: evaluate and
    report must re-run (their params), and every table, metric and report section shows
    only KD at T = 1 (and the other objectives) at alpha = 0.9; back to the original params
    gives the first run's tables, byte for byte.

    The evaluate stage runs because of its params, and forces its rule: by mtimes alone
    Snakemake has nothing to do (the set of cells shrank; no file is newer), and its own
    record of evaluate's former inputs (.snakemake/) is missing in a fresh clone or a
    `dvc exp run --temp` workspace -- without the force the T = 4 rows stayed (measured).
    So the record is deleted here first: the worst case."""
    shutil.rmtree(repo / ".snakemake" / "metadata", ignore_errors=True)
    first = {name: (repo / name).read_bytes() for name in EVALUATE_OUTS}
    before = pd.read_csv(repo / "reports/results.csv", dtype=str, keep_default_na=False)
    assert {"4", "1"} <= set(before["temperature"]) and "logit_mse" in set(before["model"])  # the test can fail
    assert "0.5" in set(before["alpha"])

    proc = run(["dvc", "exp", "run", "-S", "distill.objectives.kd.temperature=[1]",
                "-S", "~distill.objectives.logit_mse", "-S", "distill.alpha=[0.9]"], repo)
    out = proc.stdout + proc.stderr
    assert "(Rule: distill)" not in out, "no cell was added: nothing may train"
    for stage in ("evaluate", "report"):
        assert f"Running stage '{stage}'" in out and f"(Rule: {stage})" in out, out[-3000:]

    results = pd.read_csv(repo / "reports/results.csv", dtype=str, keep_default_na=False)
    assert "logit_mse" not in set(results["model"]) and "distilled" in set(results["model"])
    assert set(results.loc[results.model == "distilled", "temperature"]) == {"1"}
    assert set(results["alpha"]) == {"", "0", "0.9"}
    designs = pd.read_csv(repo / "reports/designs.csv", dtype=str, keep_default_na=False)
    assert set(designs["temperature"]) <= {"", "1"} and "logit_mse" not in set(designs["model"])
    calibration = pd.read_csv(repo / "reports/calibration.csv", dtype=str, keep_default_na=False)
    assert set(calibration.loc[calibration.model == "distilled", "temperature"]) == {"1"}
    assert "logit_mse" not in set(calibration["model"]) and "0.5" not in set(calibration["alpha"])

    metrics = json.loads((repo / "reports/metrics.json").read_text())
    test_acc = results[(results.split == "test") & (results.metric == "accuracy")]
    for dataset, sizes in metrics.items():
        assert set(sizes) == {"teacher", "h8", "h16"}
        for size in (8, 16):
            m = metrics[dataset][f"h{size}"]
            assert set(m) == {"baseline_test_accuracy", "best_gain", "best_gain_ci95", "best_temperature_on_val",
                              "best_test_accuracy", "objectives"}
            assert "logit_mse" not in m["objectives"] and m["objectives"]["kd"]["setting"] == "T1"
            assert m["best_temperature_on_val"] == "1"
            cell = test_acc[(test_acc.dataset == dataset) & (test_acc.student_size == str(size))]
            distilled = pd.to_numeric(cell[cell.model == "distilled"].value).mean()
            baseline = pd.to_numeric(cell[cell.model == "baseline"].value).mean()
            assert m["best_test_accuracy"] == pytest.approx(distilled, abs=1e-9)
            assert m["baseline_test_accuracy"] == pytest.approx(baseline, abs=1e-9)

    html = (repo / "reports/index.html").read_text()
    sections = _dataset_sections(html)
    assert len(sections) == 2
    for section in sections:
        found = tables(html, section)  # (a tuned section has its tuning table between them)
        per_size, all_cells = found[0], found[-1]
        assert not any("logit matching" in h for h in per_size[0]), per_size[0]
        assert {row[per_size[0].index("best T on val")] for row in per_size[1:]} == {"1"}
        header = all_cells[0]
        models = {row[header.index("model")].split(" ")[0] for row in all_cells[1:]}
        assert "logit_mse" not in models and "distilled" in models, models
        kd_rows = [row for row in all_cells[1:] if row[header.index("model")].startswith("distilled")]
        assert {row[header.index("T")] for row in kd_rows} == {"1"}
        assert {row[header.index("α")] for row in all_cells[1:]} == {"0.9"}
    params_shown = html.split('id="parameters"', 1)[1].split("</pre>", 1)[0]
    assert "logit_mse" not in params_shown and "ls_kd" in params_shown

    proc = run(["dvc", "exp", "run", "-S", "distill.objectives.kd.temperature=[1,4]",
                "-S", "+distill.objectives.logit_mse={}", "-S", "distill.alpha=[0.5,0.9]"], repo)
    out = proc.stdout + proc.stderr
    assert "(Rule: distill)" not in out, "the T = 4 and logit_mse cells are still there: nothing may train"
    for name in EVALUATE_OUTS:
        assert (repo / name).read_bytes() == first[name], name
