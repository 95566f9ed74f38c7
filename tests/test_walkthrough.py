"""Tests for the sine walkthrough reproduction (distillstudy.stages.walkthrough)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from distillstudy.analysis.bias_variance import decompose, variance_ratio
from distillstudy.render.walkthrough import variance_section, variance_sentence
from distillstudy.stages import walkthrough
from distillstudy.stages.walkthrough import (
    COLUMNS,
    MODELS,
    VARIANCE_COLUMNS,
    VARIANCE_MODELS,
    draw_pool,
    eval_points,
    plot_log_loss,
    run_walkthrough,
    true_probability,
    variance_table,
    walkthrough_trials,
    write_walkthrough,
)

SMALL = dict(n_values=[20, 40], trials=3, pool_size=2000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_df() -> pd.DataFrame:
    return run_walkthrough(**SMALL)


def test_draw_pool_order_matches_hand_derivation():
    x, y = draw_pool(np.random.default_rng(1234), 500)
    rng = np.random.default_rng(1234)
    x_ref = rng.standard_normal(500) * 10  # x first ...
    y_ref = rng.binomial(1, 0.4 * np.sin(x_ref) + 0.5)  # ... then y
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_consecutive_pools_continue_the_stream():
    rng = np.random.default_rng(1234)
    draw_pool(rng, 100)
    x2, _ = draw_pool(rng, 100)
    ref = np.random.default_rng(1234)
    x1 = ref.standard_normal(100) * 10
    ref.binomial(1, 0.4 * np.sin(x1) + 0.5)
    np.testing.assert_array_equal(x2, ref.standard_normal(100) * 10)


def test_output_shape_columns_and_order(small_df):
    assert list(small_df.columns) == COLUMNS
    assert len(small_df) == len(SMALL["n_values"]) * len(MODELS) * 2
    assert not small_df.isna().any().any()
    assert set(small_df["model"]) == {"student", "teacher", "distilled", "oracle_distilled", "truth"}
    assert set(small_df["split"]) == {"train", "test"}
    expected = small_df.sort_values(["n_train", "model", "split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(small_df, expected)
    assert small_df.attrs["trials_used"] == {20: 3, 40: 3}


def test_determinism(small_df):
    pd.testing.assert_frame_equal(small_df, run_walkthrough(**SMALL), check_exact=True)


def test_finding_with_default_pool():
    # Default pool size and seeds; fewer trials than the walkthrough, for speed.
    df = run_walkthrough(n_values=[10, 25, 45], trials=5)
    test = df[df["split"] == "test"].pivot(index="n_train", columns="model", values="log_loss")
    assert (test["distilled"] < test["student"]).all()
    assert (test["teacher"] < test["distilled"]).all()
    assert (test["teacher"] < test["student"]).all()


def test_single_class_trials_are_skipped_and_counted():
    # n=2 from a tiny pool often gives one class; those trials must be skipped, not crash.
    df = run_walkthrough(n_values=[2], trials=20, pool_size=100)
    used = df.attrs["trials_used"][2]
    assert 0 < used < 20
    assert not df.isna().any().any()


def test_all_single_class_raises():
    with pytest.raises(RuntimeError, match="single class"):
        run_walkthrough(n_values=[1], trials=2, pool_size=100)


def test_plot_writes_png_atomically(small_df, tmp_path):
    out = tmp_path / "test_log_loss.png"
    plot_log_loss(small_df, "test", out)
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp files left


def test_plot_is_byte_identical_across_runs(small_df, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_log_loss(small_df, "train", a)
    plot_log_loss(small_df, "train", b)
    assert a.read_bytes() == b.read_bytes()


def test_write_csv_roundtrip(small_df, tmp_path):
    out = tmp_path / "walkthrough.csv"
    write_walkthrough(small_df, out)
    back = pd.read_csv(out)
    assert list(back.columns) == COLUMNS
    np.testing.assert_allclose(back["log_loss"], small_df["log_loss"], rtol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_the_truth_row_is_the_true_probability_s_log_loss_and_the_oracle_fits_true_logits():
    """Recomputed by hand for one trial: the truth's test log loss is
    -mean(y log p + (1 - y) log(1 - p)) with p = 0.4 sin x + 0.5, and the oracle-distilled
    student is the cubic least-squares fit of logit(p) on the training points."""
    from sklearn.model_selection import train_test_split

    df = run_walkthrough([30], trials=1, pool_size=3000)
    x, y = draw_pool(np.random.default_rng(1234), 3000)
    x_train, x_test, y_train, y_test = train_test_split(x.reshape(-1, 1), y, test_size=1 - 30 / 3000,
                                                        random_state=42)
    p = 0.4 * np.sin(x_test.ravel()) + 0.5
    truth = -np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p))
    got = df[(df.model == "truth") & (df.split == "test")].log_loss.item()
    assert got == pytest.approx(truth, rel=1e-9)
    pt = 0.4 * np.sin(x_train.ravel()) + 0.5
    coef = np.polyfit(x_train.ravel(), np.log(pt / (1 - pt)), 3)
    q = 1 / (1 + np.exp(-np.polyval(coef, x_test.ravel())))
    oracle = -np.mean(y_test * np.log(q) + (1 - y_test) * np.log(1 - q))
    got = df[(df.model == "oracle_distilled") & (df.split == "test")].log_loss.item()
    assert got == pytest.approx(oracle, rel=1e-6)


# --- bias² + variance (walkthrough_variance.csv) ---------------------------------------

#: sha256 of write_walkthrough(run_walkthrough(**SMALL)) written by the code before the
#: variance decomposition existed (commit 4ae5e75): predicting at the evaluation points
#: must not move the pools' random stream.
SMALL_CSV_SHA256 = "f0bb35e97e1790df9f40dfdfa4d7f653ef016a8062198f14b203ddb352fddfba"


@pytest.fixture(scope="module")
def small_trials():
    x_eval = eval_points(1234, size=300)
    frame, predictions = walkthrough_trials(**SMALL, x_eval=x_eval)
    return frame, predictions, x_eval


def test_the_walkthrough_table_is_unchanged_by_the_evaluation_points(small_df, small_trials, tmp_path):
    write_walkthrough(small_df, tmp_path / "plain.csv")
    write_walkthrough(small_trials[0], tmp_path / "with_eval.csv")
    assert hashlib.sha256((tmp_path / "plain.csv").read_bytes()).hexdigest() == SMALL_CSV_SHA256
    assert (tmp_path / "with_eval.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_evaluation_points_have_their_own_stream():
    x = eval_points(1234)
    assert x.shape == (walkthrough.EVAL_POINTS, 1)
    np.testing.assert_array_equal(x, eval_points(1234))
    pool_x, _ = draw_pool(np.random.default_rng(1234), walkthrough.EVAL_POINTS)
    assert not np.array_equal(x.ravel(), pool_x)  # not the first pool's x
    assert 8 < x.std() < 12  # x = 10 N(0, 1)


def test_predictions_are_each_trial_s_models_at_the_evaluation_points(small_trials):
    _, predictions, x_eval = small_trials
    assert set(predictions) == {20, 40}
    for by_model in predictions.values():
        assert tuple(by_model) == VARIANCE_MODELS
        for p in by_model.values():
            assert p.shape == (SMALL["trials"], len(x_eval)) and ((p >= 0) & (p <= 1)).all()  # cubic tails saturate
        # different training sets give different fits
        assert not np.allclose(by_model["student"][0], by_model["student"][1])


def test_bias2_plus_variance_is_the_mean_squared_error_exactly():
    """ddof = 0: bias2 + variance equals the mean over trials and points of (p - p_true)^2;
    the ddof = 1 variance is T / (T - 1) times it."""
    rng = np.random.default_rng(7)
    t, n_points = 6, 50
    p = rng.uniform(0.05, 0.95, size=(t, n_points))
    p_true = rng.uniform(0.1, 0.9, size=n_points)
    d = decompose(p, p_true)
    assert d["mse"] == d["bias2"] + d["variance"]
    assert d["mse"] == pytest.approx(np.mean((p - p_true) ** 2), rel=1e-12)
    assert d["bias2"] == pytest.approx(np.mean((p.mean(axis=0) - p_true) ** 2), rel=1e-12)
    ddof1 = np.mean(np.var(p, axis=0, ddof=1))
    assert d["bias2"] + ddof1 * (t - 1) / t == pytest.approx(np.mean((p - p_true) ** 2), rel=1e-12)


def test_a_planted_variance_ratio_is_recovered_with_a_ci_that_holds_it():
    rng = np.random.default_rng(11)
    t, n_points = 40, 400
    base = 0.5 + 0.02 * np.sin(np.linspace(0, 6, n_points))
    low = base + 0.05 * rng.standard_normal((t, n_points))  # variance 0.0025
    high = base + 0.10 * rng.standard_normal((t, n_points))  # variance 0.01: true ratio 0.25
    ratio, lo, hi = variance_ratio(low, high, seed=[1, 2])
    assert ratio == pytest.approx(0.25, rel=0.1)
    assert lo < 0.25 < hi < 1
    assert (ratio, lo, hi) == variance_ratio(low, high, seed=[1, 2])  # bit-identical rerun
    # paired: a model that is exactly twice the other's deviation has ratio 1/4 in every resample
    twice = base + 2 * (low - base)
    assert variance_ratio(low, twice, seed=0) == pytest.approx((0.25, 0.25, 0.25), rel=1e-9)
    # a model that never varies: ratio 0, CI [0, 0]
    assert variance_ratio(np.tile(base, (t, 1)), high, seed=0) == (0.0, 0.0, 0.0)


def test_too_few_trials_give_no_interval():
    p = np.random.default_rng(3).uniform(size=(2, 30))
    ratio, lo, hi = variance_ratio(p, p[::-1] * 0.5, seed=0)
    assert ratio == pytest.approx(4.0) and np.isnan(lo) and np.isnan(hi)
    assert np.isnan(variance_ratio(p[:1], p[:1], seed=0)).all()


def test_variance_table(small_trials):
    _, predictions, x_eval = small_trials
    table = variance_table(predictions, x_eval, 1234)
    assert list(table.columns) == VARIANCE_COLUMNS
    assert list(table["model"]) == list(VARIANCE_MODELS) * 2 and list(table["n_train"]) == [20] * 4 + [40] * 4
    assert (table["trials"] == SMALL["trials"]).all()
    np.testing.assert_allclose(table["mse"], table["bias2"] + table["variance"], rtol=1e-12)
    student = table[table.model == "student"]
    assert student[["variance_ratio", "ratio_low", "ratio_high"]].isna().all().all()
    row = table[(table.model == "distilled") & (table.n_train == 20)].iloc[0]
    p = predictions[20]
    assert row["variance_ratio"] == pytest.approx(np.var(p["distilled"], axis=0).mean()
                                                  / np.var(p["student"], axis=0).mean(), rel=1e-9)
    assert row["bias2"] == pytest.approx(np.mean((p["distilled"].mean(axis=0) - true_probability(x_eval)) ** 2))


def test_skipped_trials_are_left_out_of_the_decomposition():
    x_eval = eval_points(1234, size=50)
    frame, predictions = walkthrough_trials([2], trials=20, pool_size=100, x_eval=x_eval)
    used = frame.attrs["trials_used"][2]
    assert 0 < used < 20
    assert variance_table(predictions, x_eval, 1234)["trials"].tolist() == [used] * len(VARIANCE_MODELS)


def test_the_stage_writes_both_tables_deterministically(tmp_path):
    paths = {}
    for run_name in ("a", "b"):
        d = tmp_path / run_name
        d.mkdir()
        walkthrough.run(n_train=[20, 40], trials=4, pool_size=1000, rng_seed=1234, split_seed=42, degree=3,
                        out_csv=d / "w.csv", out_test_png=d / "t.png", out_train_png=d / "tr.png",
                        out_variance_csv=d / "v.csv")
        paths[run_name] = d
    for name in ("w.csv", "v.csv"):
        assert (paths["a"] / name).read_bytes() == (paths["b"] / name).read_bytes()
    back = pd.read_csv(paths["a"] / "v.csv")
    assert list(back.columns) == VARIANCE_COLUMNS and len(back) == 2 * len(VARIANCE_MODELS)
    assert ",student,4,0." in (paths["a"] / "v.csv").read_text()  # the student's ratio fields are empty
    assert (paths["a"] / "v.csv").read_text().splitlines()[1].endswith(",,,")


def test_distilling_lowers_the_polynomial_student_s_variance_with_the_default_pool():
    x_eval = eval_points(1234, size=500)
    _, predictions = walkthrough_trials([10, 45], trials=8, x_eval=x_eval)
    table = variance_table(predictions, x_eval, 1234).set_index(["n_train", "model"])
    for n in (10, 45):
        assert table.loc[(n, "distilled"), "ratio_high"] < 1
        assert table.loc[(n, "oracle_distilled"), "ratio_high"] < 1


def _variance(cis: list[tuple[float, float, float]]) -> pd.DataFrame:
    """A variance table for n = 10, 20, ... with the distilled rows' ratio and CI given."""
    rows = []
    for k, (ratio, lo, hi) in enumerate(cis):
        n = 10 * (k + 1)
        rows.append({"n_train": n, "model": "student", "bias2": 0.08, "variance": 0.1,
                     "variance_ratio": np.nan, "ratio_low": np.nan, "ratio_high": np.nan})
        rows.append({"n_train": n, "model": "distilled", "bias2": 0.07 + 0.001 * k, "variance": 0.1 * ratio,
                     "variance_ratio": ratio, "ratio_low": lo, "ratio_high": hi})
        rows.append({"n_train": n, "model": "oracle_distilled", "bias2": 0.08, "variance": 0.04,
                     "variance_ratio": 0.4, "ratio_low": 0.3, "ratio_high": 0.5})
    return pd.DataFrame(rows)


def test_the_variance_sentence_claims_only_what_its_ci_allows():
    lower = variance_sentence(_variance([(0.3, 0.2, 0.5), (0.41, 0.3, 0.6)]))
    assert lower.startswith("Distilling from the teacher lowered the polynomial student's variance across "
                            "training sets at every n (2 of 2 values of n; 95% CI of the variance ratio below 1)")
    assert "the ratio ranged 0.30–0.41 over n (0.40 distilling from the oracle teacher" in lower
    assert "bias² was 0.07–0.071 against the hard-label student's 0.08 (point estimates, no interval)." in lower
    assert "raised" not in lower and "no detectable" not in lower

    mixed = variance_sentence(_variance([(0.3, 0.2, 0.5), (0.9, 0.6, 1.3), (1.5, 1.1, 2.0)]))
    assert ("lowered the polynomial student's variance across training sets at 1 of 3 values of n (n = 10; 95% CI "
            "of the variance ratio below 1), made no detectable difference to it at 1 of 3 values of n (n = 20; 95% "
            "CI of the ratio includes 1) and raised it at 1 of 3 values of n (n = 30; 95% CI of the ratio above 1)"
            in mixed)

    none = variance_sentence(_variance([(0.9, 0.6, 1.3), (1.1, 0.99, 1.2)]))
    assert none.startswith("Distilling from the teacher made no detectable difference to the polynomial student's "
                           "variance across training sets at every n")
    assert "lowered" not in none and "raised" not in none

    undefined = variance_sentence(_variance([(0.3, np.nan, np.nan)]))
    assert "multiplied the polynomial student's variance across training sets by 0.30 over n" in undefined
    assert "no interval at n = 10" in undefined and "lowered" not in undefined


def test_variance_rows_show_the_ratio_with_its_ci():
    rows, sentence = variance_section(_variance([(0.3, 0.2, 0.5)]))
    assert [r["ratio"] for r in rows] == ["reference", "0.30 [0.20, 0.50]", "0.40 [0.30, 0.50]"]
    assert rows[0]["bias2"] == "0.08" and rows[1]["variance"] == "0.03"
    assert sentence.startswith("Distilling from the teacher lowered")
    assert variance_section(None) == ([], "")
