"""Deterministic torch settings, applied once at the start of every training stage.

Same seed + same thread count -> bit-identical results on the same machine;
1 vs 2 threads change the bits (different summation order), so the thread
count is fixed, recorded in provenance, and jobs run in parallel instead.
"""

from __future__ import annotations

import gc
import os
import sys


def _import_torch():
    """Import torch with the cyclic garbage collector off, then freeze what exists.

    `import torch` creates ~170,000 objects that live until the process ends. With
    the collector on, full collections run during the import and after it (during
    the remaining imports, and at exit), and each one traverses all of them (~75 ms
    each on the reference machine). Measured, one `distillstudy distill` job of one
    epoch (2-core machine, loaded, median of 12): 1.78 s before any freeze, 1.42 s with
    the freeze in configure() alone, 1.22 s with this import. gc.freeze() moves every
    object alive now out of the collector's sight: these are imported modules, which are
    never freed anyway.
    `train` and `models` import torch through here (the CLI imports `train` before any
    stage module, so a stage's torch comes in here); a module that runs `import torch`
    before importing `runtime` bypasses it. When torch is already imported, nothing happens.
    """
    if "torch" in sys.modules:
        return sys.modules["torch"]
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return torch


torch = _import_torch()

DEFAULT_THREADS = 1
_frozen = False


def configure(threads: int = DEFAULT_THREADS, device: str | None = None, deterministic: bool = True) -> dict:
    """Fix threads and deterministic algorithms; return what was set, for provenance.
    `device`: "cpu", "cuda" (refused when no GPU is visible) or "auto"/None (cuda when
    present). On CUDA: deterministic algorithms and cuBLAS's fixed workspace, unless
    `deterministic` is False (distill.deterministic: cuDNN then picks its fastest kernels,
    and reruns may differ in the last bits; recorded)."""
    global _frozen
    if not _frozen:
        # Move everything alive now (in a stage: the modules imported after torch)
        # out of the cyclic garbage collector's sight, once per process, as _import_torch
        # does for torch's objects. Measured: the interpreter's exit after `import torch`
        # took 0.45 s, 0.11 s with the freeze (the final collections no longer traverse
        # torch). Frozen objects that later become cyclic garbage are never collected: in a
        # stage process these are the imported modules, which live until exit anyway.
        gc.freeze()
        _frozen = True
    # cuBLAS is only deterministic with a fixed workspace; must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Deliberate: the workflow runs one single-threaded job per core (measured: two
    # threads in one job stall when the other core is busy, and change the bits).
    torch.set_num_threads(threads)
    # Denormals (|x| < 1.2e-38 in float32) flushed to zero: a converging student's tiny
    # gradients and Adam moments otherwise fall into the CPU's slow microcode path.
    # Measured (H = 512, 3 seeds, MNIST-1D, 50 epochs, one thread): steps went from 4.2 to
    # 7.7 ms after epoch ~20; flushed, 4.2 ms throughout (10.1 -> 6.7 s per cell). Values
    # that small carry no information here; the switch is recorded in provenance.
    flush_denormal = bool(torch.set_flush_denormal(True))
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no CUDA GPU here (CUDA_VISIBLE_DEVICES, "
                           "the SLURM --gres request, or a CPU-only torch); use device: auto or cpu")
    if device not in (None, "auto", "cpu", "cuda"):
        raise ValueError(f"device: {device!r} is not one of auto, cpu, cuda")
    device = "cpu" if device == "cpu" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        # Only CUDA kernels need the switch. Measured on CPU: the call alone imports
        # torch._dynamo and sympy, ~1.05 s per job, and the CPU kernels used here are
        # deterministic at a fixed thread count (tests/test_train.py checks bit-identical runs).
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
    cuda = {"cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")} if device == "cuda" else {}
    return {
        **cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deterministic_algorithms": device == "cuda" and deterministic,
        "flush_denormal": flush_denormal,
    }
