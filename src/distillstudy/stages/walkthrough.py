"""Reproduce the blog walkthrough's "sine" knowledge-distillation experiment.

This module re-runs, exactly, the toy experiment from the walkthrough that
motivates the study: a student trained on the *teacher's logits* beats the same
student trained on hard labels when training data is scarce.

Protocol (all defaults are the walkthrough's):

* For each n in ``n_values`` (default 10, 15, ..., 45) a fresh generator
  ``np.random.default_rng(rng_seed)`` is created, so every n sees the same
  sequence of pools.
* ``trials`` times, a pool of ``pool_size`` points is drawn from that generator,
  in this order: ``x = rng.standard_normal(pool_size) * 10`` and then
  ``y = rng.binomial(1, 0.4 * np.sin(x) + 0.5)``.
* ``train_test_split(x, y, test_size=1 - n / pool_size, random_state=split_seed)``
  keeps n training points; the rest of the pool is the test set.
* Three models:
    - student:   PolynomialFeatures(degree) + LogisticRegression on hard labels;
    - teacher:   FunctionTransformer(np.sin) + LogisticRegression (knows the
                 true feature, so it is the best we can hope for);
    - distilled: PolynomialFeatures(degree) + LinearRegression fitted to the
                 teacher's logits on the training points (logit matching); its
                 probability is ``expit`` of its prediction.
* Beside the walkthrough's three (issue "Fair baselines"; they leave the three unchanged):
    - oracle_distilled: the same polynomial regression fitted to the TRUE logits
                 logit(0.4 sin x + 0.5) on the training points: distillation from the
                 oracle teacher, the upper bound of what any teacher can give this student;
    - truth:     the true probability 0.4 sin x + 0.5 itself (the Bayes floor of the log
                 loss; its train log loss is that of the n drawn points).
  How much of the oracle's gain the trained teacher delivers:
  (student - distilled) / (student - oracle_distilled), in log loss.
* Metric: ``log_loss`` of the predicted probability of class 1, on train and on
  test, averaged over the trials of each n.

A training split that holds a single class cannot be fitted by
LogisticRegression; such a trial is skipped for all three models (so the
averages stay comparable) and the number of trials used per n is kept in
``df.attrs["trials_used"]``. The pool is still drawn, so later trials are
unaffected by a skip.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # no display: the figure only ever goes to a file

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy.special import expit  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures  # noqa: E402

from distillstudy.artifacts import atomic_path, write_text  # noqa: E402
from distillstudy.engine.datasets import sine_probability  # noqa: E402

DEFAULT_N_VALUES = tuple(range(10, 50, 5))
MODELS = ("student", "teacher", "distilled", "oracle_distilled", "truth")
SPLITS = ("train", "test")
COLUMNS = ["n_train", "model", "split", "log_loss"]


def draw_pool(rng: np.random.Generator, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one trial's pool. The order (x first, then y) fixes the RNG stream."""
    x = rng.standard_normal(pool_size) * 10
    y = rng.binomial(1, 0.4 * np.sin(x) + 0.5)
    return x, y


def true_probability(x: np.ndarray) -> np.ndarray:
    """p(y = 1 | x) of the walkthrough's distribution (the sine dataset's), flat."""
    return sine_probability(np.ravel(x))


def _fit_and_score(x_train, x_test, y_train, y_test, degree: int) -> dict[tuple[str, str], float]:
    """Fit the models on one split; return log loss per (model, split)."""
    student = make_pipeline(PolynomialFeatures(degree), LogisticRegression(max_iter=1000))
    student.fit(x_train, y_train)

    teacher = make_pipeline(FunctionTransformer(np.sin), LogisticRegression(max_iter=1000))
    teacher.fit(x_train, y_train)

    # Logit matching: regress the teacher's logits, not its labels.
    distilled = make_pipeline(PolynomialFeatures(degree), LinearRegression())
    distilled.fit(x_train, teacher.decision_function(x_train))

    # The oracle teacher: the true logits, log(p / (1 - p)).
    oracle = make_pipeline(PolynomialFeatures(degree), LinearRegression())
    p_train = true_probability(x_train)
    oracle.fit(x_train, np.log(p_train) - np.log1p(-p_train))

    proba = {
        "student": lambda x: student.predict_proba(x)[:, 1],
        "teacher": lambda x: teacher.predict_proba(x)[:, 1],
        "distilled": lambda x: expit(distilled.predict(x)),
        "oracle_distilled": lambda x: expit(oracle.predict(x)),
        "truth": true_probability,
    }
    data = {"train": (x_train, y_train), "test": (x_test, y_test)}
    # labels=[0, 1] so the metric is defined whatever classes a split happens to hold.
    return {
        (model, split): log_loss(y, proba[model](x), labels=[0, 1])
        for model in MODELS
        for split, (x, y) in data.items()
    }


def run_walkthrough(
    n_values=DEFAULT_N_VALUES,
    trials: int = 15,
    pool_size: int = 10_000,
    rng_seed: int = 1234,
    split_seed: int = 42,
    degree: int = 3,
) -> pd.DataFrame:
    """Run the protocol; return mean log loss per (n_train, model, split), long format.

    ``df.attrs["trials_used"]`` maps each n to the number of trials that had both
    classes in their training split (and so were averaged).
    """
    rows = []
    trials_used: dict[int, int] = {}
    for n in n_values:
        n = int(n)
        rng = np.random.default_rng(rng_seed)  # fresh per n, as in the walkthrough
        scores: list[dict[tuple[str, str], float]] = []
        for _ in range(trials):
            x, y = draw_pool(rng, pool_size)
            x_train, x_test, y_train, y_test = train_test_split(
                x.reshape(-1, 1), y, test_size=1 - n / pool_size, random_state=split_seed
            )
            # Guard against float rounding in test_size silently changing n.
            if len(y_train) != n:
                raise RuntimeError(f"train split has {len(y_train)} points, expected {n}")
            if np.unique(y_train).size < 2:
                continue  # LogisticRegression cannot fit one class; skip the whole trial
            scores.append(_fit_and_score(x_train, x_test, y_train, y_test, degree))
        if not scores:
            raise RuntimeError(f"n={n}: every training split held a single class")
        trials_used[n] = len(scores)
        for model in MODELS:
            for split in SPLITS:
                mean = float(np.mean([s[(model, split)] for s in scores]))
                rows.append({"n_train": n, "model": model, "split": split, "log_loss": mean})

    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.sort_values(["n_train", "model", "split"], kind="mergesort").reset_index(drop=True)
    df.attrs["trials_used"] = trials_used
    return df


def plot_log_loss(df: pd.DataFrame, split: str, out_path: str | os.PathLike) -> None:
    """Line plot of mean log loss against n_train, one line per model, for one split."""
    sub = df[df["split"] == split]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    try:
        sns.lineplot(
            data=sub,
            x="n_train",
            y="log_loss",
            hue="model",
            hue_order=["student", "distilled", "oracle_distilled", "teacher", "truth"],  # stable colours
            marker="o",
            ax=ax,
        )
        ax.set_title(f"Sine walkthrough: mean {split} log loss")
        ax.set_xlabel("training points (n)")
        ax.set_ylabel(f"{split} log loss")
        fig.tight_layout()
        # Atomic write; Software=None keeps version strings out, so reruns are byte-identical.
        with atomic_path(out_path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)


def write_walkthrough(df: pd.DataFrame, out_csv: str | os.PathLike) -> None:
    """Write the table as CSV with fixed float formatting (deterministic bytes)."""
    write_text(out_csv, df.to_csv(index=False, float_format="%.10g"))


def run(*, n_train: list[int], trials: int, pool_size: int, rng_seed: int, split_seed: int, degree: int,
        out_csv: str, out_test_png: str, out_train_png: str) -> pd.DataFrame:
    """The stage: the experiment, its table and its two log-loss plots; returns the table."""
    frame = run_walkthrough(n_train, trials=trials, pool_size=pool_size, rng_seed=rng_seed,
                            split_seed=split_seed, degree=degree)
    write_walkthrough(frame, out_csv)
    plot_log_loss(frame, "test", out_test_png)
    plot_log_loss(frame, "train", out_train_png)
    return frame
