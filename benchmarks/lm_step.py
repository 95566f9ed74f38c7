"""The language-model distill step (engine/lm_train.py) against a plain loop that calls the
teacher and the student as Hugging Face modules, on the same model sizes, data and steps.

    lm_step_vs_hf_loop   plain loop's seconds / the pipeline's seconds for the same training
                         tokens (= pipeline tokens/s / plain tokens/s; goal >= 1.0: the
                         pipeline adds nothing to a hand-written loop)

Both train a GPT-2-shaped student (width 64, 2 layers, 4 heads) against a GPT-2-shaped
teacher (width 128, 2 layers, 8 heads; untrained: only its speed matters here) on data
prefixes with forward KL at alpha = 0.9,

    L = 0.1 NLL(tokens) + 0.9 mean over tokens of KL(p_T || p_S)

(Hinton et al. 2015's word-level KD; GKD's beta = 0), AdamW (lr 1e-3, weight decay 0.01),
batch 32 x 64 tokens of byte-level ids (vocabulary 257 = 256 bytes + BOS, synthetic),
and validate the student's NLL on 32 sequences after the epoch (lm_train.fit does):

  pipeline   lm_train.fit with a Recipe and an LMRun (objective fkl, source data): the
             built-in `gpt` modules (engine/gpt.py), the loss of lm_train.step_loss
             (token_objectives.token_term), a shuffled index slice per batch.
  plain      transformers' GPT2LMHeadModel as student and teacher, with the same width,
             layers and heads (gpt.n_heads), no dropout and exact GELU (the gpt family's
             math: same work both ways); the loop as trl's GKDTrainer and DistiLLM users
             write it: a shuffling DataLoader over the token rows, `with torch.no_grad():
             t = teacher(input_ids=ids).logits`, `s = student(input_ids=ids).logits`,
             F.cross_entropy + F.kl_div(log_softmax(s), log_softmax(t), log_target=True,
             reduction="batchmean") over the flattened tokens (the per-token mean),
             AdamW, loss.item() per step.

One thread (the workflow's setting), alternated rounds, the fastest round of each way
counts (short runs on a shared machine); each way runs once untimed first (the first
torch.optim optimiser of a process imports torch._dynamo; oneDNN builds its kernels on
first use). Model construction is outside the timing, data setup inside. `cpu_ratio` is
the same ratio in this process's CPU time (best round each): steadier than wall time
when other jobs load the machine.

    PYTHONPATH=src python benchmarks/lm_step.py            # 16 steps a run, 9 rounds (~30 s)
    PYTHONPATH=src python benchmarks/lm_step.py --quick    # 8 steps a run, 4 rounds (~10 s)
"""

from __future__ import annotations

import argparse
import json
import time

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from standard_loop import cpu_model  # the benchmarks' one CPU-model probe
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from distillstudy.engine.gpt import GPT, n_heads, n_params
from distillstudy.engine.lm_train import LMRun, fit
from distillstudy.engine.recipe import Recipe

VOCAB, BOS = 257, 256          # byte-level text: ids 0..255, BOS 256
BLOCK = 64                     # tokens per sequence (model input)
STUDENT, TEACHER, N_LAYER = 64, 128, 2
ALPHA, OBJECTIVE = 0.9, "fkl"
ADAMW = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}
BATCH, N_VAL = 32, 32
#: (steps per run, rounds) of the full bench and of --quick.
FULL = (16, 9)
QUICK = (8, 4)


def synthetic_tokens(n: int, seed: int = 0) -> torch.Tensor:
    """(n, BLOCK + 1) int64 rows in the LM data format: column 0 = BOS, then random bytes."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, BOS, (n, BLOCK + 1), generator=generator)
    rows[:, 0] = BOS
    return rows


def gpt_model(size: int, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(VOCAB, BLOCK, size, n_layer=N_LAYER)


def hf_model(size: int, seed: int):
    """GPT2LMHeadModel of the same shape as gpt_model(size): tied head, learned positions,
    4x MLP, pre-LayerNorm; dropout 0 and exact GELU as the gpt family has them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_embd=size, n_layer=N_LAYER, n_head=n_heads(size),
                        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=BOS, eos_token_id=BOS)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def pipeline_run(train: torch.Tensor, val: torch.Tensor, student: GPT, teacher: GPT, *,
                 batch_size: int) -> tuple[float, float]:
    """Train `student` for one epoch through lm_train.fit; return (wall, CPU) seconds."""
    recipe = Recipe.from_params({"optimizer": ADAMW, "schedule": {"name": "constant"}, "epochs": 1,
                                 "batch_size": batch_size})
    run = LMRun(name="bench lm", seed=1, recipe=recipe, objective=OBJECTIVE, alpha=ALPHA,
                hyper={"temperature": 1.0}, bos=BOS)
    started, cpu_started = time.perf_counter(), time.process_time()
    fit(student, train, val, run, teacher=teacher, log=lambda line: None)
    return time.perf_counter() - started, time.process_time() - cpu_started


def kd_loss(student_logits, teacher_logits, targets, alpha):
    """0.1 CE + 0.9 KL(p_T || p_S), both means over the flattened tokens, as the HF loops
    write it (trl's generalized_jsd_loss at beta = 0 with reduction="batchmean")."""
    s = student_logits.reshape(-1, student_logits.shape[-1])
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(s, targets.reshape(-1)) + alpha * kl


def plain_run(train: torch.Tensor, val: torch.Tensor, student, teacher, *, batch_size: int,
              seed: int = 1) -> tuple[float, float]:
    """Train `student` for one epoch the way an HF distillation script does; return (wall, CPU) seconds."""
    torch.manual_seed(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    loader = DataLoader(TensorDataset(train), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=ADAMW["lr"], weight_decay=ADAMW["weight_decay"])
    student.train()
    teacher.eval()
    total = 0.0
    for (seqs,) in loader:
        ids, targets = seqs[:, :-1], seqs[:, 1:]
        with torch.no_grad():
            t = teacher(input_ids=ids).logits
        s = student(input_ids=ids).logits
        loss = kd_loss(s, t, targets, ALPHA)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(seqs)
    student.eval()
    with torch.no_grad():
        logits = student(input_ids=val[:, :-1]).logits
        F.cross_entropy(logits.reshape(-1, VOCAB), val[:, 1:].reshape(-1)).item()
    return time.perf_counter() - started, time.process_time() - cpu_started


def measure(steps: int = FULL[0], rounds: int = FULL[1], batch_size: int = BATCH) -> dict:
    """Tokens/s of the pipeline's distill step and of the plain HF loop, `steps` optimiser
    steps of `batch_size` x BLOCK tokens per run, best of `rounds` alternated rounds, one thread."""
    settings = runtime.configure(1, device="cpu")
    train, val = synthetic_tokens(steps * batch_size), synthetic_tokens(N_VAL, seed=1)
    gpt_teacher, hf_teacher = gpt_model(TEACHER, 0).eval(), hf_model(TEACHER, 0).eval()
    ways = {"pipeline": lambda: pipeline_run(train, val, gpt_model(STUDENT, 1), gpt_teacher, batch_size=batch_size),
            "plain": lambda: plain_run(train, val, hf_model(STUDENT, 1), hf_teacher, batch_size=batch_size)}
    warm = synthetic_tokens(batch_size, seed=2)
    pipeline_run(warm, val, gpt_model(STUDENT, 1), gpt_teacher, batch_size=batch_size)
    plain_run(warm, val, hf_model(STUDENT, 1), hf_teacher, batch_size=batch_size)
    rounds_s: dict[str, list[float]] = {name: [] for name in ways}
    # This process's CPU time beside the wall time: other jobs' contention shows as wall >> CPU.
    cpu_s: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            wall, cpu = run()
            rounds_s[name].append(wall)
            cpu_s[name].append(cpu)
    tokens = steps * batch_size * BLOCK
    per_s = {name: tokens / min(times) for name, times in rounds_s.items()}
    hf_student = hf_model(STUDENT, 1)
    return {"lm_step_vs_hf_loop": min(rounds_s["plain"]) / min(rounds_s["pipeline"]),
            "pipeline_tokens_per_s": per_s["pipeline"], "plain_tokens_per_s": per_s["plain"],
            "pipeline_s": min(rounds_s["pipeline"]), "plain_s": min(rounds_s["plain"]), "rounds_s": rounds_s,
            "cpu_ratio": min(cpu_s["plain"]) / min(cpu_s["pipeline"]), "rounds_cpu_s": cpu_s,
            "student": {"size": STUDENT, "n_layer": N_LAYER, "heads": n_heads(STUDENT),
                        "gpt_params": n_params(gpt_model(STUDENT, 1)),
                        "hf_params": sum(p.numel() for p in hf_student.parameters())},
            "teacher": {"size": TEACHER, "n_layer": N_LAYER, "heads": n_heads(TEACHER)},
            "hf_attn_implementation": hf_student.config._attn_implementation,
            "vocab_size": VOCAB, "block": BLOCK, "batch_size": batch_size, "steps": steps,
            "tokens_per_run": tokens, "val_sequences": N_VAL, "rounds": rounds,
            "objective": f"{OBJECTIVE} (T = 1), alpha = {ALPHA}, data prefixes", "optimizer": ADAMW,
            "cpu": cpu_model(), "threads": settings["threads"], "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK[0]} steps a run, {QUICK[1]} rounds "
                                                             f"instead of {FULL[0]}, {FULL[1]}")
    args = parser.parse_args()
    steps, rounds = QUICK if args.quick else FULL
    print(json.dumps(measure(steps, rounds), indent=2))


if __name__ == "__main__":
    main()
