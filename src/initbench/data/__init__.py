"""Datasets, held whole on the device: a registry of loaders and their parameters.

Usage::

    from initbench.data import load_dataset
    data = load_dataset("fashion_mnist", root="data", device="cuda", seed=0)
    for x, y in data.batches("train", 128, generator=torch.Generator().manual_seed(0)):
        ...

Each dataset is one module plus one :func:`register_dataset` line below (its loader, its
parameters, and its shape without loading: for the memory estimate); the Hydra group
``conf/dataset/`` holds one YAML per registered name, with exactly the parameters listed here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from initbench.data import cifar10, fashion_mnist
from initbench.data.base import DataNotFoundError, DataShape, DeviceDataset
from initbench.data.cifar10 import cifar10_shape, load_cifar10
from initbench.data.fashion_mnist import fashion_mnist_shape, load_fashion_mnist
from initbench.data.synthetic import circles_shape, gaussian_shape, load_circles, load_gaussian
from initbench.fields import Field

__all__ = [
    "DataNotFoundError",
    "DataShape",
    "DeviceDataset",
    "dataset_shape",
    "get_dataset_params",
    "is_seeded",
    "list_datasets",
    "load_dataset",
    "missing_data",
    "register_dataset",
    "validate_dataset_params",
]


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., DeviceDataset]
    params: dict[str, Field]
    shape: Callable[..., DataShape]
    seeded: bool  # generated from the seed (synthetic sets); file datasets are fixed
    missing: Callable[[Path], str | None] | None = None  # files absent under root: how to fix


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(
    name: str,
    load: Callable[..., DeviceDataset],
    params: dict[str, Field],
    shape: Callable[..., DataShape],
    missing: Callable[[Path], str | None] | None = None,
    *,
    seeded: bool = False,
) -> None:
    """Add a dataset: ``load(root=, device=, seed=, **params)`` returns a DeviceDataset, and
    ``shape(**params)`` what it will hold, without loading anything; for a dataset read from
    files, ``missing(root)`` is None when they are on disk, else how to get them. ``seeded``:
    the data are generated from the seed (else every seed gets the same data)."""
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = _Entry(load, params, shape, seeded, missing)


def _missing_help(
    find: Callable[[Path], Any], how: Callable[[Path], str]
) -> Callable[[Path], str | None]:
    return lambda root: None if find(root) is not None else how(root)


register_dataset(
    "fashion_mnist",
    load_fashion_mnist,
    {"download": Field("bool", default=True)},
    fashion_mnist_shape,
    _missing_help(fashion_mnist.find_local, fashion_mnist.missing_help),
)
register_dataset(
    "cifar10",
    load_cifar10,
    {"download": Field("bool", default=True), "augment": Field("bool", default=True)},
    cifar10_shape,
    _missing_help(cifar10.find_local, cifar10.missing_help),
)
register_dataset(
    "circles",
    load_circles,
    {
        "n_train": Field("int", low=1, default=300),
        "n_test": Field("int", low=1, default=100),
        "noise": Field("real", low=0, default=0.05),
        "factor": Field("real", low=0, high=1, high_open=True, default=0.5),
    },
    circles_shape,
    seeded=True,
)
register_dataset(
    "gaussian",
    load_gaussian,
    {
        "n": Field("int", low=1, default=1024),
        "n_test": Field("int", low=1, default=256),
        "dim": Field("int", low=1, default=512),
        "num_classes": Field("int", low=2, default=10),
    },
    gaussian_shape,
    seeded=True,
)


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(_REGISTRY)}"
        ) from None


def is_seeded(name: str) -> bool:
    """Whether the dataset's data depend on the seed (synthetic sets)."""
    return _entry(name).seeded


def get_dataset_params(name: str) -> dict[str, Field]:
    """The parameters ``load_dataset`` takes for ``name`` (besides root, device and seed)."""
    return dict(_entry(name).params)


def validate_dataset_params(name: str, **params: Any) -> dict[str, Any]:
    """Check a dataset name and its parameters without loading anything.

    Returns:
        All the dataset's parameters, defaults filled in for those not given.

    Raises:
        ValueError: unknown dataset (lists the valid ones), unknown parameter (lists the
            valid ones) or a value of the wrong type or out of range (names the field and the
            valid range).
    """
    spec = _entry(name).params
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(
            f"dataset {name!r} takes no parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(spec) or 'none'}"
        )
    for field, value in params.items():
        if not spec[field].accepts(value):
            raise ValueError(
                f"dataset {name!r}: {field} must be {spec[field].describe()} (got {value!r})"
            )
    return {field: params.get(field, p.default) for field, p in spec.items()}


def dataset_shape(name: str, **params: Any) -> DataShape:
    """What :func:`load_dataset` with these arguments would hold, without loading it (for a
    file dataset, the standard files' sizes).

    Raises:
        ValueError: bad name or parameters (as :func:`validate_dataset_params`).
    """
    return _entry(name).shape(**validate_dataset_params(name, **params))


def missing_data(name: str, root: str | os.PathLike[str]) -> str | None:
    """None if ``name``'s files are on disk for ``root`` (or it needs none: synthetic sets),
    else how to get them (the files, ``data_dir``, an offline alternative). Reads nothing but
    the file names: a dry run can ask it for every combination of a sweep.

    Raises:
        ValueError: an unknown dataset name.
    """
    missing = _entry(name).missing
    return None if missing is None else missing(Path(root).expanduser())


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    seed: int = 0,
    **params: Any,
) -> DeviceDataset:
    """Load a registered dataset whole onto ``device``.

    Args:
        name: one of :func:`list_datasets`.
        root: folder searched for data files (and where downloads go); unused by synthetic sets.
        device: where the tensors live.
        seed: generates the synthetic datasets; file datasets ignore it.
        **params: the dataset's parameters (see ``conf/dataset/<name>.yaml``).

    Raises:
        ValueError: bad name or parameters, or corrupt data files (names the file).
        DataNotFoundError: the files are missing and could not be downloaded.
    """
    resolved = validate_dataset_params(name, **params)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return _entry(name).load(
        root=Path(root).expanduser(), device=torch.device(device), seed=seed, **resolved
    )
