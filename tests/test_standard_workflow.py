"""The standard engine through real Snakemake: your BatchNorm ResNet as teacher and student on
image data, one job per (cell, replicate), the report; a replicate job killed with SIGKILL and
started again resumes from its last epoch and ends with the bytes of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cifar_format import write_imagefolder
from conftest import ROOT, make_workspace, run, tool_env

pytestmark = pytest.mark.slow

#: Your model file, as a user writes it: a small ResNet with BatchNorm (He et al. 2016).
RESNETS = '''
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return nn.functional.relu(x + self.bn2(self.conv2(nn.functional.relu(self.bn1(self.conv1(x))))))


def resnet(input_shape, n_classes, size):
    return nn.Sequential(nn.Conv2d(input_shape[0], size, 3, padding=1, bias=False), nn.BatchNorm2d(size), nn.ReLU(),
                         Block(size), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(size, n_classes))


def teacher(input_shape, n_classes):
    return resnet(input_shape, n_classes, 8)
'''

STUDENT = "resnet-4"


def byo_study(folder: Path, epochs: int = 2) -> Path:
    """A workspace with params.yaml and `mine.yaml`: an imagefolder dataset, your teacher and
    student factories, the standard engine's recipe with crop + flip."""
    ws = make_workspace(folder, ROOT / "params.yaml")
    (ws / "zoo").mkdir()
    (ws / "zoo/resnets.py").write_text(RESNETS)
    write_imagefolder(ws / "data/raw/shapes", n_classes=3, per_class=20, size=12, test_per_class=5)
    recipe = {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
              "schedule": {"name": "cosine", "warmup_epochs": min(1, epochs - 1)}, "epochs": epochs, "batch_size": 16,
              "augment": {"random_crop": {"size": 12, "padding": 2}, "hflip": True}}
    mine = {
        "prepare": {"datasets": [{"name": "shapes", "kind": "imagefolder", "path": "data/raw/shapes",
                                  "teacher": {"factory": "zoo/resnets.py:teacher"}}]},
        "teacher": {"recipe": recipe},
        "distill": {"students": [{"family": "zoo/resnets.py:resnet", "sizes": [4]}], "recipe": recipe,
                    "objectives": {"kd": {"temperature": [4]}, "logit_mse": None, "dkd": None, "dist": None,
                                   "ls_kd": None, "nkd": None},
                    "seeds": 2},
        "designs": {"datasets": []},
        "walkthrough": {"enabled": False},
    }
    (ws / "mine.yaml").write_text(yaml.safe_dump(mine, sort_keys=False))
    return ws


def test_your_batchnorm_resnet_as_teacher_and_student_through_snakemake(tmp_path):
    ws = byo_study(tmp_path / "study")
    run(["snakemake", "-c2", "--configfile", "mine.yaml"], ws, timeout=900)
    results = pd.read_csv(ws / "reports/results.csv")
    students = results[(results["family"] == "resnet") & (results["metric"] == "accuracy")
                       & (results["split"] == "test")]
    assert set(students["model"]) == {"baseline", "distilled"} and students["seed"].nunique() == 2
    assert students["value"].between(0, 1).all()
    log = (ws / f"logs/distill/shapes/{STUDENT}/kd_T4_mix0.9/seed1.log").read_text()
    assert "epoch 2/2" in log and "img/s" in log and "ETA" in log
    assert not list((ws / ".checkpoints").rglob("*.pt"))  # removed when each job finished
    assert (ws / "reports/index.html").is_file()


def replicate_target(ws: Path) -> str:
    return f"models/students/shapes/{STUDENT}/kd_T4_mix0.9/seed0.logits.npz"


def test_a_replicate_killed_with_sigkill_resumes_and_ends_byte_identical(tmp_path):
    ws = byo_study(tmp_path / "killed", epochs=12)
    target = replicate_target(ws)
    log = ws / f"logs/distill/shapes/{STUDENT}/kd_T4_mix0.9/seed0.log"
    snakemake = subprocess.Popen(["snakemake", target, "-c1", "--configfile", "mine.yaml"], cwd=ws, env=tool_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not (log.is_file() and "epoch 3/12" in log.read_text()):
        assert snakemake.poll() is None, snakemake.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job = subprocess.run(["pgrep", "-f", "--", f"--checkpoint .checkpoints/distill/shapes/{STUDENT}/kd_T4_mix0.9/seed0.pt"],
                         capture_output=True, text=True).stdout.split()
    assert job, "the replicate's job process was not found"
    for pid in job:
        os.kill(int(pid), signal.SIGKILL)
    assert snakemake.wait(timeout=120) != 0
    assert not (ws / target).exists()
    run(["snakemake", target, "-c1", "--rerun-incomplete", "--configfile", "mine.yaml"], ws, timeout=600)
    resumed = log.read_text()
    assert "resumed from epoch" in resumed and "epoch 12/12" in resumed
    k = int(resumed.split("resumed from epoch ")[1].split()[0])
    assert 3 <= k < 12 and f"epoch {k}/12" not in resumed.split("resumed from epoch")[1]

    fresh = byo_study(tmp_path / "fresh", epochs=12)
    run(["snakemake", target, "-c1", "--configfile", "mine.yaml"], fresh, timeout=600)  # (targets before --configfile: it takes several files)
    assert (ws / target).read_bytes() == (fresh / target).read_bytes()
    model = target.replace(".logits.npz", ".pt")
    assert (ws / model).read_bytes() == (fresh / model).read_bytes()
    assert not (ws / ".checkpoints/distill/shapes" / STUDENT / "kd_T4_mix0.9/seed0.pt").exists()
