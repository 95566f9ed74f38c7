"""Synthetic inputs for building a report in a second, without running a study:
a long results table, the matching reliability bins, a walkthrough table and
two small PNGs."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from distillstudy.analysis import stats  # noqa: E402

EVIL = "<script>alert(1)</script>"
SIZES = (16, 64)
TEMPS = ("1", "4")
SEEDS = (0, 1, 2)
METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_teacher", "mean_max_prob")
N_BINS = 10


def synthetic_results(dataset: str = EVIL, teacher_mmp: float = 0.995) -> pd.DataFrame:
    """Gains grow with T (T = 4 is best on validation for both sizes)."""
    rng = np.random.default_rng(0)
    rows = []

    def add(model, size, T, alpha, seed, split, metric, value):
        rows.append({"dataset": dataset, "model": model, "student_size": size, "temperature": T, "alpha": alpha,
                     "seed": seed, "split": split, "metric": metric, "value": value})

    for split in ("train", "val", "test"):
        add("teacher", "", "", "", 0, split, "accuracy", 0.93)
        add("teacher", "", "", "", 0, split, "nll", 0.25)
        add("teacher", "", "", "", 0, split, "mean_max_prob", teacher_mmp if split == "train" else 0.9)
    add("teacher", "", "", "", 0, "all", "n_params", 100000)
    for size in SIZES:
        for seed in SEEDS:
            seed_fx = rng.normal(0, 0.01)
            cells = [("baseline", "", 0.0, 0.0), ("logit_mse", "", 0.5, 0.005)]
            cells += [("distilled", T, 0.5, 0.01 * (i + 1)) for i, T in enumerate(TEMPS)]
            for model, T, alpha, gain in cells:
                for split in ("train", "val", "test"):
                    acc = 0.80 + size / 1000 + seed_fx + gain + rng.normal(0, 0.002)
                    vals = {"accuracy": acc, "nll": 1.2 - acc, "ece": 0.05, "brier": 0.3,
                            "agreement": acc + 0.05, "kl_teacher": 0.2, "mean_max_prob": 0.8}
                    for metric in METRICS:
                        add(model, size, T, alpha, seed, split, metric, vals[metric])
                add(model, size, T, alpha, seed, "all", "n_params", size * 50)
    return pd.DataFrame(rows, columns=stats.COLUMNS)


def synthetic_calibration(dataset: str = EVIL, n: int = 200) -> pd.DataFrame:
    """Reliability bins for every model and seed of `synthetic_results` (test split)."""
    rng = np.random.default_rng(1)
    rows = []

    def add(model, size, T, alpha, seed, sharpness):
        conf = np.clip(rng.beta(sharpness, 1.5, size=n), 1e-6, 1.0)
        correct = rng.random(n) < conf * 0.95
        b = np.clip(np.ceil(conf * N_BINS).astype(int) - 1, 0, N_BINS - 1)
        for k in range(N_BINS):
            m = b == k
            rows.append({"dataset": dataset, "model": model, "student_size": size, "temperature": T,
                         "alpha": alpha, "seed": seed, "split": "test", "bin": k, "bin_lower": k / N_BINS,
                         "bin_upper": (k + 1) / N_BINS, "count": int(m.sum()),
                         "mean_confidence": float(conf[m].mean()) if m.any() else np.nan,
                         "accuracy": float(correct[m].mean()) if m.any() else np.nan})

    add("teacher", "", "", "", 0, 8.0)
    for size in SIZES:
        for seed in SEEDS:
            add("baseline", size, "", 0.0, seed, 6.0)
            add("logit_mse", size, "", 0.5, seed, 4.0)
            for T in TEMPS:
                add("distilled", size, T, 0.5, seed, 4.0)
    return pd.DataFrame(rows, columns=stats.CALIBRATION_COLUMNS)


def walkthrough_table() -> pd.DataFrame:
    return pd.DataFrame([{"n_train": n, "model": m, "split": s, "log_loss": v}
                         for n in (10, 15) for s in ("train", "test")
                         for m, v in (("student", 0.70), ("distilled", 0.62), ("teacher", 0.55))])


def png(path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([10, 20, 30], [0.7, 0.6, 0.5])
    ax.set_title(title)
    fig.savefig(path, format="png", dpi=50, metadata={"Software": None})
    plt.close(fig)


def report_inputs(tmp_path, dataset: str = EVIL) -> dict:
    """Keyword arguments of the report stage's `run` (less the outputs), files under tmp_path."""
    results = tmp_path / "results.csv"
    synthetic_results(dataset).to_csv(results, index=False)
    calibration = tmp_path / "calibration.csv"
    synthetic_calibration(dataset).to_csv(calibration, index=False)
    wt_csv = tmp_path / "walkthrough.csv"
    walkthrough_table().to_csv(wt_csv, index=False)
    pngs = [tmp_path / "walkthrough_test.png", tmp_path / "walkthrough_train.png"]
    for p in pngs:
        png(p, p.stem)
    meta = tmp_path / "dataset_meta.json"
    meta.write_text(json.dumps({"name": dataset, "kind": "synthetic", "n_train": 100, "n_val": 20, "n_test": 50,
                                "n_features": 2, "n_classes": 3, "sha256": "ab" * 32,
                                "feature_names": [EVIL, "x2"], "class_names": ["a", "b", "c"]}), encoding="utf-8")
    # Snakemake benchmark files: one teacher job of 1.5 s, four distill jobs of 12.25 s in all.
    benchmarks = []
    for rule, walls in (("teacher", [1.5]), ("distill", [3.0, 3.0, 3.0, 3.25])):
        for i, wall in enumerate(walls):
            path = tmp_path / "logs" / "benchmarks" / rule / f"job{i}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"s\th:m:s\n{wall}\t0:00:0{int(wall)}\n")
            benchmarks.append(path)
    return {
        "results": results,
        "calibration": calibration,
        "walkthrough": wt_csv,
        "walkthrough_pngs": pngs,
        "params": {"study": {"name": EVIL, "temperatures": [1, 4]}, "distill": {"alpha": 0.5}},
        "dataset_meta": [meta],
        "provenance_record": {"git_commit": "deadbeef", "dirty": "false", "note": "<b>x</b>"},
        "benchmarks": benchmarks,
    }
