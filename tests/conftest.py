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
#: Tests kept on ONE xdist worker (`make test`: --dist loadgroup), by node-id prefix. pytest
#: builds a module-scoped fixture once per worker that runs one of its tests, so a module
#: split between the two workers builds it twice (measured, AMD EPYC: the front-door attempts
#: 2 x 30 s of CPU, test_rules' `ran` 2 x 28 s, test_remote's push + pull 24 + 11 s); and one
#: SLURM test cluster serves the run. pytest-xdist's own `xdist_group` marker does nothing
#: under pytest 9 (xdist 3.8.0 renames `item._nodeid`, which pytest 9 no longer reads), so
#: the scheduler below groups by these prefixes.
ONE_WORKER = {
    "tests/test_slurm.py::": "slurm",
    "tests/test_reliability.py::test_bad_params_stop_every_front_door[": "front_doors",
    "tests/test_rules.py::": "rules",
    "tests/test_remote.py::": "remote",
    "tests/test_launch.py::": "launch",
    "tests/test_report_browser.py::": "chromium",
}


def one_worker_group(nodeid: str) -> str | None:
    return next((group for prefix, group in ONE_WORKER.items() if nodeid.startswith(prefix)), None)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup: xdist's load scheduling (one test at a time, in the order below),
    except that the tests of a ONE_WORKER group form one unit of work."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return one_worker_group(nodeid) or nodeid

    config.option.loadscopereorder = False  # keep the order of pytest_collection_modifyitems
    return OneWorkerGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """Order for two xdist workers (the scheduler hands out tests in this order; chosen from
    a per-test timeline of both workers, AMD EPYC, 2026-12-07): one test of the tiny study
    first, so that one worker trains it while the other runs the unit tests; a third of the
    way through the unit tests the SLURM group (150 s, mostly waiting on the cluster's status
    checks, so the other worker has the CPU), two thirds of the way one test of the DVC
    recording (`dvc_study`, a `dvc repro`), so that it is recorded while the other worker
    keeps testing; the study's other tests last, those of the DVC recording first."""

    def uses(item, names) -> bool:
        return bool(set(names) & set(getattr(item, "fixturenames", ())))

    study = [i for i in items if uses(i, STUDY_FIXTURES) and one_worker_group(i.nodeid) is None]
    if not study:
        return
    first = next((i for i in study if not uses(i, {"dvc_study"})), study[0])
    recording = next((i for i in study if i is not first and uses(i, {"dvc_study"})), None)
    slurm = [i for i in items if one_worker_group(i.nodeid) == "slurm"]
    groups = {one_worker_group(i.nodeid) for i in items if uses(i, STUDY_FIXTURES)} - {None, "slurm"}
    rest = [i for i in items if i is not first and i is not recording
            and (i in study or one_worker_group(i.nodeid) in groups)]
    rest.sort(key=lambda i: not uses(i, {"dvc_study"}))  # stable
    placed = {id(i) for i in [first, recording, *slurm, *rest]}
    others = [i for i in items if id(i) not in placed]
    if recording is not None:
        others.insert(2 * len(others) // 3, recording)
    third = len(others) // 3
    items[:] = [first, *others[:third], *slurm, *others[third:], *rest]
