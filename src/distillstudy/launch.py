"""Run a stage command in a warm worker: torch and the stages imported once, not once per job.

A `distillstudy distill` job of one epoch spent 0.8 s of its 0.81 s starting Python and
importing torch (measured here, quiet 2-core machine; 2.1 s a job inside the default study,
both cores busy): over 219 jobs, more than the training itself. The console script
(`entry`) therefore hands a stage command to a long-lived worker process (worker.py) that
has imported torch and every stage once and forks one child per command; the child runs
exactly what `distillstudy <stage> ...` would run here, in this command's working directory,
with its environment, umask and standard streams (passed as file descriptors), and this
process waits for it and exits with its exit status. Killing this process kills the child.

It is an optimisation that never changes a result:
  * the worker is keyed on the code it imported: the package's files (path, size, mtime),
    the interpreter, every sys.path entry and the environment variables torch reads when it
    is imported. Editing any of them gives a new key, so a new worker; the old one exits
    after `IDLE_SECONDS` without work. tests/test_launch.py checks that a job run through
    the worker writes the same bytes as one run in a fresh process;
  * when there is no worker yet, this command starts one in the background and runs
    in-process itself (no waiting), as it does whenever the worker cannot be reached;
  * it is off under SLURM (a job's processes end with the job), off where the platform
    lacks the Linux pieces it uses (file-descriptor passing, pidfd), and off with
    DISTILLSTUDY_WARM=0.

Cost of a warm job: this module imports only the standard library (~30 ms with Python's
start); the worker's fork and the child's own work follow.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from distillstudy.grid import STAGES

#: Subcommands run through the worker: every stage (validate is instant anyway).
WARM_COMMANDS = STAGES
#: Set to 0 (or off/false/no) to run every command in its own process.
SWITCH = "DISTILLSTUDY_WARM"
#: Folder of the workers' sockets, locks and logs (default: $XDG_RUNTIME_DIR or the temp dir).
FOLDER = "DISTILLSTUDY_WARM_DIR"
#: Seconds a worker waits for work before it exits (default IDLE_SECONDS).
IDLE = "DISTILLSTUDY_WARM_IDLE"
IDLE_SECONDS = 60.0
#: Longest socket path Linux accepts (sockaddr_un.sun_path, 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107
#: Read when torch is imported (thread pools, devices, hashing): part of the worker's key.
IMPORT_TIME_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                   "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "LD_LIBRARY_PATH", "LD_PRELOAD",
                   "MPLBACKEND", "MPLCONFIGDIR")
PACKAGE_DIR = Path(__file__).resolve().parent


def enabled(environ=os.environ) -> bool:
    if environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    if "SLURM_JOB_ID" in environ:  # the job's cgroup ends with the job: a worker would not outlive it
        return False
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")


def code_key(environ=os.environ) -> str:
    """16 hex digits naming what a worker imports: the package's files, the interpreter,
    sys.path and IMPORT_TIME_ENV. Any edit (a file's size or modification time) changes it."""
    digest = hashlib.sha256()
    digest.update(f"{sys.executable}\0{sys.version}\0{PACKAGE_DIR}\0".encode())
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), PACKAGE_DIR)}\0{stat.st_size}\0"
                          f"{stat.st_mtime_ns}\0".encode())
    for entry in sys.path:  # an installed or removed package changes its folder's mtime
        try:
            digest.update(f"{entry}\0{os.stat(entry or '.').st_mtime_ns}\0".encode())
        except OSError:
            digest.update(f"{entry}\0-\0".encode())
    for name in IMPORT_TIME_ENV:
        digest.update(f"{name}={environ.get(name)}\0".encode())
    return digest.hexdigest()[:16]


def folder(environ=os.environ) -> Path:
    """A folder only this user can enter: sockets in it cannot be reached by others."""
    base = environ.get(FOLDER) or environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"distillstudy-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    stat = path.stat()
    if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
        raise PermissionError(f"{path} must belong to this user and be closed to others (mode 700)")
    return path


def idle_seconds(environ=os.environ) -> float:
    return float(environ.get(IDLE, IDLE_SECONDS))


def start_worker(where: Path, key: str) -> None:
    """Start a worker in its own session (it outlives this process, never holds its streams)."""
    with open(where / f"{key}.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "distillstudy.worker", str(where), key, str(idle_seconds())],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                         start_new_session=True, close_fds=True)


def request(argv: list[str]) -> bytes:
    umask = os.umask(0)
    os.umask(umask)
    return json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}).encode()


def run(argv: list[str]) -> int | None:
    """The exit status of `argv` run by the warm worker, or None: run it here instead."""
    if not argv or argv[0] not in WARM_COMMANDS or not enabled() or {"-h", "--help"} & set(argv):
        return None
    try:
        where = folder()
        key = code_key()
    except OSError:
        return None
    path = str(where / f"{key}.sock")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None  # the kernel refuses longer socket paths: set DISTILLSTUDY_WARM_DIR shorter
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
    except OSError:  # no worker for this code yet (or it just exited): start one, run here
        conn.close()
        try:
            start_worker(where, key)
        except OSError:
            pass
        return None
    with conn:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            socket.send_fds(conn, [request(argv)], [0, 1, 2])
        except OSError:
            return None  # not handed over: nothing ran
        try:
            reply = conn.recv(64)
        except OSError:
            reply = b""
    if reply.isdigit() or reply[:1] == b"-" and reply[1:].isdigit():
        return int(reply)
    # The worker went away while the child ran (killed, out of memory): outputs are written
    # atomically, so running the command here from the start is safe.
    print("distillstudy: the warm worker ended without an exit status; running the command here",
          file=sys.stderr)
    return None
