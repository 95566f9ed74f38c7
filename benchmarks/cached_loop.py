"""(b) The same runs as naive_kd.py, one after another in ONE process, with the
teacher's logits computed once and cached (still a DataLoader, one model per run,
default torch settings).

    python benchmarks/cached_loop.py --data DATA.npz --teacher-logits LOGITS.npz \
        --sizes 32 128 512 --temperatures 1 2 4 8 --seeds 3 --epochs 50
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from distillstudy.engine.models import Standardize


def kd_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * temperature**2 * soft


def train_one(x, y, t, mean, std, hidden, temperature, alpha, seed, epochs, batch_size, lr):
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y, t), batch_size=batch_size, shuffle=True)
    student = nn.Sequential(Standardize(mean, std), nn.Linear(x.shape[1], hidden), nn.ReLU(),
                            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    for epoch in range(epochs):
        student.train()
        for xb, yb, tb in loader:
            logits = student(xb)
            if temperature > 0:
                loss = kd_loss(logits, tb, yb, temperature, alpha)
            else:
                loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--teacher-logits", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--temperatures", type=float, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = np.load(args.data)
    x, y = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    t = torch.tensor(np.load(args.teacher_logits)["logits_train"])
    runs = 0
    started = time.time()
    for hidden in args.sizes:
        for temperature in [0.0] + args.temperatures:
            for seed in range(args.seeds):
                train_one(x, y, t, data["mean"], data["std"], hidden, temperature, args.alpha, seed,
                          args.epochs, args.batch_size, args.lr)
                runs += 1
    print(json.dumps({"runs": runs, "seconds": time.time() - started, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
