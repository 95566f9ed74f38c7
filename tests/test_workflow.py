"""The whole workflow through real Snakemake: tiny end-to-end run, no-op rerun,
lint, and growing the grid re-runs only the new cells."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from conftest import run, tiny_params

pytestmark = pytest.mark.slow


def job_stats(text: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table -> {rule: count}."""
    block = text.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


def test_end_to_end_outputs(finished):
    results = pd.read_csv(finished / "reports/results.csv", dtype=str, keep_default_na=False)
    # 2 datasets x 2 sizes x (baseline + 2 temperatures + logit_mse) x 2 seeds, + 2 teachers.
    students = results[results.model != "teacher"]
    assert students.groupby(["dataset", "student_size", "model", "temperature", "seed"]).ngroups == 2 * 2 * 4 * 2
    assert set(results.dataset) == {"sine", "digits"}, "the tiny datasets list replaces the default one"
    html = (finished / "reports/index.html").read_text()
    assert "Walkthrough" in html or "walkthrough" in html
    assert pd.to_numeric(results.value).notna().all()


def test_second_run_has_nothing_to_do(finished):
    proc = run(["snakemake", "-n", "-c2", "--configfile", "tests/params.tiny.yaml"], finished)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(finished):
    run(["snakemake", "--lint"], finished)


def test_adding_a_temperature_reruns_only_new_cells(finished):
    params = tiny_params()
    params["distill"]["temperatures"] = [1, 4, 8]
    (finished / "grown.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "-c2", "--configfile", "grown.yaml"], finished)
    stats = job_stats(proc.stdout + proc.stderr)
    # 2 datasets x 2 sizes new T8 cells, then the aggregate steps.
    # 2 datasets x 2 sizes on the grid + 7 study-design variants x 1 size (digits)
    assert stats == {"all": 1, "distill": 11, "evaluate": 1, "report": 1, "total": 14}


def test_temperature_spelling_does_not_rerun(finished):
    params = tiny_params()
    params["distill"]["temperatures"] = [1.0, 4.0]
    (finished / "floats.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-n", "-c2", "--configfile", "floats.yaml"], finished)
    text = proc.stdout + proc.stderr
    assert "distill" not in job_stats(text) if "Job stats:" in text else "Nothing to be done" in text


def test_invalid_params_stop_before_any_job(finished):
    params = tiny_params()
    params["distill"]["temperatures"] = [1, -4]
    (finished / "bad.yaml").write_text(yaml.safe_dump(params))
    proc = run(["snakemake", "-c2", "--configfile", "bad.yaml"], finished, check=False)
    assert proc.returncode != 0
    assert "distill.temperatures[1]: -4" in proc.stdout + proc.stderr
    assert not re.search(r"^localrule", proc.stdout + proc.stderr, flags=re.M)
