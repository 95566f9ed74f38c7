"""The provenance record the report prints: commit and dirty flag, date, machine
(CPU model, threads, CUDA device), package versions; wall time per rule from
Snakemake benchmark files."""

from __future__ import annotations

import re

import pytest

from distillstudy import provenance


def test_collect_has_every_field_the_report_promises():
    record = provenance.collect()
    for key in ("git commit", "working tree", "date (UTC)", "machine", "training threads per job", "cuda device"):
        assert record[key], key
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["date (UTC)"])
    assert "logical CPUs" in record["machine"] and "usable" in record["machine"]
    for package in ("python", "torch", "scikit-learn", "snakemake", "dvc"):
        assert record[f"version: {package}"] not in ("", "not installed"), package


@pytest.mark.parametrize("status, expected", [
    (None, "unknown"),
    ("", "clean"),
    (" M dvc.lock\n", "dirty: 1 tracked file with uncommitted changes (dvc.lock)"),
    ("".join(f" M f{i}\n" for i in range(7)),
     "dirty: 7 tracked files with uncommitted changes (f0, f1, f2, f3, f4 and 2 more)"),
])
def test_working_tree_state(status, expected):
    assert provenance.working_tree_state(status) == expected


def test_read_benchmarks_sums_wall_time_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for rel, seconds in (("prepare/a.tsv", 1.5), ("distill/a/h8/T1.tsv", 10.0), ("distill/a/h8/T4.tsv", 12.5)):
        p = tmp_path / "logs" / "benchmarks" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(header + f"{seconds}\t0:00:01\t1\t1\t1\t1\t0\t0\t0\t1\n")
        files.append(p)
    table = provenance.read_benchmarks(files)
    assert table.to_dict("records") == [{"rule": "prepare", "wall_s": 1.5, "jobs": 1},
                                        {"rule": "distill", "wall_s": 22.5, "jobs": 2}]


def test_dirty_path_is_named_whole(tmp_path, monkeypatch):
    """A real `git status --porcelain` line starts with a space (" M file"): the path must
    survive whole (a full strip() once turned "src/x.py" into "rc/x.py")."""
    import subprocess

    for cmd in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.py").write_text("a\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, check=True)
    (tmp_path / "src/x.py").write_text("b\n")
    monkeypatch.chdir(tmp_path)
    assert provenance.collect()["working tree"] == "dirty: 1 tracked file with uncommitted changes (src/x.py)"
