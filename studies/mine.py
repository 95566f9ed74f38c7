"""My student family: f(input_shape, n_classes, size) -> torch.nn.Module."""
import math

from torch import nn


def small_net(input_shape, n_classes, size):
    """One hidden layer of `size` ReLU units."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), size), nn.ReLU(),
                         nn.Linear(size, n_classes))
