"""The warm worker (see launch.py): imports torch and every stage once, then forks one
child per stage command it receives on its socket and reports the child's exit status.

    python -m distillstudy.worker FOLDER KEY IDLE_SECONDS     (started by launch.start_worker)

One worker per code key (launch.code_key): an exclusive lock on FOLDER/KEY.lock makes a
second one exit at once, so concurrent jobs that all found no worker start only one. The
socket FOLDER/KEY.sock is bound only after the imports, so jobs that arrive meanwhile run
in their own processes instead of queueing. Each request is one message, JSON {argv, cwd,
env, umask} with the client's stdin, stdout and stderr attached; the reply is the exit
status as decimal text. A client that goes away (killed by Snakemake, Ctrl-C) has its
child's process group killed; a child whose worker dies is killed by the kernel
(PR_SET_PDEATHSIG). The worker exits after IDLE_SECONDS with no request and no child.

The parent never runs torch code: fork happens before any thread pool or CUDA context
exists, and each child sets its own threads and device (engine/runtime.configure), so a
child computes exactly what a fresh process computes.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback

from distillstudy import cli
from distillstudy.grid import STAGES

PR_SET_PDEATHSIG = 1
#: What every child would import: loaded once, after the lock is won (a worker that loses
#: it exits having imported only the standard library and cli). runtime first: it imports
#: torch with the garbage collector off.
PRELOAD = ("distillstudy.engine.runtime", *(f"distillstudy.stages.{stage}" for stage in STAGES),
           # What a process's first vmap (engine/stacked.py) imports: ~0.2 s per job otherwise.
           "sympy", "torch.fx.experimental.symbolic_shapes",
           # What a process's first torch.optim optimizer imports (its dynamo guard): 0.85 s
           # per job otherwise (AMD EPYC, after the two above), paid by every job of the
           # standard engine and of the language models (engine/recipe.make_optimizer).
           "torch._dynamo")


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the worker died before the call above
        os._exit(1)


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the command's process and run it as `distillstudy` would."""
    os.setpgid(0, 0)  # its own process group, so a vanished client's job can be killed whole
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    # Fresh text streams on the passed descriptors, buffered as Python buffers them at start.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1), write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                  errors="backslashreplace")
    sys.argv = ["distillstudy", *request["argv"]]
    gc.enable()
    try:
        code = cli.main(request["argv"])
    except SystemExit as exc:  # argparse's errors, sys.exit in a stage
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (as the interpreter would: traceback, status 1)
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    return int(code or 0)


class Worker:
    def __init__(self, listener: socket.socket, idle: float):
        self.listener, self.idle = listener, idle
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.jobs: dict[int, tuple[socket.socket, int]] = {}  # pid -> (client connection, pidfd)
        self.last_activity = time.monotonic()

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 22, 3)
            request = json.loads(message)
        except (OSError, ValueError):
            conn.close()
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                _die_with_parent(parent)
                self.selector.close()
                self.listener.close()
                conn.close()
                for other, pidfd in self.jobs.values():
                    other.close()
                    os.close(pidfd)
                code = _run_child(request, fds)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            os._exit(code & 0xFF if code >= 0 else 1)
        for fd in fds:
            os.close(fd)
        print(f"job {pid}: distillstudy {' '.join(request['argv'])} (in {request['cwd']})", flush=True)
        pidfd = os.pidfd_open(pid)
        self.jobs[pid] = (conn, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exited", pid))
        self.selector.register(conn, selectors.EVENT_READ, ("client", pid))

    def finish(self, pid: int, status: int | None) -> None:
        conn, pidfd = self.jobs.pop(pid)
        self.selector.unregister(pidfd)
        self.selector.unregister(conn)
        os.close(pidfd)
        if status is not None:
            code = os.waitstatus_to_exitcode(status)
            print(f"job {pid}: exit status {code}", flush=True)
            try:
                conn.send(str(code if code >= 0 else 128 - code).encode())
            except OSError:
                pass
        conn.close()
        self.last_activity = time.monotonic()

    def client_gone(self, pid: int) -> None:
        """The client closed its end while its child runs: nobody wants the result."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet its own group leader (setpgid is its first act)
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.finish(pid, None)

    def serve(self) -> None:
        while True:
            events = self.selector.select(timeout=1.0)
            for selector_key, _ in events:
                what, pid = selector_key.data
                if what == "accept":
                    self.accept()
                elif what == "exited" and pid in self.jobs:
                    _, status = os.waitpid(pid, 0)
                    self.finish(pid, status)
                elif what == "client" and pid in self.jobs:
                    self.client_gone(pid)
            if not self.jobs and time.monotonic() - self.last_activity > self.idle:
                return


def main(folder: str, key: str, idle: float) -> int:
    lock = open(os.path.join(folder, f"{key}.lock"), "w")  # noqa: SIM115  (held for the worker's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another worker serves this key
    for module in PRELOAD:
        importlib.import_module(module)
    path = os.path.join(folder, f"{key}.sock")
    if os.path.exists(path):
        os.unlink(path)  # left by a worker that was killed: we hold the lock, it is not in use
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    gc.freeze()  # the imported modules live as long as the worker: keep them out of collections
    print(f"worker {os.getpid()}: serving {path}", flush=True)
    try:
        Worker(listener, idle).serve()
    finally:
        os.unlink(path)
        listener.close()
    print(f"worker {os.getpid()}: idle for {idle:g} s, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
