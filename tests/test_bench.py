"""The benchmark's own arithmetic and its reference loops (fast; `make bench` runs the real thing)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import cached_loop  # noqa: E402
import matmul_limit  # noqa: E402
import naive_kd  # noqa: E402
import run as bench  # noqa: E402
import standard_loop  # noqa: E402
from distillstudy.engine import losses  # noqa: E402


def test_step_flops_counts_forward_weight_and_input_gradients():
    # 40 -> 8 -> 8 -> 10, one example: forward 2*(320+64+80); weight grads the same;
    # input grads for layers 2 and 3 only (nothing flows into the data).
    assert bench.step_flops(8) == 2 * (320 + 64 + 80) * 2 + 2 * (64 + 80)
    grid = bench.grid_flops(n_train=100, epochs=2, seeds=3, n_cells=5)
    assert grid[32] == bench.step_flops(32) * 100 * 2 * 3 * 5


def test_matmul_limit_counts_the_same_flops_as_the_grid():
    for feature_major in (False, True):
        ops, flops = matmul_limit.step_gemms(3, 128, [40, 16, 16, 10], feature_major)
        assert len(ops) == 8
        assert flops == 3 * bench.step_flops(16, batch=128)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_reference_loops_use_the_pipelines_loss(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    expected = losses.kd_loss(s, t, y, 0.9, temperature)
    for module in (naive_kd, cached_loop, standard_loop):
        torch.testing.assert_close(module.kd_loss(s, t, y, temperature, 0.9), expected)


def test_reference_scripts_run(tmp_path):
    from distillstudy.engine.datasets import Splits, to_arrays
    from distillstudy.artifacts import save_npz
    from distillstudy.engine.models import CNN1D
    from distillstudy.engine.models import save_state

    rng = np.random.default_rng(0)
    xs = {s: rng.normal(size=(64, 40)).astype(np.float32) for s in ("train", "val", "test")}
    ys = {s: rng.integers(0, 10, 64) for s in xs}
    arrays = to_arrays(Splits(xs, ys, [], []))
    save_npz(tmp_path / "data.npz", arrays)
    teacher = CNN1D(40, 10, 4, arrays["mean"], arrays["std"])
    save_state(tmp_path / "teacher.pt", teacher.state_dict())
    with torch.no_grad():
        save_npz(tmp_path / "logits.npz", {"logits_train": teacher(torch.from_numpy(arrays["x_train"])).numpy()})
    py = sys.executable
    subprocess.run([py, ROOT / "benchmarks/naive_kd.py", "--data", tmp_path / "data.npz", "--teacher",
                    tmp_path / "teacher.pt", "--channels", "4", "--hidden", "8", "--temperature", "2",
                    "--epochs", "1", "--out", tmp_path / "student.pt"], check=True, capture_output=True)
    out = subprocess.run([py, ROOT / "benchmarks/cached_loop.py", "--data", tmp_path / "data.npz",
                          "--teacher-logits", tmp_path / "logits.npz", "--sizes", "8", "--temperatures", "2",
                          "--seeds", "1", "--epochs", "1"], check=True, capture_output=True, text=True)
    assert '"runs": 2' in out.stdout


def test_plain_loop_augments_one_image_as_torchvision_s_crop_and_flip():
    arrays = standard_loop.synthetic_images(4, n_val=2, n_classes=3)
    dataset = standard_loop.AugmentedImages(arrays["x_train"], arrays["y_train"], np.zeros(3, np.float32),
                                            np.ones(3, np.float32))
    image = torch.from_numpy(arrays["x_train"][1]).float() / 255.0
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    views = {tuple(dataset[1][0].flatten()[:40].tolist()) for _ in range(20)}
    assert len(views) > 1  # a fresh crop / flip each time the image is drawn
    for _ in range(10):
        x, y = dataset[1]
        assert x.shape == (3, 32, 32) and int(y) == arrays["y_train"][1]
        crops = [padded[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(x, c) or torch.equal(x, c.flip(-1)) for c in crops)


def test_standard_vs_plain_loop_measures_both_ways():
    out = standard_loop.measure("resnet8", "resnet8", steps=2, batch_size=8, rounds=1, workers=(0, 1))
    assert out["standard_images_per_s"] > 0 and out["plain_images_per_s"] > 0
    assert out["standard_vs_plain_loop"] == pytest.approx(out["standard_images_per_s"] / out["plain_images_per_s"])
    assert set(out["plain_images_per_s_by_workers"]) == {"0", "1"} and out["images_per_run"] == 16
    assert out["plain_images_per_s"] == max(out["plain_images_per_s_by_workers"].values())
