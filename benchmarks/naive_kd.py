"""(a) The usual way to run a distillation grid: one process per run, the teacher
evaluated on every batch, a DataLoader, default torch settings -- the pattern of
most KD tutorials and repositories. benchmarks/run.py launches it once per run.

    python benchmarks/naive_kd.py --data DATA.npz --teacher TEACHER.pt --hidden 128 \
        --temperature 4 --alpha 0.9 --seed 0 --epochs 50 --out student.pt
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from distillstudy.engine.models import CNN1D, Standardize


def kd_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * temperature**2 * soft


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: hard-label baseline")
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = np.load(args.data)
    x, y = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)

    teacher = CNN1D(x.shape[1], 10, args.channels, data["mean"], data["std"])
    teacher.load_state_dict(torch.load(args.teacher))
    teacher.eval()
    student = nn.Sequential(Standardize(data["mean"], data["std"]),
                            nn.Linear(x.shape[1], args.hidden), nn.ReLU(),
                            nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                            nn.Linear(args.hidden, 10))
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)

    started = time.time()
    for epoch in range(args.epochs):
        student.train()
        for xb, yb in loader:
            logits = student(xb)
            if args.temperature > 0:
                with torch.no_grad():
                    teacher_logits = teacher(xb)
                loss = kd_loss(logits, teacher_logits, yb, args.temperature, args.alpha)
            else:
                loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.save(student.state_dict(), args.out)
    print(f"h{args.hidden} T{args.temperature:g} seed {args.seed}: loss {loss.item():.4f}, "
          f"{time.time() - started:.1f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
