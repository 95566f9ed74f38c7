"""The warm worker (launch.py, worker.py): a stage command run through it writes exactly
what a fresh process writes, passes its exit status and messages through, dies with its
client, and a worker never serves code other than the code it imported."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from distillstudy import cli, grid, launch

BIN = Path(sys.executable).parent


def env_for(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           launch.FOLDER: str(short(tmp_path)), launch.IDLE: "20", **extra}
    env.pop(launch.SWITCH, None)
    return env


def short(tmp_path: Path) -> Path:
    """This test's worker folder: a socket path must stay under 108 bytes, and pytest's
    temp paths under xdist are long; a link in /tmp points at it."""
    link = tmp_path / "w"
    if not link.exists():
        target = Path(tempfile.mkdtemp(prefix="dsw"))
        link.symlink_to(target)
    return Path(os.readlink(link))


@pytest.fixture(autouse=True)
def remove_the_worker_folder(tmp_path):
    yield
    link = tmp_path / "w"
    if link.is_symlink():
        shutil.rmtree(os.readlink(link), ignore_errors=True)


def distillstudy(args, cwd, env, **kw):
    return subprocess.run(["distillstudy", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          **kw)


def worker_log(tmp_path: Path) -> str:
    logs = list(short(tmp_path).glob("distillstudy-*/*.log"))
    return "".join(p.read_text() for p in logs)


def wait_for(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def sockets(tmp_path: Path) -> list[Path]:
    return list(short(tmp_path).glob("distillstudy-*/*.sock"))


@pytest.fixture(scope="module")
def sine(tmp_path_factory):
    """The sine dataset and its (convex, instant) teacher, made by the CLI in fresh processes."""
    root = tmp_path_factory.mktemp("warm")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", launch.SWITCH: "0"}
    steps = [["prepare", "--name", "sine", "--kind", "sine", "--seed", 3, "--val-fraction", 0.2,
              "--test-fraction", 0.25, "--n-train", 200, "--n-test", 300, "--out-data", "d.npz",
              "--out-meta", "d.json"],
             ["teacher", "--data", "d.npz", "--meta", "d.json", "--seed", 3, "--max-epochs", 5, "--patience", 2,
              "--batch-size", 64, "--lr", 0.01, "--weight-decay", 0, "--cnn-channels", 4, "--mlp-width", 8,
              "--dropout", 0, "--out-model", "t.pt", "--out-logits", "t.npz", "--out-meta", "t.json"]]
    for step in steps:
        proc = distillstudy(step, root, env)
        assert proc.returncode == 0, proc.stderr
    return root


def distill_args(out: str, epochs: int = 2, cell: str = "kd_T4_mix0.9") -> list:
    return ["distill", "--data", "d.npz", "--teacher-logits", "t.npz", "--dataset", "sine", "--size", 8,
            "--cell", cell, "--seeds", 2, "--seed", 3, "--epochs", epochs, "--batch-size", 32, "--lr", 0.01,
            "--weight-decay", 0, "--out-model", f"{out}.pt", "--out-logits", f"{out}.logits.npz"]


def warm_worker(tmp_path: Path, cwd: Path, env: dict) -> None:
    """Start this test's worker (the first job starts it and runs by itself) and wait for it."""
    proc = distillstudy(distill_args("first"), cwd, env)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: sockets(tmp_path))


def test_a_job_in_the_worker_writes_the_bytes_of_a_fresh_process(sine, tmp_path):
    env = env_for(tmp_path)
    cold = distillstudy(distill_args("cold"), sine, {**env, launch.SWITCH: "0"})
    assert cold.returncode == 0, cold.stderr
    warm_worker(tmp_path, sine, env)
    warm = distillstudy(distill_args("warm"), sine, env)
    assert warm.returncode == 0, warm.stderr
    assert "--out-model warm.pt" in worker_log(tmp_path)  # it did run in the worker
    for suffix in (".pt", ".logits.npz"):
        assert (sine / f"cold{suffix}").read_bytes() == (sine / f"warm{suffix}").read_bytes()
    assert warm.stdout.replace("warm", "cold").split(",")[0] == cold.stdout.split(",")[0]


def test_errors_and_exit_status_pass_through(sine, tmp_path):
    env = env_for(tmp_path)
    warm_worker(tmp_path, sine, env)
    bad = distill_args("bad", cell="kd_T4_mixture")
    cold = distillstudy(bad, sine, {**env, launch.SWITCH: "0"})
    warm = distillstudy(bad, sine, env)
    assert "--cell kd_T4_mixture" in worker_log(tmp_path)
    assert (warm.returncode, warm.stderr, warm.stdout) == (cold.returncode, cold.stderr, cold.stdout)
    assert warm.returncode == 2 and "kd_T4_mixture" in warm.stderr
    missing = distillstudy(["distill", "--data", "nowhere.npz"], sine, env)  # argparse: status 2, usage
    assert missing.returncode == 2 and "required" in missing.stderr


def test_a_killed_client_takes_its_job_with_it(sine, tmp_path):
    env = env_for(tmp_path)
    warm_worker(tmp_path, sine, env)
    client = subprocess.Popen(["distillstudy", *map(str, distill_args("long", epochs=1_000_000))], cwd=sine,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "--out-model long.pt" in worker_log(tmp_path))
    line = next(x for x in worker_log(tmp_path).splitlines() if "--out-model long.pt" in x)
    child = int(line.split()[1].rstrip(":"))
    os.kill(child, 0)  # running
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=30)

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False
    wait_for(gone, 30)
    assert not (sine / "long.pt").exists()


def test_the_worker_exits_when_idle(sine, tmp_path):
    env = env_for(tmp_path, **{launch.IDLE: "1"})
    warm_worker(tmp_path, sine, env)
    wait_for(lambda: not sockets(tmp_path), 30)
    assert "exiting" in worker_log(tmp_path)


def test_the_key_follows_the_code_and_the_import_time_environment(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "mod.py"
    module.write_text("x = 1\n")
    monkeypatch.setattr(launch, "PACKAGE_DIR", package)
    key = launch.code_key({})
    assert launch.code_key({}) == key
    os.utime(module, ns=(time.time_ns(), module.stat().st_mtime_ns + 1))  # edited, same size
    edited = launch.code_key({})
    assert edited != key
    (package / "new.py").write_text("")
    assert launch.code_key({}) != edited
    assert launch.code_key({"OMP_NUM_THREADS": "2"}) != launch.code_key({})


def test_where_the_worker_is_off(monkeypatch, tmp_path):
    assert launch.enabled({}) == sys.platform.startswith("linux")
    assert not launch.enabled({"SLURM_JOB_ID": "7"})
    assert not launch.enabled({launch.SWITCH: "0"})
    assert launch.run(["validate", "params.yaml"]) is None  # not a stage: always here
    assert launch.run(["distill", "--help"]) is None
    # A socket path the kernel would refuse: the command runs here, no worker is started.
    deep = tmp_path / ("d" * 100)
    monkeypatch.setenv(launch.FOLDER, str(deep))
    monkeypatch.delenv(launch.SWITCH, raising=False)
    assert launch.run(["distill", "--data", "x.npz"]) is None
    assert not list(deep.glob("*/*.log"))


def test_the_stage_commands_are_the_vocabulary_s():
    assert tuple(cli.COMMANDS) == ("validate", *grid.STAGES)
    assert launch.WARM_COMMANDS == grid.STAGES
