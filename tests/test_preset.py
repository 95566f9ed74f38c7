"""studies/cifar100_kd.yaml, the CIFAR-100 KD benchmark's preset, run exactly as the README
says (`snakemake --configfile studies/cifar100_kd.yaml`) at `epochs: 1` on a tiny CIFAR-100
folder the test writes, on the CPU: zoo teachers trained by the standard engine, one job per
(cell, replicate), KD and DKD against the baseline, the report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from cifar_format import write_cifar
from conftest import ROOT, make_workspace, run

pytestmark = pytest.mark.slow


def test_the_cifar100_preset_runs_end_to_end_at_one_epoch(tmp_path):
    ws = make_workspace(tmp_path / "study", ROOT / "params.yaml")
    shutil.copytree(ROOT / "studies", ws / "studies")
    preset = yaml.safe_load((ws / "studies/cifar100_kd.yaml").read_text())
    folder = write_cifar(ws / "data/raw", "cifar100", n_train=40, n_test=20)  # 60 images, 32 x 32
    assert folder == ws / preset["prepare"]["datasets"][0]["path"]
    (ws / "one_epoch.yaml").write_text(yaml.safe_dump({"teacher": {"recipe": {"epochs": 1}},
                                                       "distill": {"recipe": {"epochs": 1}}}))
    run(["snakemake", "-c2", "--configfile", "studies/cifar100_kd.yaml", "one_epoch.yaml"], ws, timeout=1500)

    results = pd.read_csv(ws / "reports/results.csv")
    test = results[(results["metric"] == "accuracy") & (results["split"] == "test")]
    students = test[test["model"] != "teacher"]
    assert set(zip(students["dataset"], students["student_size"])) == {("c100-resnet", "resnet8x4"),
                                                                        ("c100-wrn", "wrn_16_2")}
    assert set(students["model"]) == {"baseline", "distilled", "dkd"}
    assert students.groupby(["dataset", "model"])["seed"].nunique().eq(3).all()  # the preset's 3 seeds
    n_params = results[(results["metric"] == "n_params") & (results["model"] != "teacher")]
    assert dict(zip(n_params["student_size"], n_params["value"])) == {"resnet8x4": 1233540, "wrn_16_2": 703284}
    teacher = json.loads((ws / "models/teachers/c100-resnet.json").read_text())
    assert teacher["architecture"] == "resnet32x4" and teacher["n_params"] == 7433860
    assert teacher["fit"]["recipe"]["milestones"] == [150, 180, 210] and teacher["fit"]["epochs_run"] == 1
    cell = np.load(ws / "models/students/c100-resnet/cifar-resnet8x4/kd_T4_mix0.9.logits.npz")
    record = json.loads(str(cell["record"]))
    assert cell["logits_test"].shape == (3, 20, 100) and record["teacher"] == "run online on each augmented batch"
    assert record["recipe"]["crop_size"] == 32 and record["recipe"]["hflip"] and record["epochs"] == 1
    curves = pd.read_csv(ws / "reports/training_curves.csv")
    assert set(curves["cell"]) >= {"baseline", "kd_T4_mix0.9", "teacher"} and set(curves["epoch"]) == {1}
    assert "CIFAR-100" in (ws / "reports/index.html").read_text()
