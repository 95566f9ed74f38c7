"""Your own student family for the worked example (examples/byo.yaml): a factory
f(input_shape, n_classes, size) -> torch.nn.Module. The pipeline sets the replicate's seed
before calling it and feeds standardised float32 batches shaped (batch, *input_shape)."""

from torch import nn


def tiny_cnn(input_shape, n_classes, size):
    """One 3x3 convolution of `size` channels on the (H, W) image, global max-pooling, a
    linear read-out: a student with a different inductive bias from the built-in cnn."""
    return nn.Sequential(
        nn.Unflatten(1, (1, input_shape[0])),  # (batch, H, W) -> (batch, 1, H, W)
        nn.Conv2d(1, size, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(size, n_classes),
    )
