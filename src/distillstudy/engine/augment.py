"""Label-preserving augmentations for the `augmented` transfer protocol, one per dataset kind.

Every function works in the RAW feature space of x_train (as prepared, before the
models' standardisation) and returns float32. All randomness comes from the NumPy
Generator passed in; `transfer_copies` derives one Generator per copy from
(global seed, dataset, "augment", c), so copy c is the same whatever the number of
copies (adding copies never changes the earlier ones).

Noise scales are set by `noise_scale(kind, x_train)`, in units of the TRAINING
features' standard deviation:

    kind     what one copy of a row is                                   noise sigma
    mnist1d  circular shift along the feature axis by s, drawn uniformly  noise * std(x_train) (one
             from {-shift..-1, 1..shift} per row (np.roll: out[j] =        number over all features)
             x[j - s]; shift = 0: no shift), plus Gaussian noise
    digits   the side x side image (8 x 8) shifted by (dy, dx), each       noise * std(x_train) (one
             ~ U(-pixel_shift, pixel_shift) per row, bilinear              number over all pixels)
             interpolation (scipy.ndimage.shift, order=1, pixels shifted
             in from outside the image are 0 = background), plus Gaussian
             noise; values are not clipped to the 0..16 range
    sine     Gaussian jitter in x                                         noise * std(x_train)
    csv, npz Gaussian noise per feature                                   noise * that feature's
                                                                          training std (0 if constant)

Draw order per copy (fixed, so results depend only on the seed): shifts first, then
the noise (drawn only when noise > 0).
"""

from __future__ import annotations

import math

import numpy as np

from distillstudy.engine import seeds

#: Kinds whose noise unit is each feature's own std (tables and your arrays, whose features
#: may have any scales); the others share one std.
PER_FEATURE = ("csv", "npz")
KINDS = ("mnist1d", "digits", "sine", *PER_FEATURE)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"no augmentation for dataset kind {kind!r} (one of {', '.join(KINDS)})")


def noise_scale(kind: str, x_train: np.ndarray) -> np.ndarray:
    """The noise unit: one overall std (mnist1d, digits, sine) or one std per feature (csv), float64."""
    _check_kind(kind)
    x = np.asarray(x_train, dtype=np.float64)
    if kind in PER_FEATURE:
        return x.std(axis=0)
    return np.asarray(x.std())


def random_shifts(rng: np.random.Generator, n: int, shift: int) -> np.ndarray:
    """n integers uniform on {-shift..-1, 1..shift} (zeros when shift == 0)."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    if shift == 0:
        return np.zeros(n, dtype=np.int64)
    k = rng.integers(0, 2 * shift, size=n)  # 0..2*shift-1
    return np.where(k < shift, k - shift, k - shift + 1).astype(np.int64)


def roll_rows(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Row i circularly shifted by s[i]: out[i, j] = x[i, (j - s[i]) mod d], as np.roll(x[i], s[i])."""
    n, d = x.shape
    idx = (np.arange(d)[None, :] - s[:, None]) % d
    return x[np.arange(n)[:, None], idx]


def shift_images(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each row, read as a square image, shifted by offsets[i] = (dy, dx) with bilinear interpolation."""
    from scipy import ndimage  # lazy: only the augmented protocol on digits needs scipy

    n, d = x.shape
    side = int(round(math.sqrt(d)))
    if side * side != d:
        raise ValueError(f"image shift needs square images, got {d} features")
    images = x.reshape(n, side, side)
    out = np.empty_like(images)
    for i in range(n):
        out[i] = ndimage.shift(images[i], offsets[i], order=1, mode="constant", cval=0.0)
    return out.reshape(n, d)


def augment(kind: str, x: np.ndarray, *, rng: np.random.Generator, noise: float, shift: int = 0,
            pixel_shift: float = 0.0, scale=None) -> np.ndarray:
    """One label-preserving copy of every row of x (see the module docstring), float32.

    `scale` is the noise unit from `noise_scale(kind, x_train)`; by default it is
    computed from x itself (pass the training split's when x is not x_train).
    """
    _check_kind(kind)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if pixel_shift < 0:
        raise ValueError(f"pixel_shift must be >= 0, got {pixel_shift}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"augment expects (n, features), got shape {x.shape}")
    if scale is None:
        scale = noise_scale(kind, x)
    n = x.shape[0]
    if kind == "mnist1d":
        out = roll_rows(x, random_shifts(rng, n, int(shift)))
    elif kind == "digits":
        offsets = rng.uniform(-pixel_shift, pixel_shift, size=(n, 2)) if pixel_shift > 0 else np.zeros((n, 2))
        out = shift_images(x, offsets) if pixel_shift > 0 else x.copy()
    else:  # sine, csv, npz: jitter only
        out = x.copy()
    if noise > 0:
        out = out + rng.standard_normal(out.shape) * (noise * np.asarray(scale, dtype=np.float64))
    return out.astype(np.float32)


def copy_seed(global_seed: int, dataset: str, copy: int) -> int:
    """The seed of augmented copy c (1-based) of a dataset's training points."""
    return seeds.derive_seed(global_seed, dataset, "augment", int(copy))


def transfer_copies(kind: str, x_train: np.ndarray, *, copies: int, global_seed: int, dataset: str,
                    noise: float, shift: int = 0, pixel_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """x_train followed by `copies` augmented copies of every row (copy c of all rows, c = 1..copies).

    Returns (x (n * (copies + 1), d) float32, source (same length) int64 index into
    x_train, settings dict for the record: kind, copies, noise, sigma, shift,
    pixel_shift and the seed of each copy).
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    x_train = np.asarray(x_train, dtype=np.float32)
    scale = noise_scale(kind, x_train)
    n = x_train.shape[0]
    blocks, copy_seeds = [x_train], []
    for c in range(1, copies + 1):
        seed = copy_seed(global_seed, dataset, c)
        copy_seeds.append(seed)
        blocks.append(augment(kind, x_train, rng=np.random.default_rng(seed), noise=noise, shift=shift,
                              pixel_shift=pixel_shift, scale=scale))
    source = np.tile(np.arange(n, dtype=np.int64), copies + 1)
    sigma = noise * scale
    settings = {
        "kind": kind,
        "copies": int(copies),
        "noise": float(noise),
        "noise_sigma": [float(v) for v in np.ravel(sigma)] if kind in PER_FEATURE else float(sigma),
        "noise_unit": "std of each training feature" if kind in PER_FEATURE else "std of all training features",
        "shift": int(shift) if kind == "mnist1d" else None,
        "pixel_shift": float(pixel_shift) if kind == "digits" else None,
        "method": describe(kind, noise=noise, shift=shift, pixel_shift=pixel_shift),
        "copy_seeds": copy_seeds,
        "seed_coordinates": "derive_seed(global_seed, dataset, 'augment', c), c = 1..copies",
    }
    return np.concatenate(blocks).astype(np.float32), source, settings


def describe(kind: str, *, noise: float, shift: int = 0, pixel_shift: float = 0.0) -> str:
    """One phrase naming the augmentation, for records and reports."""
    _check_kind(kind)
    noise_text = f"Gaussian noise sigma = {noise:g} x training std"
    if kind == "mnist1d":
        return f"circular shift by 1..{int(shift)} samples either way, plus {noise_text}"
    if kind == "digits":
        return f"sub-pixel image shift uniform in +-{pixel_shift:g} px per axis (bilinear), plus {noise_text}"
    if kind == "sine":
        return f"Gaussian jitter in x, sigma = {noise:g} x training std"
    return f"{noise_text} of each feature"
