"""The variance design (params.yaml designs.resamples): does distillation lower the
variance of the learned predictor across training sets, as the seed's explanation says?

For each of R bootstrap resamples r of the training split (grid.py's `resample-<r>`
variants; each with its teacher refitted on it, stages/transfer_sets.py) the hard-label
student and the KD students are retrained with the same replicate seeds as every other
cell. Replicate s therefore has R students per cell that differ only in their training
set (initial weights and seeded batch order are s's), and for test point i

    p_{r,s}(i)  = the predicted probability of the true class y_i,
    var_s(i)    = (1/R) sum_r (p_{r,s}(i) - mean_r p_{r,s}(i))^2      (ddof 0),
    V_s         = mean_i var_s(i)                                     (`var_p_true`),

and likewise for the per-point log loss -log p_{r,s}(i) (`var_log_loss`). Where the true
p(y = 1 | x) is known (the sine data: 0.4 sin x + 0.5), the probability q_{r,s}(i) of
class 1 decomposes against it exactly (ddof 0, hence the identity):

    mean_r (q_{r,s}(i) - p*(i))^2 = (mean_r q_{r,s}(i) - p*(i))^2 + var_r q_{r,s}(i),
    `mse`                         = `bias2`                       + `variance`     (means over i).

reports/variance.csv holds these per (dataset, family, student size, cell, seed), with the
cell's mean validation accuracy and NLL over the resamples (to choose the KD temperature,
as stats.best_temperature does: highest mean validation accuracy, ties lower NLL, lower T,
lower alpha) and mean test accuracy. `summary` pairs them by seed: the variance ratio
soft / hard per seed, its geometric mean over seeds with a Student-t interval on the log
ratios (stats.paired_diff_ci), and the paired test-accuracy gain.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from distillstudy.analysis import metrics, stats
from distillstudy.artifacts import read_record
from distillstudy.grid import RESAMPLES, format_number, number_value, parse_variant

COLUMNS = ["dataset", "family", "student_size", "model", "temperature", "alpha", "seed", "metric", "value"]
SUMMARY_COLUMNS = [
    "dataset", "family", "student_size", "temperature", "alpha", "n_resamples", "n_seeds",
    "var_hard", "var_soft", "ratio", "ratio_lo", "ratio_hi", "ll_ratio", "ll_ratio_lo", "ll_ratio_hi",
    "acc_hard", "acc_soft", "gain_mean", "gain_lo", "gain_hi",
    "bias2_hard", "bias2_soft", "variance_hard", "variance_soft", "mse_hard", "mse_soft",
]


def _true_class_probability(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, n) probabilities of each point's true class, from (R, n, C) logits."""
    p = metrics.softmax(logits.astype(np.float64))
    return np.take_along_axis(p, y[None, :, None], axis=2)[..., 0]


def seed_scores(logits_test: np.ndarray, logits_val: np.ndarray, data: dict, truth: np.ndarray | None) -> dict:
    """One replicate's scores across its R resampled students: logits (R, n, C) per split."""
    y_test, y_val = data["y_test"], data["y_val"]
    p = _true_class_probability(logits_test, y_test)
    scores = {"var_p_true": float(p.var(axis=0).mean()),
              "var_log_loss": float((-np.log(np.clip(p, 1e-300, None))).var(axis=0).mean()),
              "test_accuracy": float(np.mean([metrics.accuracy(l, y_test) for l in logits_test])),
              "val_accuracy": float(np.mean([metrics.accuracy(l, y_val) for l in logits_val])),
              "val_nll": float(np.mean([metrics.nll(l, y_val) for l in logits_val])),
              "n_resamples": float(len(logits_test))}
    if truth is not None:  # binary data with a known p(y = 1 | x)
        q = metrics.softmax(logits_test.astype(np.float64))[..., 1]
        bias2 = float(((q.mean(axis=0) - truth) ** 2).mean())
        variance = float(q.var(axis=0).mean())
        scores.update(bias2=bias2, variance=variance, mse=float(((q - truth) ** 2).mean()))
    return scores


def build(datasets: dict[str, tuple[dict, np.ndarray | None]], design_cells) -> pd.DataFrame:
    """`datasets`: name -> (prepared arrays, the true p(y = 1 | x_test) or None where it is
    unknown); `design_cells`: every design cell, loaded (artifacts.load_npz; cells of other
    variants are skipped). Long format, COLUMNS."""
    groups: dict[tuple, dict[int, dict]] = {}
    for cell in design_cells:
        record = read_record(cell)
        parsed = parse_variant(record.get("variant", "reference"))
        if parsed["axis"] != RESAMPLES:
            continue
        key = (record["dataset"], record["family"], int(record["student_size"]), record["cell"])
        groups.setdefault(key, {})[parsed["value"]] = (record, cell)
    rows = []
    for (dataset, family, size, _), by_r in sorted(groups.items()):
        if dataset not in datasets:
            raise ValueError(f"resample cells of dataset {dataset!r}, which has no prepared data in this run")
        data, truth = datasets[dataset]
        if len(by_r) < 2:
            raise ValueError(f"{dataset}, size {size}: {len(by_r)} resample(s); a variance needs at least 2")
        resamples = sorted(by_r)
        record = by_r[resamples[0]][0]
        for r in resamples[1:]:
            if by_r[r][0]["seeds"] != record["seeds"]:
                raise ValueError(f"{dataset}, size {size}, {record['cell']}: resample {r} has other seeds "
                                 f"than resample {resamples[0]}: the replicates would not be paired")
        base = {"dataset": dataset, "family": family, "student_size": size, "model": record["model"],
                "temperature": format_number(record.get("temperature")), "alpha": format_number(record["alpha"])}
        for member, seed in enumerate(record["seeds"]):
            test = np.stack([by_r[r][1]["logits_test"][member] for r in resamples])
            val = np.stack([by_r[r][1]["logits_val"][member] for r in resamples])
            for metric, value in seed_scores(test, val, data, truth).items():
                rows.append({**base, "seed": seed, "metric": metric, "value": value})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {"baseline": 0, "distilled": 1}
    key = frame.assign(_m=frame["model"].map(order), _t=frame["temperature"].map(number_value))
    return key.sort_values(["dataset", "family", "student_size", "_m", "_t", "alpha", "seed", "metric"],
                           kind="mergesort")[COLUMNS].reset_index(drop=True)


def load(path) -> pd.DataFrame | None:
    """variance.csv as written by `evaluate` (None when absent or empty: no variance design)."""
    if path is None:
        return None
    frame = pd.read_csv(path, dtype={"temperature": str, "alpha": str, "family": str, "model": str},
                        keep_default_na=False, na_values=[""])
    return None if frame.empty else frame


def _per_seed(frame: pd.DataFrame, model: str, metric: str, temperature=None, alpha=None) -> pd.Series:
    sel = frame[(frame["model"] == model) & (frame["metric"] == metric)]
    if temperature is not None:
        sel = sel[(sel["temperature"].astype(str) == temperature) & (sel["alpha"].astype(str) == alpha)]
    return sel.set_index("seed")["value"].astype(float)


def _ratio_ci(soft: pd.Series, hard: pd.Series, confidence: float) -> tuple[float, float, float]:
    """Geometric mean over seeds of soft / hard, with a t interval on the log ratios."""
    both = pd.concat([soft, hard], axis=1, keys=["soft", "hard"]).dropna()
    both = both[(both["soft"] > 0) & (both["hard"] > 0)]
    ci = stats.paired_diff_ci(np.log(both["soft"]) - np.log(both["hard"]), confidence)
    return tuple(math.exp(ci[k]) if np.isfinite(ci[k]) else float("nan") for k in ("mean", "lo", "hi"))


def choose_temperature(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The KD cell (temperature, alpha) with the highest mean validation accuracy over seeds
    (ties: lower validation NLL, lower T, lower alpha): stats.best_temperature's rule."""
    kd = frame[frame["model"] == "distilled"]
    if kd.empty:
        return None
    means = kd[kd["metric"].isin(["val_accuracy", "val_nll"])].pivot_table(
        index=["temperature", "alpha"], columns="metric", values="value", aggfunc="mean")
    ranked = sorted(means.itertuples(), key=lambda r: (-round(r.val_accuracy, 12), round(r.val_nll, 12),
                                                       number_value(r.Index[0]), number_value(r.Index[1])))
    return ranked[0].Index


def summary(frame: pd.DataFrame | None, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, family, student size): the validation-chosen KD cell against the
    hard-label students, paired by seed (SUMMARY_COLUMNS)."""
    rows = []
    if frame is None or frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    for (dataset, family, size), g in frame.groupby(["dataset", "family", "student_size"], sort=True):
        chosen = choose_temperature(g)
        if chosen is None or not (g["model"] == "baseline").any():
            continue
        t, a = chosen

        def pair(metric):
            return _per_seed(g, "distilled", metric, t, a), _per_seed(g, "baseline", metric)
        soft, hard = pair("var_p_true")
        ratio = _ratio_ci(soft, hard, confidence)
        ll_ratio = _ratio_ci(*pair("var_log_loss"), confidence)
        acc_soft, acc_hard = pair("test_accuracy")
        gain = stats.paired_diff_ci((acc_soft - acc_hard).dropna(), confidence)
        row = {"dataset": dataset, "family": family, "student_size": int(size), "temperature": t, "alpha": a,
               "n_resamples": int(_per_seed(g, "baseline", "n_resamples").iloc[0]), "n_seeds": int(len(hard)),
               "var_hard": hard.mean(), "var_soft": soft.mean(), "ratio": ratio[0], "ratio_lo": ratio[1],
               "ratio_hi": ratio[2], "ll_ratio": ll_ratio[0], "ll_ratio_lo": ll_ratio[1], "ll_ratio_hi": ll_ratio[2],
               "acc_hard": acc_hard.mean(), "acc_soft": acc_soft.mean(), "gain_mean": gain["mean"],
               "gain_lo": gain["lo"], "gain_hi": gain["hi"]}
        for metric in ("bias2", "variance", "mse"):
            s, h = pair(metric)
            row[f"{metric}_hard"], row[f"{metric}_soft"] = (h.mean(), s.mean()) if len(h) else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
