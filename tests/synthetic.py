"""Synthetic inputs for building a report in a second, without running a study:
a long results table (six objectives, two alphas, planted gains), the matching reliability bins, a walkthrough table and
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
ALPHAS = (0.5, 0.9)
SEEDS = (0, 1, 2)
METRICS = ("accuracy", "nll", "ece", "brier", "agreement", "kl_teacher", "mean_max_prob")
N_BINS = 10
#: (model, objective, setting, temperature, beta, gamma, dkd_alpha, planted accuracy gain at
#: the smallest size and alpha 0.5). kd: gains grow with T (T = 4 best on validation);
#: dkd's beta 8 is the best objective and dist is close behind it (the two cannot be told
#: apart); ls_kd has no effect; nkd hurts.
OBJECTIVE_CELLS = (
    *(("distilled", "kd", f"T{T}", T, "", "", "", 0.01 * (i + 1)) for i, T in enumerate(TEMPS)),
    ("logit_mse", "logit_mse", "", "", "", "", "", 0.005),
    ("dkd", "dkd", "alpha1_beta2_T4", "4", 2, "", 1, 0.02),
    ("dkd", "dkd", "alpha1_beta8_T4", "4", 8, "", 1, 0.03),
    ("dist", "dist", "beta1_gamma1_T4", "4", 1, 1, "", 0.029),
    ("ls_kd", "ls_kd", "T2", "2", "", "", "", 0.0),
    ("nkd", "nkd", "gamma1.5_T1", "1", "", 1.5, "", -0.02),
)
#: How a planted gain scales with the student size (half as large at 64) and alpha.
SIZE_SCALE = {16: 1.0, 64: 0.5}
ALPHA_SCALE = {0.5: 1.0, 0.9: 0.75}


def student_cells():
    """(model, objective, setting, temperature, alpha, beta, gamma, dkd_alpha, gain at size 16)
    of every student cell: the baseline, then every objective cell at every alpha."""
    cells = [("baseline", "", "", "", 0.0, "", "", "", 0.0)]
    for model, objective, setting, T, beta, gamma, dkd_alpha, gain in OBJECTIVE_CELLS:
        cells += [(model, objective, setting, T, a, beta, gamma, dkd_alpha, gain * ALPHA_SCALE[a]) for a in ALPHAS]
    return cells


def synthetic_results(dataset: str = EVIL, teacher_mmp: float = 0.995, *, family: str = "mlp",
                      gain_scale: float = 1.0, offset: float = 0.0, teacher: bool = True, rng_seed: int = 0
                      ) -> pd.DataFrame:
    """The results contract (stats.COLUMNS) for two sizes, three seeds, six objectives at
    two alphas, with the gains of OBJECTIVE_CELLS (times `gain_scale`) planted on validation
    and test alike, for the students of `family` (accuracy + `offset`); the teacher's rows
    unless `teacher` is False (to concatenate a second family's)."""
    rng = np.random.default_rng(rng_seed)
    rows = []

    def add(cell, size, seed, split, metric, value):
        model, objective, setting, T, alpha, beta, gamma, dkd_alpha = cell
        rows.append({"dataset": dataset, "family": "" if model == "teacher" else family, "model": model, "objective": objective, "setting": setting,
                     "student_size": size, "temperature": T, "alpha": alpha, "beta": beta, "gamma": gamma,
                     "dkd_alpha": dkd_alpha, "seed": seed, "split": split, "metric": metric, "value": value})

    if teacher:
        cell = ("teacher", "", "", "", "", "", "", "")
        for split in ("train", "val", "test"):
            add(cell, "", 0, split, "accuracy", 0.93)
            add(cell, "", 0, split, "nll", 0.25)
            add(cell, "", 0, split, "mean_max_prob", teacher_mmp if split == "train" else 0.9)
        add(cell, "", 0, "all", "n_params", 100000)
    for size in SIZES:
        for seed in SEEDS:
            seed_fx = rng.normal(0, 0.01)
            for *cell, gain in student_cells():
                for split in ("train", "val", "test"):
                    acc = (0.80 + offset + size / 1000 + seed_fx + gain_scale * gain * SIZE_SCALE[size]
                           + rng.normal(0, 0.002))
                    vals = {"accuracy": acc, "nll": 1.2 - acc, "ece": 0.05, "brier": 0.3,
                            "agreement": acc + 0.05, "kl_teacher": 0.2, "mean_max_prob": 0.8}
                    for metric in METRICS:
                        add(cell, size, seed, split, metric, vals[metric])
                add(cell, size, seed, "all", "n_params", size * 50)
    return pd.DataFrame(rows, columns=stats.COLUMNS)


def two_family_results(dataset: str = "toy") -> pd.DataFrame:
    """One dataset, one teacher, and two student families of the same sizes (SIZES) and
    seeds: "mlp" students with no effect of any objective (gain_scale 0), "cnn" students
    2 pp more accurate with OBJECTIVE_CELLS' gains planted (kd at T = 4: +2 pp at size 16,
    alpha 0.5). Pairing or pooling across families would mix the two."""
    return pd.concat([synthetic_results(dataset, family="mlp", gain_scale=0.0),
                      synthetic_results(dataset, family="cnn", offset=0.02, teacher=False, rng_seed=7)],
                     ignore_index=True)


def synthetic_calibration(dataset: str = EVIL, n: int = 200, families=("mlp",)) -> pd.DataFrame:
    """Reliability bins for every model and seed of `synthetic_results` (test split), for
    the students of every family in `families`."""
    rng = np.random.default_rng(1)
    rows = []

    def add(cell, size, seed, sharpness, family=""):
        model, objective, setting, T, alpha, beta, gamma, dkd_alpha = cell
        conf = np.clip(rng.beta(sharpness, 1.5, size=n), 1e-6, 1.0)
        correct = rng.random(n) < conf * 0.95
        b = np.clip(np.ceil(conf * N_BINS).astype(int) - 1, 0, N_BINS - 1)
        for k in range(N_BINS):
            m = b == k
            rows.append({"dataset": dataset, "family": family, "model": model, "objective": objective,
                         "setting": setting, "student_size": size, "temperature": T, "alpha": alpha, "beta": beta,
                         "gamma": gamma, "dkd_alpha": dkd_alpha, "seed": seed, "split": "test", "bin": k, "bin_lower": k / N_BINS,
                         "bin_upper": (k + 1) / N_BINS, "count": int(m.sum()),
                         "mean_confidence": float(conf[m].mean()) if m.any() else np.nan,
                         "accuracy": float(correct[m].mean()) if m.any() else np.nan})

    add(("teacher", "", "", "", "", "", "", ""), "", 0, 8.0)
    for family in families:
        for size in SIZES:
            for seed in SEEDS:
                for *cell, _gain in student_cells():
                    add(cell, size, seed, 6.0 if cell[0] == "baseline" else 4.0, family)
    return pd.DataFrame(rows, columns=stats.CALIBRATION_COLUMNS)


def walkthrough_table() -> pd.DataFrame:
    return pd.DataFrame([{"n_train": n, "model": m, "split": s, "log_loss": v}
                         for n in (10, 15) for s in ("train", "test")
                         for m, v in (("student", 0.70), ("distilled", 0.62), ("teacher", 0.55))])


def walkthrough_variance_table() -> pd.DataFrame:
    """The walkthrough's bias² + variance table for n = 10, 15: the distilled student's
    variance ratio has a CI below 1 at n = 10 and one that holds 1 at n = 15."""
    ratios = {10: (0.4, 0.25, 0.6), 15: (0.8, 0.5, 1.2)}
    rows = []
    for n, (ratio, lo, hi) in ratios.items():
        rows.append({"n_train": n, "model": "student", "trials": 15, "bias2": 0.08, "variance": 0.1, "mse": 0.18,
                     "variance_ratio": None, "ratio_low": None, "ratio_high": None})
        rows.append({"n_train": n, "model": "distilled", "trials": 15, "bias2": 0.07, "variance": 0.1 * ratio,
                     "mse": 0.07 + 0.1 * ratio, "variance_ratio": ratio, "ratio_low": lo, "ratio_high": hi})
    return pd.DataFrame(rows)


def png(path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([10, 20, 30], [0.7, 0.6, 0.5])
    ax.set_title(title)
    fig.savefig(path, format="png", dpi=50, metadata={"Software": None})
    plt.close(fig)


#: distill.students of `two_family_results`: the mlp listed first (the report's order), cnn second.
TWO_FAMILIES = [{"family": "mlp", "sizes": list(SIZES)}, {"family": "cnn", "sizes": list(SIZES)}]


def report_inputs(tmp_path, dataset: str = EVIL, two_families: bool = False) -> dict:
    """Keyword arguments of the report stage's `run` (less the outputs), files under tmp_path;
    with `two_families`, the results and bins of `two_family_results`."""
    results = tmp_path / "results.csv"
    (two_family_results(dataset) if two_families else synthetic_results(dataset)).to_csv(results, index=False)
    calibration = tmp_path / "calibration.csv"
    synthetic_calibration(dataset, families=("mlp", "cnn") if two_families else ("mlp",)).to_csv(
        calibration, index=False)
    wt_csv = tmp_path / "walkthrough.csv"
    walkthrough_table().to_csv(wt_csv, index=False)
    wt_var_csv = tmp_path / "walkthrough_variance.csv"
    walkthrough_variance_table().to_csv(wt_var_csv, index=False)
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
        "walkthrough_variance": wt_var_csv,
        "params": {"study": {"name": EVIL, "temperatures": [1, 4]},
                   "distill": {"alpha": 0.5, **({"students": TWO_FAMILIES} if two_families else {})}},
        "dataset_meta": [meta],
        "provenance_record": {"git_commit": "deadbeef", "dirty": "false", "note": "<b>x</b>"},
        "benchmarks": benchmarks,
    }


#: The teacher knobs of the small sine studies below (the sine teacher is a convex fit: the
#: epochs knobs do not move it).
SINE_KNOBS = dict(max_epochs=3, patience=2, batch_size=16, lr=0.01, weight_decay=0.0, cnn_channels=4, mlp_width=8,
                  dropout=0.0)


def sine_with_teacher(knobs: dict = SINE_KNOBS) -> None:
    """In the working directory: a small prepared sine dataset (s.npz, s.json: 80 training
    points, 60 test points, seed 3) and its teacher (t.pt, t.npz, t.json)."""
    from distillstudy.engine import datasets
    from distillstudy.stages import teacher

    datasets.prepare("sine", "sine", "s.npz", "s.json", n_train=80, n_test=60, seed=3, val_fraction=0.25,
                     test_fraction=0.25)
    teacher.run(data="s.npz", meta="s.json", global_seed=3, out_model="t.pt", out_logits="t.npz", out_meta="t.json",
                **knobs)
