"""Augmentations are label-preserving transforms of the kind promised, deterministic per seed."""

import numpy as np
import pytest
from scipy import ndimage
from distillstudy.engine import augment


def rows(n=30, d=40, seed=0):
    return np.random.default_rng(seed).normal(3.0, 2.0, size=(n, d)).astype(np.float32)


def test_random_shifts_are_nonzero_and_within_range():
    s = augment.random_shifts(np.random.default_rng(0), 5000, 3)
    assert set(np.unique(s)) == {-3, -2, -1, 1, 2, 3}
    counts = np.bincount(s + 3)
    assert counts[3] == 0 and counts.min(initial=10**9, where=np.arange(7) != 3) > 700  # ~833 each
    assert not augment.random_shifts(np.random.default_rng(0), 10, 0).any()


def test_mnist1d_copy_without_noise_is_a_circular_roll_of_its_row():
    x = rows()
    out = augment.augment("mnist1d", x, rng=np.random.default_rng(1), noise=0.0, shift=5)
    assert out.dtype == np.float32 and out.shape == x.shape
    for i in range(len(x)):
        matches = [s for s in range(-5, 6) if s != 0 and np.array_equal(out[i], np.roll(x[i], s))]
        assert matches, f"row {i} is not a roll by a nonzero shift within +-5"


def test_mnist1d_noise_has_the_promised_sigma():
    x = rows(n=400)
    out = augment.augment("mnist1d", x, rng=np.random.default_rng(2), noise=0.1, shift=0)
    resid = out.astype(np.float64) - x
    assert abs(resid.std() - 0.1 * x.astype(np.float64).std()) < 0.01 * 0.1 * x.std() * 5
    assert abs(resid.mean()) < 0.01


def test_digits_copy_is_a_bilinear_subpixel_shift():
    x = np.random.default_rng(3).integers(0, 17, size=(20, 64)).astype(np.float32)
    out = augment.augment("digits", x, rng=np.random.default_rng(4), noise=0.0, pixel_shift=0.5)
    # The same draws, replayed: offsets uniform in +-0.5 per axis.
    offsets = np.random.default_rng(4).uniform(-0.5, 0.5, size=(20, 2))
    for i in range(20):
        expect = ndimage.shift(x[i].reshape(8, 8).astype(np.float64), offsets[i], order=1, mode="constant")
        np.testing.assert_allclose(out[i], expect.ravel(), rtol=0, atol=1e-5)
    assert not np.array_equal(out, x)
    # No shift and no noise: the identity.
    same = augment.augment("digits", x, rng=np.random.default_rng(4), noise=0.0, pixel_shift=0.0)
    assert np.array_equal(same, x)


def test_sine_jitter_and_csv_per_feature_noise():
    x = np.random.default_rng(5).normal(0, 10, size=(2000, 1)).astype(np.float32)
    out = augment.augment("sine", x, rng=np.random.default_rng(6), noise=0.05)
    assert abs((out - x).std() - 0.05 * x.std()) < 0.05 * x.std() * 0.1
    table = np.column_stack([np.random.default_rng(7).normal(0, 1, 3000), np.random.default_rng(8).normal(0, 100, 3000),
                             np.full(3000, 4.0)]).astype(np.float32)
    out = augment.augment("csv", table, rng=np.random.default_rng(9), noise=0.2)
    resid = (out.astype(np.float64) - table).std(axis=0)
    np.testing.assert_allclose(resid[:2], 0.2 * table.std(axis=0)[:2], rtol=0.1)
    assert resid[2] == 0.0  # a constant feature stays constant


def test_transfer_copies_layout_seeds_and_determinism():
    x = rows(n=12)
    kw = {"copies": 3, "global_seed": 7, "dataset": "toy", "noise": 0.05, "shift": 4}
    a, source, settings = augment.transfer_copies("mnist1d", x, **kw)
    b, _, _ = augment.transfer_copies("mnist1d", x, **kw)
    assert a.dtype == np.float32 and a.shape == (48, 40)
    assert np.array_equal(a[:12], x) and np.array_equal(source, np.tile(np.arange(12), 4))
    assert a.tobytes() == b.tobytes()
    assert settings["copy_seeds"] == [augment.copy_seed(7, "toy", c) for c in (1, 2, 3)]
    assert len(set(settings["copy_seeds"])) == 3
    # Copy c depends only on its own seed: fewer copies give the same first copies.
    fewer, _, _ = augment.transfer_copies("mnist1d", x, **{**kw, "copies": 1})
    assert np.array_equal(fewer, a[:24])
    other, _, _ = augment.transfer_copies("mnist1d", x, **{**kw, "global_seed": 8})
    assert not np.array_equal(other[12:], a[12:])


def test_unknown_kind_and_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="no augmentation for dataset kind 'images'"):
        augment.augment("images", rows(), rng=np.random.default_rng(0), noise=0.1)
    with pytest.raises(ValueError, match="square images"):
        augment.augment("digits", rows(d=10), rng=np.random.default_rng(0), noise=0.0, pixel_shift=0.5)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        augment.augment("sine", rows(d=1), rng=np.random.default_rng(0), noise=-1.0)
