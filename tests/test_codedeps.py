"""Code dependencies come from the real imports, once, for Snakemake and DVC alike.

workflow/codedeps.py computes each stage's files from the import graph (grimp). These
tests hold it against three independent readings: what a stage's process really
imports, what Snakemake's rules really list as inputs, and what dvc.yaml declares.
The end-to-end consequence (edit stats.py -> exactly evaluate and report re-run, under
`dvc status` and `snakemake -n`) is tested on the tiny study in test_dvc.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run

sys.path.insert(0, str(ROOT / "workflow"))
import codedeps  # noqa: E402

PACKAGE = ROOT / "src" / "distillstudy"
#: Modules that no stage runs: the `validate` subcommand's loader, `python -m`, and the
#: generic student path with its families (benchmarked; no params key selects them yet).
# params.py validates params.yaml before any job (the Snakefile, `distillstudy validate`): no
# stage's result depends on it.
# lm_params.py is params.py's language-model part.
NOT_A_STAGE = {"src/distillstudy/__main__.py", "src/distillstudy/params.py", "src/distillstudy/lm_params.py"}


def package_files() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def imported_at_run_time(stage: str) -> set[str]:
    """The package modules a `distillstudy <stage>` job has loaded once its stage is imported
    (the warm worker's module included: a job may run in it, launch.py)."""
    code = ("import sys, distillstudy.worker, distillstudy.cli, distillstudy.stages.{0}; "
            "print('\\n'.join(m for m in sys.modules if m == 'distillstudy' or m.startswith('distillstudy.')))")
    out = subprocess.run([sys.executable, "-c", code.format(stage)], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    return {codedeps.module_file(m) for m in out}


@pytest.mark.parametrize("stage", codedeps.STAGES)
def test_stage_code_is_what_the_stage_process_imports(stage):
    declared = {p for p in codedeps.stage_code(stage) if p.endswith(".py")}
    assert declared == imported_at_run_time(stage)


def test_every_module_is_code_of_some_stage():
    """A module no stage depends on would be edited without re-running anything."""
    used = set().union(*(codedeps.stage_code(s) for s in codedeps.STAGES))
    assert package_files() - used == NOT_A_STAGE


def test_report_depends_on_its_templates():
    assert "src/distillstudy/render/templates" in codedeps.stage_code("report")
    assert not any("templates" in p for p in codedeps.stage_code("evaluate"))


def test_only_the_cli_imports_inside_functions():
    """A function-level import would hide a dependency from a reader (and, there, a cycle)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py":  # one stage per subcommand: `evaluate` must not import torch
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("distillstudy"):
                        offenders.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert offenders == []


def test_dvc_yaml_blocks_are_current():
    """`make code-deps` rewrites them; a stale block would leave DVC deaf to an edit."""
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    blocks = codedeps.dvc_yaml_blocks(text)
    assert set(blocks) == set(codedeps.STAGES)
    for stage, files in blocks.items():
        assert files == list(codedeps.dvc_deps(stage)), stage
    assert codedeps.rewrite_dvc_yaml(text) == text


def test_rewrite_replaces_a_stale_block():
    stale = (f"stages:\n  evaluate:\n    deps:\n      {codedeps.BEGIN}\n      - src/distillstudy/old.py\n"
             f"      {codedeps.END}\n      - models/students\n")
    fresh = codedeps.rewrite_dvc_yaml(stale)
    assert "old.py" not in fresh and "      - models/students\n" in fresh
    assert codedeps.dvc_yaml_blocks(fresh)["evaluate"] == list(codedeps.stage_code("evaluate"))


def test_dependent_stages_of_a_low_module():
    assert codedeps.dependent_stages("src/distillstudy/analysis/stats.py") == ["evaluate", "report"]
    assert codedeps.dependent_stages("src/distillstudy/engine/models.py") == ["teacher", "transfer", "distill"]
    assert set(codedeps.dependent_stages("src/distillstudy/grid.py")) >= {"distill", "evaluate", "report"}


@pytest.mark.slow
def test_snakemake_rules_list_exactly_the_stage_code(finished: Path):
    """Snakemake's own account of every output's inputs (detailed summary of the finished
    tiny study): the package files among a rule's inputs are that stage's code."""
    out = run(["snakemake", "--configfile", "tests/params.tiny.yaml", "--detailed-summary"], finished).stdout
    header, *rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    col = {name: i for i, name in enumerate(header)}
    seen = {}
    for row in rows:
        inputs = {p for p in row[col["input-file(s)"]].split(",") if p.startswith("src/")}
        # A stage's rules are named after it: distill_lm, distill_replicate (one stage, one CLI subcommand).
        seen.setdefault(row[col["rule"]].split("_")[0], set()).add(frozenset(inputs))
    assert set(seen) == set(codedeps.STAGES)
    for rule, input_sets in seen.items():
        assert input_sets == {frozenset(codedeps.stage_code(rule))}, rule


def test_your_files_outside_data_raw_join_the_dvc_stages_that_read_them():
    params = {"prepare": {"datasets": [
        {"name": "a", "kind": "npz", "path": "data/raw/a.npz", "teacher": {"logits": "elsewhere/a_logits.npz"}},
        {"name": "b", "kind": "mnist1d", "teacher": {"factory": "zoo/nets.py:big", "weights": "zoo/big.pt"}},
        {"name": "c", "kind": "csv", "path": "tables/c.csv", "label": "y"}]}}
    assert codedeps.user_files("prepare", params) == ("elsewhere/a_logits.npz", "tables/c.csv")
    assert codedeps.user_files("teacher", params) == ("zoo/big.pt", "zoo/nets.py")
    assert codedeps.user_files("transfer", params) == ("zoo/big.pt", "zoo/nets.py")  # the designs rebuild it
    assert codedeps.user_files("distill", params) == ()
    params["distill"] = {"students": [{"family": "mlp", "sizes": [4]}, {"family": "zoo/students.py:tiny", "sizes": [2]}],
                         "alpha": 0.9}
    assert codedeps.user_files("distill", params) == ("zoo/students.py",)
