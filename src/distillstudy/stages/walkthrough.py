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

Bias² + variance (``walkthrough_variance.csv``; seed-notes.md's account of distillation is
variance reduction: a target E[Y|X], or a teacher's estimate of it, makes the learned
predictor vary less across training sets). Every fitted model of every trial and every n
is also evaluated on ONE fixed set of ``EVAL_POINTS`` points x = 10 N(0, 1), drawn by
their own generator ``np.random.default_rng([rng_seed, EVAL_STREAM])`` (so the pools'
stream and walkthrough.csv are untouched). Per (n, model) in ``VARIANCE_MODELS``, over the
trials used, ``distillstudy.analysis.bias_variance.decompose`` gives bias², variance
(ddof = 0) and mse = bias² + variance of the predicted p(y = 1 | x) against
``true_probability``, averaged over the points; each model's variance is divided by the
hard-label student's, with a paired bootstrap 95% CI over trials
(``bias_variance.variance_ratio``, resampling seeded by ``[rng_seed, BOOTSTRAP_STREAM, n,
model]``, so a row does not depend on which other n are run). The trials of one n are
independent; different n reuse the same pools (the generator is fresh per n), so the rows
of different n are not independent replications of each other.
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

from distillstudy.analysis import bias_variance  # noqa: E402
from distillstudy.artifacts import atomic_path, write_text  # noqa: E402
from distillstudy.engine.datasets import sine_probability  # noqa: E402

DEFAULT_N_VALUES = tuple(range(10, 50, 5))
MODELS = ("student", "teacher", "distilled", "oracle_distilled", "truth")
SPLITS = ("train", "test")
COLUMNS = ["n_train", "model", "split", "log_loss"]
#: The fixed evaluation points of the bias-variance decomposition: how many, and the
#: second entropy word of their generator (the pools' generator is default_rng(rng_seed)).
EVAL_POINTS = 2000
EVAL_STREAM = 1
#: The bootstrap's generator: default_rng([rng_seed, BOOTSTRAP_STREAM, n, model index]).
BOOTSTRAP_STREAM = 2
#: The models decomposed, the hard-label student (every ratio's denominator) first.
VARIANCE_MODELS = ("student", "distilled", "oracle_distilled", "teacher")
VARIANCE_COLUMNS = ["n_train", "model", "trials", "bias2", "variance", "mse",
                    "variance_ratio", "ratio_low", "ratio_high"]


def draw_pool(rng: np.random.Generator, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one trial's pool. The order (x first, then y) fixes the RNG stream."""
    x = rng.standard_normal(pool_size) * 10
    y = rng.binomial(1, 0.4 * np.sin(x) + 0.5)
    return x, y


def true_probability(x: np.ndarray) -> np.ndarray:
    """p(y = 1 | x) of the walkthrough's distribution (the sine dataset's), flat."""
    return sine_probability(np.ravel(x))


def eval_points(rng_seed: int, size: int = EVAL_POINTS) -> np.ndarray:
    """The decomposition's fixed points, x = 10 N(0, 1) as the pools' x, shape (size, 1)."""
    return (np.random.default_rng([rng_seed, EVAL_STREAM]).standard_normal(size) * 10).reshape(-1, 1)


def _fit_and_score(x_train, x_test, y_train, y_test, degree: int,
                   x_eval=None) -> tuple[dict[tuple[str, str], float], dict[str, np.ndarray]]:
    """Fit the models on one split; return log loss per (model, split), and each model's
    p(y = 1 | x) at `x_eval` per model of VARIANCE_MODELS (empty when `x_eval` is None)."""
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
    scores = {
        (model, split): log_loss(y, proba[model](x), labels=[0, 1])
        for model in MODELS
        for split, (x, y) in data.items()
    }
    return scores, ({} if x_eval is None else {model: proba[model](x_eval) for model in VARIANCE_MODELS})


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
    return walkthrough_trials(n_values, trials, pool_size, rng_seed, split_seed, degree)[0]


def walkthrough_trials(n_values=DEFAULT_N_VALUES, trials: int = 15, pool_size: int = 10_000,
                       rng_seed: int = 1234, split_seed: int = 42, degree: int = 3,
                       x_eval: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """`run_walkthrough`'s table, and the p(y = 1 | x) at `x_eval` (points, 1) of every used
    trial's models: ``{n: {model: array (trials used, points)}}`` for the models of
    VARIANCE_MODELS ({} when `x_eval` is None). Predicting draws nothing from the pools'
    generator, so the table is the same either way.
    """
    rows = []
    trials_used: dict[int, int] = {}
    predictions: dict[int, dict[str, np.ndarray]] = {}
    for n in n_values:
        n = int(n)
        rng = np.random.default_rng(rng_seed)  # fresh per n, as in the walkthrough
        scores: list[dict[tuple[str, str], float]] = []
        preds: list[dict[str, np.ndarray]] = []
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
            trial_scores, trial_preds = _fit_and_score(x_train, x_test, y_train, y_test, degree, x_eval)
            scores.append(trial_scores)
            preds.append(trial_preds)
        if not scores:
            raise RuntimeError(f"n={n}: every training split held a single class")
        trials_used[n] = len(scores)
        if x_eval is not None:
            predictions[n] = {m: np.stack([p[m] for p in preds]) for m in VARIANCE_MODELS}
        for model in MODELS:
            for split in SPLITS:
                mean = float(np.mean([s[(model, split)] for s in scores]))
                rows.append({"n_train": n, "model": model, "split": split, "log_loss": mean})

    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.sort_values(["n_train", "model", "split"], kind="mergesort").reset_index(drop=True)
    df.attrs["trials_used"] = trials_used
    return df, predictions


def variance_table(predictions: dict, x_eval: np.ndarray, rng_seed: int) -> pd.DataFrame:
    """Bias², variance (ddof = 0) and mse per (n_train, model) of `predictions` (as from
    `walkthrough_trials`) against the true probability at `x_eval`; for every model but
    the student, its variance ÷ the student's with the paired bootstrap 95% CI over trials
    (NaN in the student's row). Rows by n, then in VARIANCE_MODELS order."""
    p_true = true_probability(x_eval)
    rows = []
    for n, by_model in predictions.items():
        for k, model in enumerate(VARIANCE_MODELS):
            ratio = (np.nan, np.nan, np.nan) if model == VARIANCE_MODELS[0] else bias_variance.variance_ratio(
                by_model[model], by_model[VARIANCE_MODELS[0]], seed=[rng_seed, BOOTSTRAP_STREAM, n, k])
            rows.append({"n_train": n, "model": model, "trials": len(by_model[model]),
                         **bias_variance.decompose(by_model[model], p_true),
                         **dict(zip(VARIANCE_COLUMNS[-3:], ratio))})
    return pd.DataFrame(rows, columns=VARIANCE_COLUMNS)


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
    """Write the table (either of the two) as CSV with fixed float formatting (deterministic
    bytes; NaN as an empty field)."""
    write_text(out_csv, df.to_csv(index=False, float_format="%.10g"))


def run(*, n_train: list[int], trials: int, pool_size: int, rng_seed: int, split_seed: int, degree: int,
        out_csv: str, out_test_png: str, out_train_png: str,
        out_variance_csv: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The stage: the experiment, its table and its two log-loss plots, and (with
    `out_variance_csv`) the bias-variance table; returns both tables (None: not asked)."""
    x_eval = None if out_variance_csv is None else eval_points(rng_seed)
    frame, predictions = walkthrough_trials(n_train, trials=trials, pool_size=pool_size, rng_seed=rng_seed,
                                            split_seed=split_seed, degree=degree, x_eval=x_eval)
    write_walkthrough(frame, out_csv)
    variance = None
    if out_variance_csv is not None:
        variance = variance_table(predictions, x_eval, rng_seed)
        write_walkthrough(variance, out_variance_csv)
    plot_log_loss(frame, "test", out_test_png)
    plot_log_loss(frame, "train", out_train_png)
    return frame, variance
