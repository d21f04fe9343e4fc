"""The device-resident dataset: whole splits live on the device, batches are index gathers.

Keeping FashionMNIST (47 MB as uint8) or CIFAR-10 (150 MB) on the accelerator and gathering
batches by index removes the DataLoader bottleneck. All randomness (the per-epoch shuffle and
the augmentation draws) comes from a CPU ``torch.Generator`` owned by the training loop, and is
moved to the device afterwards, so the data order is identical on every device and the
generator's state can be checkpointed.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

# Standard CIFAR augmentation (He et al. 2016, "Deep Residual Learning", Sec. 4.2): pad 4 pixels
# on each side, take a random 32x32 crop, flip horizontally with probability 1/2.
CROP_PADDING = 4
# The held-out examples (DeviceDataset.hold_out) are drawn with this seed, not the run's: every
# run and seed of a sweep is validated on the same examples.
HOLDOUT_SEED = 0


class DataNotFoundError(FileNotFoundError):
    """The data files of a dataset are not on disk and could not be downloaded."""


@dataclass(frozen=True)
class DataShape:
    """What a dataset holds, known without loading it (for the memory estimate): one example's
    shape, the number of classes and the split sizes."""

    input_shape: tuple[int, ...]
    num_classes: int
    n_train: int
    n_test: int

    @property
    def nbytes(self) -> int:
        """Bytes the splits take on the device: float32 inputs, int64 labels."""
        return (self.n_train + self.n_test) * (4 * math.prod(self.input_shape) + 8)


@dataclass
class DeviceDataset:
    """A classification dataset whose train and test splits are tensors on one device.

    Attributes:
        name: registry name of the dataset.
        train_x, test_x: float32 inputs, N x C x H x W for images or N x D for vectors,
            normalized once at load.
        train_y, test_y: int64 labels in ``[0, num_classes)``.
        input_shape: shape of one example, e.g. ``(1, 28, 28)``, ``(3, 32, 32)`` or ``(2,)``.
        num_classes: number of classes.
        augment: apply random crop + horizontal flip to training batches (images only).
        holdout_x, holdout_y: a validation split held out of the training data
            (:meth:`hold_out`), or None.

    Construction checks shapes, dtypes, devices, label range and that every input is finite.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    augment: bool = False
    holdout_x: Tensor | None = None
    holdout_y: Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"DeviceDataset(name={self.name!r}, train={self.train_x.shape[0]}, "
            f"test={self.test_x.shape[0]}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, augment={self.augment}, device={self.device})"
        )

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        device = self.train_x.device
        splits = [("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)]
        if self.holdout_x is not None or self.holdout_y is not None:
            if self.holdout_x is None or self.holdout_y is None:
                raise ValueError(f"{self.name}: the holdout split needs inputs and labels")
            splits.append(("holdout", self.holdout_x, self.holdout_y))
        for split, x, y in splits:
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise ValueError(
                    f"{self.name}: {split} inputs must be float32 and labels int64, "
                    f"got {x.dtype} and {y.dtype}"
                )
            if tuple(x.shape[1:]) != self.input_shape or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name}: {split} inputs have shape {tuple(x.shape)} and labels "
                    f"{tuple(y.shape)}; expected N x {self.input_shape} and N"
                )
            if x.shape[0] == 0:
                raise ValueError(f"{self.name}: the {split} split is empty")
            if x.device != device or y.device != device:
                raise ValueError(f"{self.name}: all tensors must be on one device ({device})")
            if not all_finite(x):
                raise ValueError(
                    f"{self.name}: the {split} inputs contain NaN or Inf values; "
                    "the data files are corrupt or were written wrongly"
                )
            if bool((y < 0).any()) or bool((y >= self.num_classes).any()):
                raise ValueError(
                    f"{self.name}: {split} labels must lie in [0, {self.num_classes}), "
                    f"got min {int(y.min())} and max {int(y.max())}"
                )
        if self.augment and len(self.input_shape) != 3:
            raise ValueError(
                f"{self.name}: augment=True needs image inputs (C x H x W), "
                f"got input shape {self.input_shape}"
            )

    @property
    def device(self) -> torch.device:
        """The device holding the tensors."""
        return self.train_x.device

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """The inputs and labels of ``split``: ``"train"``, ``"test"`` or (after
        :meth:`hold_out`) ``"holdout"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        if split == "holdout" and self.holdout_x is not None and self.holdout_y is not None:
            return self.holdout_x, self.holdout_y
        valid = (
            "'train', 'test' or 'holdout'" if self.holdout_x is not None else "'train' or 'test'"
        )
        raise ValueError(f"split must be {valid}, got {split!r}")

    def hold_out(self, n: int) -> DeviceDataset:
        """This dataset with ``n`` training examples moved to a ``holdout`` split (a validation
        set for model selection), chosen by a permutation of seed :data:`HOLDOUT_SEED`: the same
        examples whatever the run's seed."""
        total = self.train_x.shape[0]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < total:
            raise ValueError(f"trainer.holdout must be an integer in [0, {total}) (got {n!r})")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
        held, kept = order[:n].to(self.device), order[n:].sort().values.to(self.device)
        return replace(
            self, train_x=self.train_x[kept], train_y=self.train_y[kept],
            holdout_x=self.train_x[held], holdout_y=self.train_y[held],
        )  # fmt: skip

    def num_batches(self, split: str, batch_size: int) -> int:
        """Batches per pass over ``split``, counting the last partial batch."""
        _check_batch_size(batch_size)
        n = self.tensors(split)[0].shape[0]
        return -(-n // batch_size)

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass (epoch) over ``split`` in batches of ``batch_size``; the last may be smaller.

        ``"train"`` is shuffled with a permutation drawn from ``generator`` (a CPU generator; the
        global RNG when None) and, when ``augment`` is set, randomly cropped and flipped. All the
        epoch's random numbers are drawn when this method is called, not while iterating, so the
        generator's state afterwards does not depend on how far the epoch was consumed.
        ``"test"`` and ``"holdout"`` are returned in order, never augmented.
        """
        x, y = self.tensors(split)
        _check_batch_size(batch_size)
        _check_generator(generator)
        n = x.shape[0]
        if split != "train":
            return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size))
        return self._train_batches(batch_size, *self.epoch_plan(generator))

    def epoch_plan(
        self, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One training epoch's random draws, on the device: the shuffled order (N), and with
        ``augment`` the crop offsets (N x 2) and flip flags (N); what :meth:`batches` uses, and
        what a packed run stacks over its members (:mod:`initbench.packing`)."""
        _check_generator(generator)
        n = self.train_x.shape[0]
        order = torch.randperm(n, generator=generator).to(self.device)
        crops = flips = None
        if self.augment:
            crops, flips = _draw_augmentation(n, generator, self.device)
        return order, crops, flips

    def _train_batches(
        self, batch_size: int, order: Tensor, crops: Tensor | None, flips: Tensor | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, order.shape[0], batch_size):
            idx = order[i : i + batch_size]
            xb = self.train_x.index_select(0, idx)
            if crops is not None and flips is not None:
                xb = crop_and_flip(xb, crops[i : i + batch_size], flips[i : i + batch_size])
            yield xb, self.train_y.index_select(0, idx)

    def sample_batch(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` distinct training examples drawn at random, never augmented.

        For data-dependent initializations (LSUV) and the step-0 diagnostic.
        """
        total = self.train_x.shape[0]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
            raise ValueError(f"sample_batch: n must be an integer in [1, {total}], got {n!r}")
        _check_generator(generator)
        idx = torch.randperm(total, generator=generator)[:n].to(self.device)
        return self.train_x.index_select(0, idx), self.train_y.index_select(0, idx)


def crop_and_flip(x: Tensor, crops: Tensor, flips: Tensor) -> Tensor:
    """Random-crop with zero padding, then flip horizontally, a whole batch in one gather.

    Args:
        x: B x C x H x W images (normalized, so the zero padding is the training-set channel
            mean: a neutral grey rather than black).
        crops: B x 2 integer offsets ``(dy, dx)`` in ``[0, 2 * CROP_PADDING]`` into the padded
            image; ``(CROP_PADDING, CROP_PADDING)`` is the identity crop.
        flips: B booleans, True to mirror the image left-right.
    """
    b, c, h, w = x.shape
    p = CROP_PADDING
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    rows = crops[:, 0, None] + torch.arange(h, device=x.device)  # B x H
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + crops[:, 1, None]  # B x W
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def _draw_augmentation(
    n: int, generator: torch.Generator | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Crop offsets (n x 2) and flip flags (n) for one epoch, drawn on the CPU, then moved."""
    crops = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    return crops.to(device), flips.to(device)


def normalize_per_channel(
    train: Tensor, test: Tensor, device: torch.device, name: str
) -> tuple[Tensor, Tensor]:
    """Move N x C x H x W images to ``device`` as float32, standardized per channel.

    The mean and standard deviation are those of the training split (population std); the test
    split uses the same statistics. The move happens before the conversion, so uint8 data
    crosses to an accelerator at a quarter of the float32 size.
    """
    out = []
    for split, x in (("train", train), ("test", test)):
        x = x.to(device)
        was_float = x.dtype.is_floating_point  # integer pixels cannot be NaN or Inf
        x = x.float() if x.dtype != torch.float32 else x.clone()
        if was_float and not all_finite(x):
            raise ValueError(f"{name}: the {split} inputs contain NaN or Inf values")
        out.append(x)
    train_f, test_f = out
    std, mean = torch.std_mean(train_f, dim=(0, 2, 3), correction=0, keepdim=True)
    if bool((std == 0).any()):
        raise ValueError(
            f"{name}: a channel of the training images is constant (std 0); the data files "
            "look corrupt"
        )
    for x in (train_f, test_f):
        x.sub_(mean).div_(std)
    return train_f, test_f


def all_finite(x: Tensor) -> bool:
    """Whether no element is NaN or Inf; a finite sum proves it without a full-size mask."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            "the data generator must be a CPU torch.Generator (random numbers are drawn on the "
            f"CPU and moved, so runs are reproducible across devices); got {generator.device}"
        )


def torchvision_download(dataset: str, root: Path, timeout: float) -> None:
    """``torchvision.datasets.<dataset>(root, download=True)`` with a bounded socket timeout,
    so a machine without network fails in seconds rather than hanging."""
    import torchvision  # lazy: only the download path needs it

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        getattr(torchvision.datasets, dataset)(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)
