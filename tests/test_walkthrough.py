"""Tests for the sine walkthrough reproduction (distillstudy.stages.walkthrough)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distillstudy.stages.walkthrough import (
    COLUMNS,
    MODELS,
    draw_pool,
    plot_log_loss,
    run_walkthrough,
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
