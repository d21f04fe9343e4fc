"""The tutorials' training loop, kept outside the package as the benchmark harness's baseline.

A torchvision dataset with ToTensor, a shuffling DataLoader, every batch copied to the device
and ``loss.item()`` read every step: the loop of the PyTorch and W&B FashionMNIST tutorials.
``initbench.bench`` loads this file for ``mlp_epoch_speedup_vs_dataloader`` (our device-resident
epoch against this one); nothing else uses it.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset, Subset


def fashion_mnist(files: Mapping[str, Path], stems: Mapping[str, str], workdir: Path, n: int):
    """torchvision's FashionMNIST training split over the IDX ``files`` (``stems``: their
    torchvision names; unzipped into ``workdir``), first ``n`` examples."""
    raw = workdir / "torchvision" / "FashionMNIST" / "raw"  # where torchvision looks
    raw.mkdir(parents=True)
    for key, stem in stems.items():
        opener = gzip.open if files[key].suffix == ".gz" else open
        with opener(files[key], "rb") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    data = torchvision.datasets.FashionMNIST(
        str(raw.parents[1]), train=True, download=False,
        transform=torchvision.transforms.ToTensor(),
    )  # fmt: skip
    return Subset(data, range(min(n, len(data))))


def epoch_seconds(
    net: torch.nn.Module,
    data: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    sync: Callable[[torch.device], None],
) -> float:
    """Wall time of one Adam epoch of ``net`` over ``data``, the tutorial way."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    sync(device)
    start = time.perf_counter()
    net.train()
    running_loss = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    sync(device)
    return time.perf_counter() - start
