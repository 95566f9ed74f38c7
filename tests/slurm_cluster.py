"""A throw-away one-node SLURM cluster on 127.0.0.1, for tests/test_slurm.py.

    ensure_slurm()                      # apt-get install the Debian packages if missing
    with SlurmCluster(tmp_dir) as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env())   # SLURM_CONF points at it

Everything lives in one temporary folder (slurm.conf, state, spool, logs, pid files,
its own munge key and socket); nothing under /etc or /run is written, so a system
SLURM or munge, if any, is left alone. The three daemons run in the foreground as
children of this process (munged as the `munge` user, slurmctld and slurmd as root)
and `stop()` ends exactly those, by the pids it started (and that they wrote to their
pid files), never by name.

`SLURM_CONF` is only ever set in the environment handed to the commands that use the
cluster (`env()`), never in os.environ and never in /etc, and stop() removes the folder:
with slurm-client installed, any Snakemake call that finds a slurm.conf whose controller
is down spends ~9 s in `scontrol show config` (the SLURM executor plugin asks for
MinJobAge when Snakemake imports it), so the rest of the test session must not see it.

Inside a job, snakemake-executor-plugin-slurm-jobstep runs the rule through `srun`
with every SLURM_* variable but the job's identity removed, SLURM_CONF included (a real
cluster has /etc/slurm/slurm.conf or configless DNS records). So `env()` also puts a
folder first on PATH whose `srun` sets SLURM_CONF again and execs /usr/bin/srun.

Measured facts (Debian 12, SLURM 22.05.8) behind the settings are in tests/test_slurm.py.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from debian import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd", "sbatch": "/usr/bin/sbatch",
            "munged": "/usr/sbin/munged", "mungekey": "/usr/sbin/mungekey"}


def missing_binaries() -> list[str]:
    return [name for name, path in BINARIES.items() if not Path(path).exists()]


def ensure_slurm(timeout: int = 900) -> None:
    """Install Debian's SLURM and munge (apt-get update, then install without
    recommends: 8 packages, ~3.5 MB) unless they are already there. Raises
    RuntimeError saying why when that is not possible (not root, no apt, no network)."""
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"SLURM is not installed ({', '.join(missing_binaries())} missing) and "
                           "installing it needs root")
    apt_install(PACKAGES, timeout)
    if missing_binaries():
        raise RuntimeError(f"apt-get installed {PACKAGES} but {missing_binaries()} are still missing")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    """munged + slurmctld + slurmd, one node (`NodeName=dsnode`, NodeAddr=127.0.0.1) with
    all CPUs and 90% of the memory, one default partition `test`. `gpus=N` declares N
    fake GPUs (gres on /dev/null: jobs get CUDA_VISIBLE_DEVICES, no device), so that
    `--gpus` requests can be scheduled. Needs root (slurmd runs jobs as their
    submitter; munged must run as the `munge` user)."""

    NODE = "dsnode"
    PARTITION = "test"

    def __init__(self, base: str | os.PathLike | None = None, *, cpus: int | None = None,
                 real_memory_mb: int | None = None, gpus: int = 0, start_timeout: float = 60.0):
        # Not under pytest's tmp_path: that is mode 0700 and munged runs as another user.
        self.root = Path(tempfile.mkdtemp(prefix="slurm-test-", dir=base))
        self.root.chmod(0o755)
        self.cpus = cpus or os.cpu_count() or 1
        self.real_memory_mb = real_memory_mb or int(_mem_total_mb() * 0.9)
        self.gpus = gpus
        self.start_timeout = start_timeout
        self.conf = self.root / "slurm.conf"
        self.bin = self.root / "bin"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket.2"
        self.procs: dict[str, subprocess.Popen] = {}
        self.pid_files = {"munged": self.munge_dir / "munged.pid", "slurmctld": self.root / "slurmctld.pid",
                          "slurmd": self.root / "slurmd.pid"}
        self.logs = {"munged": self.munge_dir / "munged.log", "slurmctld": self.root / "slurmctld.log",
                     "slurmd": self.root / "slurmd.log"}  # plus <name>.stderr beside slurm.conf

    # ------------------------------------------------------------------ public

    def env(self, base: dict | None = None) -> dict:
        """An environment whose SLURM commands (sbatch, squeue, scontrol...) use this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise SlurmError("starting a SLURM cluster needs root")
        if missing_binaries():
            raise SlurmError(f"SLURM is not installed: {missing_binaries()} missing")
        try:
            self._start_munged()
            self._write_conf()
            self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(self.conf)])
            self._wait(lambda: "is UP" in self._cmd(["scontrol", "ping"]), "slurmctld to answer `scontrol ping`")
            self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-f", str(self.conf), "-N", self.NODE])
            self._wait(lambda: self._cmd(["sinfo", "-h", "-n", self.NODE, "-o", "%T"]).strip() == "idle",
                       f"node {self.NODE} to become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0, remove: bool = True) -> None:
        """SIGTERM the daemons this object started (slurmd, slurmctld, munged, in that
        order), by pid; SIGKILL whichever is still alive after `timeout` seconds. Then
        remove the cluster's folder (its slurm.conf with it) unless `remove` is False."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tails(self, chars: int = 3000) -> str:
        out = []
        for name, log in self.logs.items():
            for path in (log, self.root / f"{name}.stderr"):
                if path.exists() and path.stat().st_size:
                    out.append(f"--- {name} ({path}):\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ details

    def _start_munged(self) -> None:
        # munged wants its socket folder owned by its own user and searchable by all.
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        subprocess.run(["/usr/sbin/mungekey", "--create", f"--keyfile={key}"], check=True,
                       capture_output=True, text=True)
        for path in (self.munge_dir, key):
            shutil.chown(path, "munge", "munge")
        key.chmod(0o600)
        self._spawn("munged", ["/usr/sbin/munged", "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.pid_files['munged']}",
                               f"--log-file={self.logs['munged']}",
                               f"--seed-file={self.munge_dir / 'munged.seed'}"],
                    user="munge", group="munge")
        self._wait(self.munge_socket.exists, "munged to open its socket")

    def _write_conf(self) -> None:
        self.bin.mkdir()
        srun = self.bin / "srun"
        srun.write_text("#!/bin/sh\n# The job step plugin drops SLURM_CONF before it calls srun.\n"
                        f"SLURM_CONF={self.conf} exec /usr/bin/srun \"$@\"\n")
        srun.chmod(0o755)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        host = socket.gethostname().split(".")[0]
        user = getpass.getuser()
        settings = {
            "ClusterName": "distillstudy-test",
            "SlurmctldHost": f"{host}(127.0.0.1)",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "SlurmUser": user,
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.pid_files["slurmctld"],
            "SlurmdPidFile": self.pid_files["slurmd"],
            "SlurmctldLogFile": self.logs["slurmctld"],
            "SlurmdLogFile": self.logs["slurmd"],
            # No systemd, no cgroups, no accounting database on a test machine.
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "SwitchType": "switch/none",
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU_Memory",
            # Finished jobs stay visible to squeue (and scontrol) for 30 minutes: the
            # executor plugin's squeue status check must see them finish (it wants at
            # least 120 s), and the tests read every job's request afterwards.
            "MinJobAge": 1800,
            "ReturnToService": 2,
            "SchedulerParameters": "sched_interval=1",
            # The node is what the config says, whatever slurmd detects.
            "SlurmdParameters": "config_overrides",
        }
        if self.gpus:
            settings["GresTypes"] = "gpu"
            (self.root / "gres.conf").write_text(f"NodeName={self.NODE} Name=gpu File=/dev/null Count={self.gpus}\n")
        lines = [f"{k}={v}" for k, v in settings.items()]
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines.append(f"NodeName={self.NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                     f"RealMemory={self.real_memory_mb}{gres} State=UNKNOWN")
        lines.append(f"PartitionName={self.PARTITION} Nodes={self.NODE} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.root / f"{name}.stderr", "wb")
        try:
            self.procs[name] = subprocess.Popen(cmd, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        finally:
            log.close()

    def _cmd(self, cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=15)
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited with {proc.returncode} while waiting for {what}\n"
                                     f"{self._stderr(name)}\n{self.log_tails()}")
            if time.monotonic() > deadline:
                raise SlurmError(f"timed out after {self.start_timeout:.0f} s waiting for {what}\n"
                                 f"{self.log_tails()}")
            time.sleep(0.2)

    def _stderr(self, name: str) -> str:
        path = self.root / f"{name}.stderr"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
