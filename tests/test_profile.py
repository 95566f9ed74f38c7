"""Plain `snakemake` (no --workflow-profile) uses profiles/default (a link to
workflow/profiles/default) and shows a failed job's own message, not only "check log
file(s) for error details"."""

from __future__ import annotations

import pytest

from conftest import make_workspace, run, tiny_params

pytestmark = pytest.mark.slow


def test_plain_snakemake_shows_a_failed_jobs_message(tmp_path):
    params = tiny_params()
    # Valid params (the label column exists), data no job can use: every row has one class.
    params["prepare"]["datasets"] = [{"name": "flat", "kind": "csv", "path": "data/raw/flat.csv",
                                      "label": "y"}]
    params["designs"]["datasets"] = []
    params["distill"].pop("tune")  # it names the tiny study's sine
    ws = make_workspace(tmp_path / "study", params)
    rows = "\n".join(f"{i / 10},{i % 7},a" for i in range(60))
    (ws / "data/raw/flat.csv").write_text("x1,x2,y\n" + rows + "\n")
    proc = run(["snakemake", "--cores", "1", "data/prepared/flat.npz"], ws, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # Found next to the top-level Snakefile: profiles/ links to workflow/profiles/.
    assert "Using workflow specific profile profiles/default" in out
    # The job's own error, printed from its log by the profile's show-failed-logs.
    assert "single class" in out, out[-3000:]
