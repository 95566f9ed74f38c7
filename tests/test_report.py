"""The HTML report: self-contained, escaped, deterministic, with one embedded
image per figure and the DVC plots table."""

from __future__ import annotations

import base64
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from distillstudy import report, stats  # noqa: E402

EVIL = "<script>alert(1)</script>"
SIZES = (16, 64)
TEMPS = ("1", "4")
SEEDS = (0, 1, 2)
METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_teacher", "mean_max_prob")


def synthetic_results(dataset: str = EVIL, teacher_mmp: float = 0.995) -> pd.DataFrame:
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


def _png(path, title):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([10, 20, 30], [0.7, 0.6, 0.5])
    ax.set_title(title)
    fig.savefig(path, format="png", dpi=50, metadata={"Software": None})
    plt.close(fig)


@pytest.fixture()
def inputs(tmp_path):
    results = tmp_path / "results.csv"
    synthetic_results().to_csv(results, index=False)
    wt = pd.DataFrame([{"n_train": n, "model": m, "split": s, "log_loss": v}
                       for n in (10, 15) for s in ("train", "test")
                       for m, v in (("student", 0.70), ("distilled", 0.62), ("teacher", 0.55))])
    wt_csv = tmp_path / "walkthrough.csv"
    wt.to_csv(wt_csv, index=False)
    pngs = [tmp_path / "walkthrough_test.png", tmp_path / "walkthrough_train.png"]
    for p in pngs:
        _png(p, p.stem)
    return {
        "results_csv": results,
        "walkthrough_csv": wt_csv,
        "walkthrough_pngs": pngs,
        "params": {"study": {"name": EVIL, "temperatures": [1, 4]}, "distill": {"alpha": 0.5}},
        "datasets_meta": [{"name": EVIL, "kind": "synthetic", "n_train": 100, "n_val": 20, "n_test": 50,
                           "n_features": 4, "n_classes": 3, "sha256": "ab" * 32}],
        "provenance": {"git_commit": "deadbeef", "dirty": "false", "note": "<b>x</b>"},
        "benchmarks": pd.DataFrame({"rule": ["teacher", "distill"], "wall_s": [1.5, 12.25]}),
    }


def build(inputs, out_dir):
    report.build_report(**inputs, out_html=out_dir / "index.html", figures_dir=out_dir / "figures",
                        plots_dir=out_dir / "plots")
    return (out_dir / "index.html").read_text(encoding="utf-8")


def test_report_is_escaped_self_contained_and_complete(inputs, tmp_path):
    html = build(inputs, tmp_path / "out")
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script" not in html.lower()  # no scripts at all
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched from the network

    imgs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    n_figures = len(report.FIGURE_SPECS) * 1 + len(inputs["walkthrough_pngs"])
    assert len(imgs) == n_figures == len(re.findall(r"<img ", html))
    for uri in imgs:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == len(report.FIGURE_SPECS)

    summary = html.split('id="summary"')[1].split("</section>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;: the best distilled configuration on the validation split" in summary
    assert "selected on the validation split" in html and "reported on the test split" in html
    # the synthetic gain grows with T, so T = 4 is best on validation for both sizes
    assert "temperature T = 4" in summary
    # teacher near one-hot on train -> warning
    assert "near one-hot" in summary
    assert "at every n" in html
    assert "deadbeef" in html and "12.2" in html and "ab" * 32 in html

    plots = pd.read_csv(tmp_path / "out" / "plots" / "acc_vs_temperature.csv", dtype={"temperature": str})
    assert list(plots.columns) == ["dataset", "student_size", "temperature", "test_accuracy"]
    assert len(plots) == len(SIZES) * len(TEMPS)
    assert set(plots["temperature"]) == set(TEMPS)


def test_report_is_deterministic_and_warning_conditional(inputs, tmp_path):
    a = build(inputs, tmp_path / "a")
    b = build(inputs, tmp_path / "b")
    assert a == b
    synthetic_results("plain", teacher_mmp=0.9).to_csv(inputs["results_csv"], index=False)
    inputs["benchmarks"] = None
    c = build(inputs, tmp_path / "c")
    assert "near one-hot" not in c
    assert "plain: the best distilled configuration" in c
    assert "No benchmark data was recorded." in c
