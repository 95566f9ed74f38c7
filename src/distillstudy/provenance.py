"""Where the numbers came from: code version, package versions, machine, date.

`collect()` is the record the report prints (git commit and dirty flag, date,
CPU model and thread counts, CUDA device, package versions); `read_benchmarks()`
turns Snakemake `benchmark:` files into wall time per rule.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "pandas", "seaborn", "matplotlib", "jinja2", "snakemake",
            "dvc", "mnist1d")
DIRTY_PATHS_SHOWN = 5


def _git(*args: str) -> str | None:
    """git's output without its trailing newline (only: porcelain lines start with a
    significant space, " M path", which a full strip() would eat with the path's first letter)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip("\n")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def working_tree_state(status: str | None) -> str:
    """'clean', or 'dirty' with the first changed tracked paths (from `git status --porcelain`)."""
    if status is None:
        return "unknown"
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    if not paths:
        return "clean"
    shown = ", ".join(paths[:DIRTY_PATHS_SHOWN]) + (f" and {len(paths) - DIRTY_PATHS_SHOWN} more"
                                                     if len(paths) > DIRTY_PATHS_SHOWN else "")
    return f"dirty: {len(paths)} tracked file{'s' if len(paths) > 1 else ''} with uncommitted changes ({shown})"


def usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def collect() -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    record = {
        "git commit": commit or "unknown (not a git checkout)",
        "working tree": working_tree_state(status),
        "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs ({usable_cpus()} usable by this process), "
                   f"{platform.system()} {platform.release()}",
        "training threads per job": "1 (torch.set_num_threads; deterministic algorithms on)",
    }
    try:
        import torch

        record["cuda device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    except ImportError:
        record["cuda device"] = "unknown"
    record.update({f"version: {k}": v for k, v in package_versions().items()})
    return record


def read_benchmarks(paths) -> "pandas.DataFrame":
    """Snakemake `benchmark:` files -> wall seconds summed per rule (the folder after
    logs/benchmarks/ names the rule), plus the job count."""
    import pandas as pd

    rows = []
    for path in paths:
        parts = Path(path).parts
        rule = parts[parts.index("benchmarks") + 1] if "benchmarks" in parts else Path(path).stem
        frame = pd.read_csv(path, sep="\t")
        rows.append({"rule": rule, "wall_s": float(frame["s"].iloc[-1])})
    if not rows:
        return pd.DataFrame(columns=["rule", "wall_s", "jobs"])
    table = pd.DataFrame(rows).groupby("rule", sort=False)["wall_s"].agg(["sum", "count"])
    return table.reset_index().rename(columns={"sum": "wall_s", "count": "jobs"})
