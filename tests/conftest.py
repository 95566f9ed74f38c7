"""Shared fixtures: throw-away copies of the workflow to run real Snakemake/DVC in.

The tiny study (tests/params.tiny.yaml) is trained ONCE per test run, by Snakemake
(`finished`), and recorded ONCE by DVC (`dvc_study`, no retraining), even with several
pytest-xdist workers: the first worker that needs one builds it under a file lock in the
folder the workers share, the others wait for it and then read the same folder
(`built_once`). Tests only read those two folders; a test that changes anything works on
`copy_workspace(...)` of one (copy2 keeps the mtimes, so Snakemake and DVC see a finished
study there too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ROOT / "tests" / "params.tiny.yaml"
# What a workflow run needs from the repository (src/ because rules list code files as inputs).
WORKFLOW_FILES = ["Snakefile", "profiles", "workflow", "src", "dvc.yaml", "data/raw", "tests/params.tiny.yaml"]
# Folders a study writes (DVC outputs) and the stages of dvc.yaml, in order.
OUTPUT_DIRS = ["data", "models", "reports"]
STAGES = ("prepare", "teacher", "transfer", "distill", "evaluate", "walkthrough", "report")


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


def copy(src: Path, target: Path) -> None:
    """A file or folder, mtimes kept (copy2), merged into an existing folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    else:
        shutil.copy2(src, target)


def make_workspace(dest: Path, params: dict | Path = TINY) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        copy(ROOT / name, dest / name)
    if isinstance(params, Path):
        shutil.copy2(params, dest / "params.yaml")
    else:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def copy_workspace(src: Path, dest: Path) -> Path:
    """A finished workspace (git and DVC state, .snakemake metadata included) copied
    with its mtimes: far cheaper than re-running the study, and free to change."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def tiny_params() -> dict:
    return yaml.safe_load(TINY.read_text())


def git_identity(path: Path) -> None:
    run(["git", "config", "user.email", "test@example.com"], path)
    run(["git", "config", "user.name", "test"], path)


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "study")


def built_once(tmp_path_factory, name: str, build) -> dict:
    """`build(folder)` run once per test run, whatever the number of xdist workers: the
    first caller builds into <shared>/<name> under a file lock and stores what `build`
    returns (JSON); later callers, in any worker, wait for the lock and get the same.
    A build that fails stores nothing: the next caller tries again (and fails alike)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common folder
    record = shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not record.exists():
            folder = shared / name
            shutil.rmtree(folder, ignore_errors=True)  # a failed earlier attempt
            folder.mkdir()
            record.write_text(json.dumps(build(folder)))
        return json.loads(record.read_text())


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """The tiny study run once, end to end, exactly as the README says:
    `snakemake -c2 --configfile tests/params.tiny.yaml` beside the default params.yaml.
    Read-only: copy it (copy_workspace) to change anything."""

    def build(folder: Path) -> dict:
        ws = make_workspace(folder / "study", ROOT / "params.yaml")
        run(["snakemake", "-c2", "--configfile", "tests/params.tiny.yaml"], ws)
        return {"ws": str(ws)}

    return Path(built_once(tmp_path_factory, "finished", build)["ws"])


@pytest.fixture(scope="session")
def dvc_study(finished, tmp_path_factory) -> dict:
    """The session's tiny study as a git + DVC repository, recorded by `dvc repro`:
    the run's code and params (tests/params.tiny.yaml as params.yaml, its effective
    params) committed, its outputs and Snakemake's records of them (.snakemake/, which
    git ignores) copied in, mtimes kept; then `dvc repro` runs every stage, each stage's
    Snakemake finding nothing to train -- what a user does after running the study with
    Snakemake directly in the checkout (e.g. on a cluster). dvc.lock is committed. A
    second `dvc repro` is started while the first one runs (`make study` twice): its
    exit status, output and duration are kept.

    Without .snakemake/ a smaller grid leaves stale results: `dvc exp run -S
    'distill.objectives.kd.temperature=[1]'` runs the evaluate stage, but its `snakemake
    --until evaluate` has no record of evaluate's former inputs and, by mtimes, nothing to
    do (measured: results.csv kept its T = 4 rows; see tests/test_dvc.py).

    Read-only: tests/test_dvc.py and tests/test_remote.py work on copies."""
    built = built_once(tmp_path_factory, "dvc_study", lambda folder: _record_with_dvc(finished, folder / "study"))
    return {**built, "repo": Path(built["repo"])}


def _record_with_dvc(finished: Path, repo: Path) -> dict:
    for name in WORKFLOW_FILES:
        copy(finished / name, repo / name)
    shutil.copy2(finished / "tests/params.tiny.yaml", repo / "params.yaml")  # what the run used
    shutil.copy2(ROOT / ".gitignore", repo / ".gitignore")
    run(["git", "init", "-q"], repo)
    git_identity(repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny study"], repo)
    for name in [*OUTPUT_DIRS, "logs", ".snakemake"]:
        copy(finished / name, repo / name)

    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read():
        for line in first.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("Running stage" in line for line in lines) and first.poll() is None:
        assert time.monotonic() < deadline, "dvc repro started no stage in 120 s"
        time.sleep(0.05)
    started = time.monotonic()
    second = run(["dvc", "repro"], repo, check=False, timeout=60)
    concurrent = {"returncode": second.returncode, "output": second.stdout + second.stderr, "first_pid": first.pid,
                  "seconds": time.monotonic() - started, "first_still_running": first.poll() is None}
    first.wait(timeout=900)
    reader.join(timeout=60)
    out = "".join(lines)
    assert first.returncode == 0, out[-4000:]
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny study results"], repo)
    return {"repo": str(repo), "repro": out, "concurrent": concurrent}


def job_stats(text: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (a dry run's plan) -> {rule: count}; {} when
    there is nothing to be done."""
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return {}
    block = text.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        stats[parts[0]] = int(parts[1])
    return stats


#: The session fixtures that run the tiny study (once per test run: `built_once`).
STUDY_FIXTURES = {"finished", "dvc_study"}
#: Session fixtures that must not run in two workers at once (one SLURM cluster, one
#: apt-get): their tests go to one xdist worker (`make test`: --dist loadgroup).
ONE_WORKER = {"cluster": "slurm", "chromium": "chromium"}


def pytest_collection_modifyitems(config, items):
    """Order for two xdist workers (`load` hands out tests in this order): one test of the
    tiny study first, so that one worker trains it while the other runs the unit tests;
    the study's other tests last, those of the DVC recording first among them (its
    `dvc repro` then runs beside the other tests of the study)."""
    for item in items:
        for fixture, group in ONE_WORKER.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))

    def uses(item, names) -> bool:
        return bool(set(names) & set(getattr(item, "fixturenames", ())))

    study = [i for i in items if uses(i, STUDY_FIXTURES) and not uses(i, ONE_WORKER)]
    if not study:
        return
    first = next((i for i in study if not uses(i, {"dvc_study"})), study[0])
    rest = [i for i in study if i is not first]
    rest.sort(key=lambda i: not uses(i, {"dvc_study"}))  # stable: DVC's first
    ordered = [first, *[i for i in items if i is not first and i not in rest], *rest]
    items[:] = ordered
