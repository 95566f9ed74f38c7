"""The package's shape: layers kept by import-linter (pyproject.toml), modules one sitting long."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import BIN, ROOT

MAX_LINES = 400


def lint_imports(source: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with pyproject.toml's contracts, on the package found under `source`."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run([str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_are_kept():
    proc = lint_imports(ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The checker can fail: analysis importing a stage is reported, naming both modules."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    stats = tmp_path / "src/distillstudy/analysis/stats.py"
    stats.write_text(stats.read_text() + "\nfrom distillstudy.stages import evaluate  # noqa\n")
    proc = lint_imports(tmp_path / "src")
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "distillstudy.analysis.stats -> distillstudy.stages.evaluate" in proc.stdout


def test_modules_read_in_one_sitting():
    long = {p.relative_to(ROOT).as_posix(): n for p in (ROOT / "src/distillstudy").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_independence_contract_lists_every_stage():
    """pyproject.toml names the stages one by one (stages/transfer_sets.py is the transfer
    stage's own helper, stages/distill_standard.py the distill stage's standard engine): a
    stage added to grid.STAGES must be added there too."""
    import tomllib

    from distillstudy.grid import STAGES

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = next(c for c in contracts if c["type"] == "independence")
    assert independent["modules"] == [f"distillstudy.stages.{s}" for s in STAGES]
    on_disk = {p.stem for p in (ROOT / "src/distillstudy/stages").glob("*.py")} - {"__init__"}
    assert on_disk - set(STAGES) == {"transfer_sets", "distill_standard", "teacher_lm", "distill_lm", "evaluate_lm"}
