"""Installing the Debian packages a test needs (Chromium, SLURM) when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(packages: list[str], timeout: int = 900) -> None:
    """`apt-get update`, then `apt-get install -y --no-install-recommends <packages>`,
    non-interactive. Raises RuntimeError with apt's output when that fails (not root,
    no network, no apt)."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError(f"apt-get is not available to install {', '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Two test workers may install at once (Chromium on one, SLURM on the other): wait for
    # the other's dpkg lock instead of failing at once.
    wait = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in ([apt, *wait, "update"], [apt, *wait, "install", "-y", "--no-install-recommends", *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")
