"""Synthetic datasets generated from the seed: two circles (toy 2-D task) and Gaussian noise.

Both are generated on the CPU with a ``torch.Generator`` seeded by ``seed`` (train first, then
test from the same stream), so a seed gives the same points on every device. They are not
re-normalized: the circles' radii and the Gaussian's unit variance are the point of the task.
"""

from __future__ import annotations

import math

import torch

from initbench.data.base import DataShape, DeviceDataset


def make_circles(
    n: int, noise: float, factor: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A large circle (radius 1, label 0) around a small one (radius ``factor``, label 1).

    Same construction as ``sklearn.datasets.make_circles``: ``n // 2`` evenly spaced angles on
    the outer circle, the rest on the inner one, shuffled, plus N(0, noise^2) jitter per
    coordinate.
    """
    n_out = n // 2
    n_in = n - n_out
    angles = [2 * math.pi * torch.arange(k, dtype=torch.float64) / k for k in (n_out, n_in)]
    points = torch.cat(
        [
            torch.stack([angles[0].cos(), angles[0].sin()], dim=1),
            factor * torch.stack([angles[1].cos(), angles[1].sin()], dim=1),
        ]
    )
    labels = torch.cat([torch.zeros(n_out, dtype=torch.int64), torch.ones(n_in, dtype=torch.int64)])
    order = torch.randperm(n, generator=generator)
    points, labels = points[order], labels[order]
    if noise > 0:
        points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float(), labels


def load_circles(
    *,
    root: object,
    device: torch.device,
    seed: int,
    n_train: int,
    n_test: int,
    noise: float,
    factor: float,
) -> DeviceDataset:
    """Two concentric noisy circles, 2 classes, input shape (2,). ``root`` is unused."""
    del root
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = make_circles(n_train, noise, factor, generator)
    test_x, test_y = make_circles(n_test, noise, factor, generator)
    return DeviceDataset(
        name="circles",
        train_x=train_x.to(device),
        train_y=train_y.to(device),
        test_x=test_x.to(device),
        test_y=test_y.to(device),
        input_shape=(2,),
        num_classes=2,
    )


def circles_shape(*, n_train: int, n_test: int, noise: float, factor: float) -> DataShape:
    """The circles' shape without generating them."""
    del noise, factor
    return DataShape((2,), 2, n_train, n_test)


def gaussian_shape(*, n: int, n_test: int, dim: int, num_classes: int) -> DataShape:
    """The Gaussian set's shape without generating it."""
    return DataShape((dim,), num_classes, n, n_test)


def load_gaussian(
    *,
    root: object,
    device: torch.device,
    seed: int,
    n: int,
    n_test: int,
    dim: int,
    num_classes: int,
) -> DeviceDataset:
    """N(0, 1) inputs with uniformly random labels, for signal-propagation studies.

    There is nothing to learn beyond memorization; the inputs have exactly the unit-variance
    statistics that the initialization analyses (Glorot & Bengio 2010, He et al. 2015) assume.
    ``root`` is unused.
    """
    del root
    generator = torch.Generator().manual_seed(seed)
    splits = []
    for size in (n, n_test):
        x = torch.randn(size, dim, generator=generator)
        y = torch.randint(0, num_classes, (size,), generator=generator)
        splits.append((x.to(device), y.to(device)))
    (train_x, train_y), (test_x, test_y) = splits
    return DeviceDataset(
        name="gaussian",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        input_shape=(dim,),
        num_classes=num_classes,
    )
