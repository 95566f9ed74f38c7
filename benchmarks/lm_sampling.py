"""On-policy sampling with the KV cache against recomputing the prefix (engine/gpt.py `sample`).

    kv_cache_speedup   recompute seconds / cached seconds for the same samples (goal >= 3 at
                       length 64: on-policy distillation samples from the student every step)

Both draw `n` sequences of `length` tokens from the same built-in `gpt` student (2 layers,
width `size`, vocabulary 33 = the default synthetic language's 32 tokens + BOS, block =
`length`), with the same generator seed and therefore the same multinomial draws:

  cached     sample(..., cache=True): each step runs the newest token through model.step,
             attending to the stored keys and values (one token's forward per step).
  recompute  sample(..., cache=False): each step runs the whole prefix through the model
             and keeps the last position's logits (what a module without `step` gets;
             sum over steps of the prefix lengths = length (length + 1) / 2 tokens' forwards).

One thread (the workflow's setting), alternated rounds, the fastest round of each way
counts (short runs on a shared machine); each way runs once untimed first. `same_tokens`
says whether both ways drew identical tokens (float32: equal unless a draw falls within
rounding of a bin edge).

    PYTHONPATH=src python benchmarks/lm_sampling.py            # n = 64, 5 rounds (~10 s)
    PYTHONPATH=src python benchmarks/lm_sampling.py --quick    # n = 64, 3 rounds (~5 s)
"""

from __future__ import annotations

import argparse
import json
import time

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from standard_loop import cpu_model  # the benchmarks' one CPU-model probe

from distillstudy.engine.gpt import GPT, n_params, sample

VOCAB = 33  # the default synthetic language: 32 tokens + BOS
BOS = VOCAB - 1


def _timed(model: GPT, n: int, length: int, cache: bool) -> tuple[float, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    ids = sample(model, n, length, bos=BOS, generator=generator, cache=cache)
    return time.perf_counter() - started, ids


def measure(size: int = 64, length: int = 64, n: int = 64, rounds: int = 3, vocab_size: int = VOCAB) -> dict:
    """Seconds to sample `n` sequences of `length` tokens with and without the KV cache,
    best of `rounds` alternated rounds, one thread."""
    runtime.configure(1, device="cpu")
    torch.manual_seed(0)
    model = GPT(vocab_size, length, size)
    ways = {"cached": True, "recompute": False}
    for cache in ways.values():
        _timed(model, n, length, cache)  # warm-up: oneDNN kernels, allocator
    rounds_s: dict[str, list[float]] = {name: [] for name in ways}
    drawn = {}
    for _ in range(rounds):
        for name, cache in ways.items():
            seconds, drawn[name] = _timed(model, n, length, cache)
            rounds_s[name].append(seconds)
    cached_s, recompute_s = min(rounds_s["cached"]), min(rounds_s["recompute"])
    return {"kv_cache_speedup": recompute_s / cached_s, "cached_s": cached_s, "recompute_s": recompute_s,
            "cached_tokens_per_s": n * length / cached_s, "recompute_tokens_per_s": n * length / recompute_s,
            "same_tokens": bool(torch.equal(drawn["cached"], drawn["recompute"])),
            "length": length, "n": n, "size": size, "vocab_size": vocab_size, "n_layer": model.n_layer,
            "heads": model.heads, "n_params": n_params(model), "rounds": rounds, "rounds_s": rounds_s,
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(measure(args.size, args.length, args.n, rounds=3 if args.quick else 5), indent=2))


if __name__ == "__main__":
    main()
