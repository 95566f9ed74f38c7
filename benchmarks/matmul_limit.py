"""The machine's matmul throughput for the grid's shapes: the GEMMs of one training
step of a 40 -> H -> H -> 10 MLP at batch 128 (3 forward, 3 weight-gradient and
2 input-gradient matmuls), for M models stacked, in both layouts (batch-major x @ W
and feature-major W^T @ x^T), one thread. benchmarks/run.py runs one copy per core
at the same time, so the figure includes what the cores share (memory, caches, clocks).

    python benchmarks/matmul_limit.py --hidden 512 --members 1 3 15 --seconds 2
"""

import argparse
import json
import time

import torch


def step_gemms(m, b, sizes, feature_major):
    """Closures doing one step's GEMMs, and their FLOP count."""
    g = torch.Generator().manual_seed(0)
    ops, flops = [], 0
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.randn(m, n_in, n_out, generator=g)
        bias = torch.randn(m, 1, n_out, generator=g)
        if feature_major:
            a = torch.randn(m, n_in, b, generator=g)
            d = torch.randn(m, n_out, b, generator=g)
            ops.append(lambda w=w, a=a, bias=bias: torch.baddbmm(bias.transpose(1, 2), w.transpose(1, 2), a))
            ops.append(lambda a=a, d=d: torch.bmm(a, d.transpose(1, 2)))
            if i > 0:
                ops.append(lambda w=w, d=d: torch.bmm(w, d))
        else:
            a = torch.randn(m, b, n_in, generator=g)
            d = torch.randn(m, b, n_out, generator=g)
            ops.append(lambda w=w, a=a, bias=bias: torch.baddbmm(bias, a, w))
            ops.append(lambda a=a, d=d: torch.bmm(a.transpose(1, 2), d))
            if i > 0:
                ops.append(lambda w=w, d=d: torch.bmm(d, w.transpose(1, 2)))
        flops += 2 * m * b * n_in * n_out * (3 if i > 0 else 2)
    return ops, flops


def measure(hidden, members, seconds, n_in=40, n_out=10, batch=128):
    out = []
    for m in members:
        for feature_major in (False, True):
            ops, flops = step_gemms(m, batch, [n_in, hidden, hidden, n_out], feature_major)
            for op in ops:
                op()
            steps, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for op in ops:
                    op()
                steps += 1
            elapsed = time.perf_counter() - started
            out.append({"hidden": hidden, "members": m, "layout": "feature-major" if feature_major else "batch-major",
                        "gflops": flops * steps / elapsed / 1e9})
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, nargs="+", required=True)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 15])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps([r for h in args.hidden for r in measure(h, args.members, args.seconds)]))


if __name__ == "__main__":
    main()
