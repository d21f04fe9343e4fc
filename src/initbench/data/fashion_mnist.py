"""FashionMNIST (Xiao, Rasul & Vollgraf 2017): 60k/10k 28x28 grey images of clothes, 10 classes.

The four IDX files are read with numpy + gzip (faster than going through torchvision). They are
looked for, in order, in ``root/``, ``root/fashion_mnist/``, ``root/FashionMNIST/raw/``
(torchvision's layout), then Debian's ``/usr/share/datasets/fashion-mnist/`` (package
``dataset-fashion-mnist``); only then, if ``download`` is set, torchvision downloads them.
"""

from __future__ import annotations

import gzip
import zlib
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

# Where Debian's `dataset-fashion-mnist` package installs the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 10.0

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
NUM_CLASSES = 10
IMAGE_SIZE = 28
N_TRAIN, N_TEST = 60_000, 10_000

_HOW_TO_FIX = (
    "get a good copy with `apt-get install dataset-fashion-mnist` (files in {system}), or delete "
    "the file and run with dataset.download=true and internet access to let torchvision download it"
)


def candidate_dirs(root: Path) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    return [root, root / "fashion_mnist", root / "FashionMNIST" / "raw", SYSTEM_DIR]


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (gzipped preferred, else unzipped); None if any is missing."""
    found = {}
    for key, stem in FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one uint8 IDX file (gzipped or not) into an array of its declared shape.

    Layout: big-endian int32 magic number (2051 images / 2049 labels), one big-endian int32 size
    per dimension, then the bytes. Anything that does not fit raises ValueError naming the file.
    """
    fix = _HOW_TO_FIX.format(system=SYSTEM_DIR)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot read {path}: {err} (truncated or corrupt gzip?); {fix}") from err
    ndim = magic - 2048  # the low byte of the magic number is the number of dimensions
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is too short to be an IDX file ({len(raw)} bytes); {fix}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number is {found}, expected {magic}; {fix}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: the header declares shape {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header} data bytes; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 28 x 28 uint8) and labels (N) of one split, checked against each other."""
    fix = _HOW_TO_FIX.format(system=SYSTEM_DIR)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{images_path}: images are {images.shape[1:]}, expected "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}; {fix}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; {fix}"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}; {fix}"
        )
    return images, labels


def find_local(root: Path) -> dict[str, Path] | None:
    """The four files if they are on disk (``root``'s folders, then Debian's), else None."""
    for folder in candidate_dirs(Path(root).absolute()):
        found = find_files(folder)
        if found is not None:
            return found
    return None


def missing_help(root: Path) -> str:
    """How to get the files when they are not under ``root`` (the run's ``data_dir``)."""
    root = Path(root).absolute()
    return (
        f"copy the four files into {root} (data_dir={root}: set data_dir= or "
        f"$INITBENCH_DATA_DIR to the folder that holds them), or `apt-get install "
        f"dataset-fashion-mnist` (installs {SYSTEM_DIR}, found with any data_dir); or run "
        "without it: dataset=circles"
    )


def locate(root: Path, download: bool) -> dict[str, Path]:
    """Paths of the four files, downloading them with torchvision as the last resort."""
    root = Path(root).absolute()
    found = find_local(root)
    if found is not None:
        return found
    where = ", ".join(str(d) for d in candidate_dirs(root))
    names = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    help_text = (
        f"FashionMNIST not found: looked for {names} in {where}. To get it offline: "
        f"{missing_help(root)}. Or run with internet access (dataset.download=true, the "
        "default, downloads it)."
    )
    if not download:
        raise DataNotFoundError(help_text + " dataset.download=false, so nothing was downloaded.")
    try:
        torchvision_download("FashionMNIST", root, DOWNLOAD_TIMEOUT_S)
    except (URLError, OSError, RuntimeError) as err:
        raise DataNotFoundError(
            f"{help_text} The download into {root / 'FashionMNIST' / 'raw'} failed "
            f"(no internet?): {err}"
        ) from err
    found = find_files(root / "FashionMNIST" / "raw")
    if found is None:
        raise DataNotFoundError(
            f"{help_text} torchvision's download left no complete set of files."
        )
    return found


def fashion_mnist_shape(*, download: bool) -> DataShape:
    """FashionMNIST's shape without reading it (the standard files' sizes)."""
    del download
    return DataShape((1, IMAGE_SIZE, IMAGE_SIZE), NUM_CLASSES, N_TRAIN, N_TEST)


def load_fashion_mnist(
    *, root: Path, device: torch.device, seed: int, download: bool
) -> DeviceDataset:
    """Load FashionMNIST onto ``device``, standardized with the training split's mean/std.

    ``seed`` is unused (the data are fixed); it is accepted like every loader's.
    """
    del seed
    paths = locate(root, download)
    train_x, train_y = read_split(paths["train_images"], paths["train_labels"])
    test_x, test_y = read_split(paths["test_images"], paths["test_labels"])
    train, test = normalize_per_channel(
        torch.from_numpy(train_x.copy()).unsqueeze(1),
        torch.from_numpy(test_x.copy()).unsqueeze(1),
        device,
        "fashion_mnist",
    )
    return DeviceDataset(
        name="fashion_mnist",
        train_x=train,
        train_y=torch.from_numpy(train_y.astype(np.int64)).to(device),
        test_x=test,
        test_y=torch.from_numpy(test_y.astype(np.int64)).to(device),
        input_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        num_classes=NUM_CLASSES,
    )
