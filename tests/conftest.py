"""Shared fixtures: a throw-away copy of the workflow to run real Snakemake/DVC in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ROOT / "tests" / "params.tiny.yaml"
# What a workflow run needs from the repository (src/ because rules list code files as inputs).
WORKFLOW_FILES = ["workflow", "src", "dvc.yaml", "data/raw", "tests/params.tiny.yaml"]


def tool_env() -> dict:
    """The venv's snakemake/dvc/distillstudy first on PATH, as `make` sets it."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}"
                             f"\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


def make_workspace(dest: Path, params: dict | Path = TINY) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    if isinstance(params, Path):
        shutil.copy2(params, dest / "params.yaml")
    else:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def tiny_params() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "study")


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """The tiny study run once, end to end, exactly as the README says:
    `snakemake -c2 --configfile tests/params.tiny.yaml` beside the default params.yaml."""
    ws = make_workspace(tmp_path_factory.mktemp("e2e") / "study", ROOT / "params.yaml")
    run(["snakemake", "-c2", "--configfile", "tests/params.tiny.yaml"], ws)
    return ws
