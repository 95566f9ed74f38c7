"""Bias² + variance of a learned predictor across independent training sets, and a
paired bootstrap CI for the ratio of two models' variances.

The input is one model's predictions `p` of shape (T, P): row t is the model fitted on
trial t's training set, evaluated at P fixed points x_j shared by every trial, and the
truth `p_true` (P,). With the plug-in (ddof = 0) moments over the T trials,

    pbar(x_j)  = (1/T) sum_t p_t(x_j)
    bias2      = (1/P) sum_j (pbar(x_j) - p_true(x_j))^2
    variance   = (1/P) sum_j (1/T) sum_t (p_t(x_j) - pbar(x_j))^2
    mse        = (1/P) sum_j (1/T) sum_t (p_t(x_j) - p_true(x_j))^2  =  bias2 + variance

and the last identity is exact (expand the square around pbar; the cross term sums to
zero). With ddof = 1 the variance would be T/(T - 1) times this one and bias2 + variance
would exceed the mse by variance/(T - 1); the ratio of two models' variances over the
same trials is the same under either convention, the (T - 1)/T factors cancel.

    >>> p = np.array([[0.25, 0.75], [0.75, 0.25]])      # two trials, two points
    >>> decompose(p, np.array([0.25, 0.5]))
    {'bias2': 0.03125, 'variance': 0.0625, 'mse': 0.09375}
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

#: The bootstrap's resamples and percentile CI (scipy.stats.bootstrap's defaults, named once).
N_RESAMPLES = 9999
CONFIDENCE = 0.95


def decompose(p: np.ndarray, p_true: np.ndarray) -> dict[str, float]:
    """bias2, variance (ddof = 0) and mse of predictions `p` (trials x points) against
    `p_true` (points), each averaged over the points (formulas: the module docstring)."""
    p = np.asarray(p, dtype=float)
    pbar = p.mean(axis=0)
    bias2 = float(np.mean((pbar - p_true) ** 2))
    variance = float(np.mean(np.var(p, axis=0, ddof=0)))
    return {"bias2": bias2, "variance": variance, "mse": bias2 + variance}


def _centred_gram(p: np.ndarray) -> np.ndarray:
    """G[s, t] = (1/P) sum_j q_s(x_j) q_t(x_j), q = p - pbar: all a resample's variance needs.

    Centring first makes a constant model's G exactly zero (its variance exactly 0), and the
    variance is unchanged by it (a shift per point)."""
    q = p - p.mean(axis=0)
    return q @ q.T / q.shape[1]


def _resampled_variance(gram: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The point-averaged ddof-0 variance of the trials `idx` (..., T; repeats allowed):
    (1/T) sum_k G[i_k, i_k] - (1/T^2) sum_{k,l} G[i_k, i_l]. One T x T gather per resample
    instead of T x P: the bootstrap costs nothing next to the fits."""
    diag = gram[idx, idx].mean(axis=-1)
    block = gram[idx[..., :, None], idx[..., None, :]].mean(axis=(-2, -1))
    return np.maximum(diag - block, 0.0)  # rounding can leave -1e-17 where the variance is 0


def variance_ratio(p_num: np.ndarray, p_den: np.ndarray, *, seed, n_resamples: int = N_RESAMPLES,
                   confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """variance(p_num) / variance(p_den) and its percentile bootstrap CI.

    Both arrays are (T, P) with row t from the same trial t (the same training set), so the
    bootstrap resamples trial indices with replacement, the same indices for both models
    (paired): scipy.stats.bootstrap with paired=True over the two models' index vectors.
    The trials are the independent replicates; the P points are fixed and not resampled.
    `seed` seeds the resampling (np.random.default_rng), so the CI is bit-identical
    across runs. A ratio whose denominator is 0 is NaN, and so is a CI any of whose
    resamples has a zero denominator (e.g. T = 2, where half the resamples repeat one
    trial); the percentile method (not BCa) keeps a constant numerator's CI at [0, 0].
    """
    p_num, p_den = np.asarray(p_num, dtype=float), np.asarray(p_den, dtype=float)
    if p_num.shape != p_den.shape or p_num.ndim != 2:
        raise ValueError(f"need two (trials, points) arrays of one shape, got {p_num.shape} and {p_den.shape}")
    g_num, g_den = _centred_gram(p_num), _centred_gram(p_den)

    def ratio(i_num, i_den, axis=-1):
        num, den = _resampled_variance(g_num, i_num), _resampled_variance(g_den, i_den)
        return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)

    trials = np.arange(p_num.shape[0])
    point = float(ratio(trials, trials))
    if p_num.shape[0] < 2:
        return point, np.nan, np.nan
    with warnings.catch_warnings():  # a NaN resample: handled below, scipy's warning would only repeat it
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((trials, trials), ratio, paired=True, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    if np.isnan(res.bootstrap_distribution).any():
        low, high = np.nan, np.nan
    return point, float(low), float(high)
