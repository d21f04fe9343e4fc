"""CIFAR-10 (Krizhevsky 2009): 50k/10k 32x32 colour images, 10 classes.

Reads the standard ``cifar-10-batches-py`` folder (pickled dicts with ``b"data"``, uint8
N x 3072 in channel-major order, and ``b"labels"``; files ``data_batch_1`` .. ``data_batch_5``
and ``test_batch``), found in ``root/`` or ``root/cifar-10-batches-py/``; only then, if
``download`` is set, torchvision downloads it into ``root/cifar-10-batches-py/``.

The batches are unpickled: load only files you trust (they are the files torchvision uses).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from initbench.data.base import (
    DataNotFoundError,
    DataShape,
    DeviceDataset,
    normalize_per_channel,
    torchvision_download,
)

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)
N_TRAIN, N_TEST = 50_000, 10_000
DOWNLOAD_TIMEOUT_S = 10.0

_HOW_TO_FIX = (
    f"replace the {FOLDER} folder with a good copy (delete it and run with internet access "
    "and dataset.download=true to let torchvision download it)"
)


def candidate_dirs(root: Path) -> list[Path]:
    """Folders searched for the batch files, in order."""
    return [root, root / FOLDER]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in [*TRAIN_FILES, TEST_FILE])


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as images (N x 3 x 32 x 32) and int64 labels (N).

    Raises ValueError naming the file when it cannot be unpickled or its contents have the
    wrong keys, shapes or label values.
    """
    try:
        with open(path, "rb") as f:
            # The original files were pickled by Python 2: bytes keys with encoding="bytes".
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # unpickling a damaged file can raise almost anything
        raise ValueError(f"cannot unpickle {path}: {err}; {_HOW_TO_FIX}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path} holds a {type(batch).__name__}, expected a dict; {_HOW_TO_FIX}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} has no b'data' or b'labels' entry; {_HOW_TO_FIX}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != int(np.prod(INPUT_SHAPE)):
        raise ValueError(
            f"{path}: data has shape {data.shape}, expected N x {int(np.prod(INPUT_SHAPE))}; "
            f"{_HOW_TO_FIX}"
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"{path}: {data.shape[0]} images but labels of shape {labels.shape}; {_HOW_TO_FIX}"
        )
    if not np.issubdtype(data.dtype, np.number) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: data must be numeric (uint8) and labels integers, got {data.dtype} and "
            f"{labels.dtype}; {_HOW_TO_FIX}"
        )
    if data.dtype != np.uint8 and not np.isfinite(data).all():
        raise ValueError(f"{path}: the images contain NaN or Inf values; {_HOW_TO_FIX}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}; {_HOW_TO_FIX}")
    return data.reshape(-1, *INPUT_SHAPE), labels.astype(np.int64)


def find_local(root: Path) -> Path | None:
    """The folder holding the six batch files if it is on disk, else None."""
    return next((d for d in candidate_dirs(Path(root).absolute()) if _complete(d)), None)


def missing_help(root: Path) -> str:
    """How to get the files when they are not under ``root`` (the run's ``data_dir``)."""
    root = Path(root).absolute()
    return (
        f"put the extracted {FOLDER} folder of "
        f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz under {root} "
        f"(data_dir={root}: set data_dir= or $INITBENCH_DATA_DIR to the folder that holds it); "
        "or run offline without it: dataset=fashion_mnist (`apt-get install "
        "dataset-fashion-mnist`) or dataset=circles"
    )


def locate(root: Path, download: bool) -> Path:
    """The folder holding the six batch files, downloading them with torchvision as last resort."""
    root = Path(root).absolute()
    found = find_local(root)
    if found is not None:
        return found
    searched = candidate_dirs(root)
    help_text = (
        f"CIFAR-10 not found: looked for {', '.join(TRAIN_FILES)} and {TEST_FILE} in "
        f"{' and '.join(str(d) for d in searched)}. To get it: {missing_help(root)}. Or run "
        "with internet access (dataset.download=true, the default, downloads it)."
    )
    if not download:
        raise DataNotFoundError(help_text + " dataset.download=false, so nothing was downloaded.")
    try:
        torchvision_download("CIFAR10", root, DOWNLOAD_TIMEOUT_S)
    except (URLError, OSError, RuntimeError) as err:
        raise DataNotFoundError(
            f"{help_text} The download into {root} failed (no internet?): {err}"
        ) from err
    if not _complete(root / FOLDER):
        raise DataNotFoundError(f"{help_text} torchvision's download left no complete {FOLDER}.")
    return root / FOLDER


def cifar10_shape(*, download: bool, augment: bool) -> DataShape:
    """CIFAR-10's shape without reading it (the standard files' sizes)."""
    del download, augment
    return DataShape(INPUT_SHAPE, NUM_CLASSES, N_TRAIN, N_TEST)


def load_cifar10(
    *, root: Path, device: torch.device, seed: int, download: bool, augment: bool
) -> DeviceDataset:
    """Load CIFAR-10 onto ``device``, standardized with the training split's per-channel stats.

    ``augment`` turns on the random crop (zero padding 4) + horizontal flip of training batches.
    ``seed`` is unused (the data are fixed); it is accepted like every loader's.
    """
    del seed
    folder = locate(root, download)
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    train_t, test_t = normalize_per_channel(
        torch.from_numpy(train_x), torch.from_numpy(np.ascontiguousarray(test_x)), device, "cifar10"
    )
    return DeviceDataset(
        name="cifar10",
        train_x=train_t,
        train_y=torch.from_numpy(train_y).to(device),
        test_x=test_t,
        test_y=torch.from_numpy(test_y).to(device),
        input_shape=INPUT_SHAPE,
        num_classes=NUM_CLASSES,
        augment=augment,
    )
