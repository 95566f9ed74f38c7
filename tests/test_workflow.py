"""The whole workflow through real Snakemake: tiny end-to-end run, no-op rerun,
lint, and growing the grid re-runs only the new cells (all on the session's one run,
`finished`, which these tests only read: their config files go to tmp_path)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from conftest import job_stats, run, tiny_params
from html_tables import section_text, tables

pytestmark = pytest.mark.slow


def test_end_to_end_outputs(finished):
    results = pd.read_csv(finished / "reports/results.csv", dtype=str, keep_default_na=False)
    # 2 datasets x 2 sizes x (baseline + 7 objective settings x 2 alphas) x 2 seeds, + 2 teachers.
    students = results[~results.model.isin(["teacher", "baseline_untuned"])]  # (sine's tuned baselines' twins)
    assert students.groupby(["dataset", "student_size", "model", "setting", "alpha", "seed"]).ngroups == 2 * 2 * 15 * 2
    assert set(students.objective) == {"", "kd", "logit_mse", "dkd", "dist", "ls_kd", "nkd"}
    assert set(students.alpha) == {"0", "0.5", "0.9"}
    assert set(results.dataset) == {"sine", "digits"}, "the tiny datasets list replaces the default one"
    assert pd.to_numeric(results.value).notna().all()

    # The walkthrough section shows the walkthrough's own numbers: one row per n of the
    # tiny params, the mean test log loss of each model, and the verdict.
    html = (finished / "reports/index.html").read_text()
    walk = pd.read_csv(finished / "reports/walkthrough.csv")
    table, variance_table = tables(html, "walkthrough")
    header, rows = table[0], table[1:]
    models = [h.split(":")[0] for h in header[1:]]
    assert set(models) == set(walk.model)
    assert [int(r[0]) for r in rows] == tiny_params()["walkthrough"]["n_train"]
    test = walk[walk.split == "test"].pivot(index="n_train", columns="model", values="log_loss")
    for row in rows:
        for model, shown in zip(models, row[1:]):
            assert float(shown) == pytest.approx(test.loc[int(row[0]), model], abs=5e-5)
    better = int((test["distilled"] < test["student"]).sum())
    verdict = (f"at every n ({better} of {better} values of n)" if better == len(test)
               else f"at {better} of {len(test)} values of n")
    assert verdict in section_text(html, "walkthrough")
    assert html.count('alt="Walkthrough: mean') == 2  # the test and train log-loss figures
    # ... and its bias² + variance table: one row per n and decomposed model, in the CSV's order
    variance = pd.read_csv(finished / "reports/walkthrough_variance.csv")
    assert [(int(r[0]), r[1]) for r in variance_table[1:]] == list(zip(variance.n_train, variance.model))


def test_second_run_has_nothing_to_do(finished):
    proc = run(["snakemake", "-n", "-c2", "--configfile", "tests/params.tiny.yaml"], finished)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(finished):
    run(["snakemake", "--lint"], finished)


def test_adding_a_temperature_reruns_only_new_cells(finished, tmp_path):
    params = tiny_params()
    params["distill"]["objectives"]["kd"]["temperature"] = [1, 4, 8]
    (tmp_path / "grown.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "-c2", "--configfile", str(tmp_path / "grown.yaml")], finished)
    stats = job_stats(proc.stdout + proc.stderr)
    # The new T8 cells: 2 datasets x 2 sizes x 2 alphas on the grid + 11 study-design
    # variants x 1 size x 1 designs.alpha (digits), then the aggregate steps.
    assert stats == {"all": 1, "distill": 19, "evaluate": 1, "report": 1, "total": 22}


def test_adding_an_objective_setting_reruns_only_its_cells(finished, tmp_path):
    params = tiny_params()
    params["distill"]["objectives"]["dkd"]["beta"] = [8, 2]
    (tmp_path / "grown.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "-c2", "--configfile", str(tmp_path / "grown.yaml")], finished)
    out = proc.stdout + proc.stderr
    # DKD at beta = 2: 2 datasets x 2 sizes x 2 alphas; the designs train KD only.
    assert job_stats(out) == {"all": 1, "distill": 8, "evaluate": 1, "report": 1, "total": 11}
    trained = re.findall(r"output: (models/students/\S+?)\.pt", out)
    assert len(trained) == 8 and all("/dkd_alpha1_beta2_T4_mix" in path for path in trained), trained


def test_temperature_spelling_does_not_rerun(finished, tmp_path):
    params = tiny_params()
    params["distill"]["objectives"]["kd"]["temperature"] = [1.0, 4.0]
    params["distill"]["alpha"] = [0.50, 0.9]
    (tmp_path / "floats.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "-c2", "--configfile", str(tmp_path / "floats.yaml")], finished)
    stats = job_stats(proc.stdout + proc.stderr)
    # No cell is new, so nothing trains or is evaluated again; only the report, whose
    # provenance prints the params as written, may run.
    assert set(stats) - {"all", "total", "report"} == set(), stats


def test_invalid_params_stop_before_any_job(workspace):
    params = tiny_params()
    params["distill"]["objectives"]["kd"]["temperature"] = [1, -4]
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-c2", "--configfile", "bad.yaml"], workspace, check=False)
    assert proc.returncode != 0
    assert "distill.objectives.kd.temperature[1]: -4" in proc.stdout + proc.stderr
    assert not re.search(r"^localrule", proc.stdout + proc.stderr, flags=re.M)
