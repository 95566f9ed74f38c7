"""The engine on CUDA: same code path as on CPU, deterministic, and agreeing with CPU.

    PYTHONPATH=src python benchmarks/cuda_check.py

Needs torch and numpy (scikit-learn's digits if installed, random data otherwise);
not the rest of the study's dependencies. Checks, on scikit-learn's 8x8 digits
(1,797 x 64, 10 classes):
  1. a CNN teacher trains on CUDA with `train.train_teacher`, twice: bit-identical;
  2. a stacked grid cell (3 seeds, KD at T = 4, alpha = 0.9) trains on CUDA twice
     with `train.train_stacked`: finite losses, bit-identical weights and losses;
  3. the same cell on CPU (1 thread) agrees with CUDA to float32 tolerance;
  4. `train.FusedAdam` equals torch.optim.Adam(fused=True) bit for bit on the device;
  5. timings per training step, CUDA against CPU, H = 64 and H = 512;
  6. stacked teachers (engine/stacked.py: 3 CNN2D members with dropout, early stopping
     per member) train on the device twice: bit-identical, and each member's validation
     NLL agrees with the same stack on CPU to float32 tolerance;
  7. the generic student path (engine/generic.py: the cnn family, 3 seeds, KD) on the
     device twice: bit-identical, and agreeing with CPU to float32 tolerance;
  8. the standard engine (engine/standard.py: resnet8x4 <- resnet32x4 from the zoo, KD at
     T = 4, crop + flip, the teacher run on each augmented batch) on the device twice with
     `precision: bf16`: identical weights (deterministic algorithms, cuBLAS workspace:
     runtime.configure); then its images/s with bf16, channels_last and GPU-resident
     data against the plain fp32 loop of benchmarks/standard_loop.py (mdistiller's
     pattern: DataLoader, per-image augmentation, cudnn.benchmark; 0 or 4 workers, the
     faster), goal >= 2x. Without CUDA: the determinism check on CPU with small models.
Without CUDA it runs every CPU part and says what it skipped. Exit status 1 if a
check fails.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from distillstudy.engine import cell_loss, runtime, train  # runtime first: it imports torch (see runtime._import_torch)
from distillstudy.engine.families import cnn
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.engine.models import StackedMLP, make_teacher
from distillstudy.engine import zoo
from distillstudy.engine.stacked import train_stack
import torch  # noqa: E402  (already imported by runtime)

import standard_loop  # noqa: E402  (benchmarks/, beside this script)

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        FAILURES.append(what)


def digits() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target.astype(np.int64), "scikit-learn digits"
    except ImportError:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 1797)
        x = rng.normal(size=(1797, 64)).astype(np.float32) + y[:, None].astype(np.float32) * 0.3
        return x, y, "random data (scikit-learn missing)"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_cell(device, x, y, t, mean, std, hidden, epochs, seeds=(11, 22, 33)):
    model = StackedMLP([x.shape[1], hidden, hidden, t.shape[1]], list(seeds), mean, std).to(device)
    objective = cell_loss.objective_fn("kd", 0.9, {"temperature": 4.0})
    sync(device)
    started = time.perf_counter()
    history = train.train_stacked(model, x.to(device), y.to(device), t.to(device), objective, epochs=epochs,
                                  batch_size=128, lr=1e-3, weight_decay=0.0, run_name=f"check[{device}, h{hidden}]")
    sync(device)
    seconds = time.perf_counter() - started
    steps = epochs * -(-x.shape[0] // 128)
    return history, [p.detach().cpu().clone() for p in model.parameters()], seconds / steps


def teacher_stack(device, data, mean, std):
    """Per-member validation NLL histories and final weights of 3 stacked CNN2D teachers."""
    def factory():
        return make_teacher("digits", 64, 10, mean, std, cnn_channels=8, mlp_width=64, dropout=0.3)

    d = {k: v.to(device) for k, v in data.items()}
    fits = train_stack(factory, [1, 2, 3], [(d["x_train"], d["y_train"])] * 3, (d["x_val"], d["y_val"]),
                       max_epochs=3, patience=1, batch_size=128, lr=3e-3, weight_decay=0.0,
                       run_name=f"check stack[{device}]")
    return ([f.val_nll for f in fits],
            [p.detach().cpu().clone() for f in fits for p in f.model.parameters()])


def generic_cell(device, x, y, t, mean, std):
    """Loss history and weights of a cnn-family cell (digits as 8x8 images) on `device`."""
    images = ((x - torch.from_numpy(mean)) / torch.from_numpy(std)).view(-1, 8, 8).to(device)
    stack = GenericStack(lambda: cnn((8, 8), 10, 4), [11, 22, 33], images, f"check generic[{device}]")
    history = train_generic(stack, images, y.to(device), t.to(device), cell_loss.objective_fn("kd", 0.9, {"temperature": 4}),
                            epochs=2, batch_size=128, lr=1e-3, weight_decay=0.0, run_name=f"check generic[{device}]")
    return history, [p.detach().cpu().clone() for p in stack.params.values()]


def standard_engine(device: str) -> None:
    """Section 8: the standard engine twice (identical weights), then its speed on CUDA."""
    dev = torch.device(device)
    student, teacher, steps, batch, precision = (("resnet8x4", "resnet32x4", 8, 64, "bf16") if device == "cuda"
                                                 else ("resnet8", "resnet8", 2, 16, "fp32"))
    print(f"8. standard engine ({student} <- {teacher}, KD T = 4, crop + flip, teacher online, {precision}) "
          f"on {device}, twice")
    arrays = standard_loop.synthetic_images(steps * batch)
    torch.manual_seed(0)
    teacher_net = zoo.build(teacher, standard_loop.N_CLASSES).to(dev).eval()
    weights = []
    for _ in range(2):
        model = standard_loop.student_model(student, dev, 1, channels_last=device == "cuda")
        standard_loop.standard_run(arrays, model, teacher_net, dev, epochs=2, batch_size=batch, precision=precision)
        weights.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    check(all(torch.isfinite(v.float()).all() for v in weights[0].values()), "standard engine: finite weights")
    check(all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]),
          f"{device}: standard engine weights identical run to run")
    if device != "cuda":
        print("  GPU part skipped (no CUDA device): the bf16 / channels_last / GPU-resident timing against the "
              "plain fp32 loop")
        return
    out = standard_loop.measure("resnet8x4", "resnet32x4", steps=150, rounds=3, workers=(0, 4), device="cuda",
                                precision="bf16")
    ratio = out["standard_vs_plain_loop"]
    print(f"  standard engine (bf16, channels_last, data on the GPU) {out['standard_images_per_s']:.0f} images/s; "
          f"plain fp32 loop ({out['plain_num_workers']} DataLoader workers) {out['plain_images_per_s']:.0f} images/s "
          f"(by workers: { {k: round(v) for k, v in out['plain_images_per_s_by_workers'].items()} }); "
          f"{ratio:.2f}x, goal >= 2x: {'met' if ratio >= 2 else 'NOT met'} ({out['device']}, best of "
          f"{out['rounds']}, {out['images_per_run']} images per run)")


def main() -> int:
    settings = runtime.configure(1)
    device = settings["device"]
    print(f"torch {torch.__version__}, device {settings['device_name']}, deterministic algorithms "
          f"{settings['deterministic_algorithms']}, CPU threads {settings['threads']}")
    xs, ys, source = digits()
    mean, std = xs.mean(0), xs.std(0) + 1e-6
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    n_val = 360
    data = {"x_train": x[n_val:], "y_train": y[n_val:], "x_val": x[:n_val], "y_val": y[:n_val]}
    print(f"data: {source}, {x.shape[0]} x {x.shape[1]}")

    print(f"1. CNN teacher (CNN2D, 16 channels, 4 epochs) on {device}, twice")
    states, fits = [], []
    for _ in range(2):
        torch.manual_seed(0)
        teacher = make_teacher("digits", 64, 10, mean, std, cnn_channels=16, mlp_width=64, dropout=0.1).to(device)
        sync(device)
        started = time.perf_counter()
        fit = train.train_teacher(teacher, {k: v.to(device) for k, v in data.items()}, seed=0, max_epochs=4,
                                  patience=4, batch_size=128, lr=3e-3, weight_decay=0.0, run_name="check teacher")
        sync(device)
        fits.append((fit, time.perf_counter() - started))
        states.append({k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()})
    print(f"  best val NLL {fits[0][0]['best_val_nll']:.4f} at epoch {fits[0][0]['best_epoch']}, "
          f"{fits[0][1]:.2f} s and {fits[1][1]:.2f} s")
    check(np.isfinite(fits[0][0]["best_val_nll"]) and fits[0][0]["best_val_nll"] < 1.0, "teacher trains (val NLL < 1)")
    check(all(torch.equal(states[0][k], states[1][k]) for k in states[0]), "teacher weights bit-identical run to run")
    with torch.no_grad():
        t = train.predict(teacher, x.to(device)).cpu()
    teacher_acc = float((t.argmax(1) == y).float().mean())
    print(f"  teacher accuracy on all digits {teacher_acc:.3f}")

    print(f"2. stacked cell (H = 64, 3 seeds, KD T = 4, 5 epochs) on {device}, twice")
    runs = [train_cell(device, x, y, t, mean, std, 64, 5) for _ in range(2)]
    check(all(np.isfinite(runs[0][0])), f"finite losses {[round(v, 4) for v in runs[0][0]]}")
    check(runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1])),
          f"{device}: losses and weights bit-identical run to run")

    if device == "cuda":
        print("3. the same cell on CPU (1 thread)")
        cpu = train_cell("cpu", x, y, t, mean, std, 64, 5)
        loss_diff = max(abs(a - b) / abs(b) for a, b in zip(runs[0][0], cpu[0]))
        weight_diff = max(float((a - b).abs().max()) for a, b in zip(runs[0][1], cpu[1]))
        scale = max(float(b.abs().max()) for b in cpu[1])
        print(f"  largest relative loss difference {loss_diff:.2e}; largest weight difference {weight_diff:.2e} "
              f"(weights up to {scale:.2f})")
        check(loss_diff < 1e-4 and weight_diff < 1e-3, "CUDA agrees with CPU to float32 tolerance")

        print("4. FusedAdam against torch.optim.Adam(fused=True) on cuda")
        g = torch.Generator().manual_seed(5)
        ours = [torch.randn(3, 40, 50, generator=g).cuda(), torch.randn(3, 1, 50, generator=g).cuda()]
        theirs = [p.clone().requires_grad_() for p in ours]
        reference = torch.optim.Adam(theirs, lr=1e-2, weight_decay=0.01, fused=True)
        adam = train.FusedAdam(ours, lr=1e-2, weight_decay=0.01)
        for _ in range(5):
            grads = [torch.randn(p.shape, generator=g).cuda() for p in ours]
            for q, grad in zip(theirs, grads):
                q.grad = grad.clone()
            adam.step(grads)
            reference.step()
        check(all(torch.equal(p, q.detach()) for p, q in zip(ours, theirs)), "FusedAdam bit-identical on cuda")
    else:
        print("3., 4. skipped: no CUDA device")

    print("5. time per training step (3 members, batch 128)")
    for hidden, epochs_gpu, epochs_cpu in ((64, 10, 5), (512, 10, 2)):
        line = f"  H = {hidden}: cpu (1 thread) {train_cell('cpu', x, y, t, mean, std, hidden, epochs_cpu)[2] * 1e3:.3f} ms"
        if device == "cuda":
            train_cell(device, x, y, t, mean, std, hidden, 1)  # warm-up
            line += f", cuda {train_cell(device, x, y, t, mean, std, hidden, epochs_gpu)[2] * 1e3:.3f} ms"
        print(line)
    print(f"6. stacked teachers (3 x CNN2D, 8 channels, dropout 0.3, 3 epochs, patience 1) on {device}, twice")
    runs = [teacher_stack(device, data, mean, std) for _ in range(2)]
    check(all(np.isfinite(v).all() for v in runs[0][0]), "stacked teachers: finite validation NLL")
    check(runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1])),
          f"{device}: stacked teachers bit-identical run to run")
    if device == "cuda":
        cpu = teacher_stack("cpu", data, mean, std)
        gap = max(abs(a - b) for ra, rb in zip(runs[0][0], cpu[0]) for a, b in zip(ra, rb))
        print(f"  largest validation-NLL difference CUDA vs CPU {gap:.2e}")
        check(gap < 1e-3, "stacked teachers: CUDA agrees with CPU to float32 tolerance")

    print(f"7. generic student path (cnn family, size 4, 3 seeds, KD T = 4, 2 epochs) on {device}, twice")
    runs = [generic_cell(device, x, y, t, mean, std) for _ in range(2)]
    check(all(np.isfinite(runs[0][0])), f"generic path: finite losses {[round(v, 4) for v in runs[0][0]]}")
    check(runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1])),
          f"{device}: generic path bit-identical run to run")
    if device == "cuda":
        cpu = generic_cell("cpu", x, y, t, mean, std)
        loss_diff = max(abs(a - b) / abs(b) for a, b in zip(runs[0][0], cpu[0]))
        print(f"  largest relative loss difference CUDA vs CPU {loss_diff:.2e}")
        check(loss_diff < 1e-4, "generic path: CUDA agrees with CPU to float32 tolerance")
    standard_engine(device)
    print("all checks passed" if not FAILURES else f"FAILED: {FAILURES}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
