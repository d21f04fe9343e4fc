"""Tests of initbench.data: file loaders, synthetic sets, the device-resident batching."""

from __future__ import annotations

import gzip
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import initbench.data as data
from helpers import write_cifar, write_cifar_batch
from initbench.data import (
    DataNotFoundError,
    DeviceDataset,
    dataset_shape,
    list_datasets,
    load_dataset,
    validate_dataset_params,
)
from initbench.data import cifar10 as cifar_module
from initbench.data import fashion_mnist as fmnist_module
from initbench.data.base import CROP_PADDING, crop_and_flip

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "dataset"
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_STEMS = list(fmnist_module.FILES.values())


@pytest.fixture
def no_system_fmnist(monkeypatch, tmp_path):
    """Hide Debian's FashionMNIST so that only the files a test writes are found."""
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "no-system-copy")


# ----------------------------------------------------------------------------- registry, YAML


def test_list_datasets():
    assert list_datasets() == ["fashion_mnist", "cifar10", "circles", "gaussian"]


def test_yaml_files_match_registry():
    files = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    assert files == sorted(list_datasets())


@pytest.mark.parametrize("name", list_datasets())
def test_yaml_fields_are_the_loader_params_with_comments(name):
    path = CONF_DIR / f"{name}.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg.pop("name") == name
    params = data.get_dataset_params(name)
    assert set(cfg) == set(params), f"{path}: fields differ from the loader's parameters"
    assert validate_dataset_params(name, **cfg) == cfg
    assert cfg == {k: p.default for k, p in params.items()}, "YAML and code defaults disagree"
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{path}: field without a comment: {line!r}"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("imagenet", {}, "valid datasets: fashion_mnist, cifar10, circles, gaussian"),
        ("circles", {"n": 10}, "valid parameters: n_train, n_test, noise, factor"),
        ("circles", {"n_train": 0}, "n_train must be an integer >= 1"),
        ("circles", {"n_test": -5}, "n_test must be an integer >= 1"),
        ("circles", {"noise": -0.1}, "noise must be a finite number >= 0"),
        ("circles", {"noise": float("nan")}, "noise must be a finite number >= 0"),
        ("circles", {"factor": 1.0}, "factor must be a finite number in [0, 1)"),
        ("gaussian", {"n": 0}, "n must be an integer >= 1"),
        ("gaussian", {"n": 1.5}, "n must be an integer >= 1"),
        ("gaussian", {"n": True}, "n must be an integer >= 1"),
        ("gaussian", {"dim": 0}, "dim must be an integer >= 1"),
        ("gaussian", {"num_classes": 1}, "num_classes must be an integer >= 2"),
        ("fashion_mnist", {"download": "yes"}, "download must be true or false"),
        ("fashion_mnist", {"augment": True}, "takes no parameter(s) augment"),
        ("cifar10", {"augment": 1}, "augment must be true or false"),
    ],
)
def test_validate_rejects_bad_values(name, params, expected):
    with pytest.raises(ValueError) as err:
        validate_dataset_params(name, **params)
    assert expected in str(err.value)


def test_validate_fills_defaults_and_accepts_good_values():
    assert validate_dataset_params("circles", noise=0) == {
        "n_train": 300,
        "n_test": 100,
        "noise": 0,
        "factor": 0.5,
    }
    assert validate_dataset_params("cifar10", augment=False)["augment"] is False


def test_load_validates_before_looking_for_files(tmp_path, no_system_fmnist):
    with pytest.raises(ValueError, match="download must be true or false"):
        load_dataset("fashion_mnist", root=tmp_path, download="no")
    with pytest.raises(ValueError, match="seed must be an integer"):
        load_dataset("circles", root=tmp_path, seed="1")


@pytest.mark.parametrize(
    "name, params",
    [
        ("circles", {}),
        ("circles", {"n_train": 7, "n_test": 3}),
        ("gaussian", {"n": 20, "n_test": 5, "dim": 3, "num_classes": 4}),
    ],
)
def test_dataset_shape_is_what_loading_gives(tmp_path, name, params):
    shape = dataset_shape(name, **params)
    ds = load_dataset(name, root=tmp_path, **params)
    assert shape.input_shape == ds.input_shape and shape.num_classes == ds.num_classes
    assert (shape.n_train, shape.n_test) == (len(ds.train_y), len(ds.test_y))
    tensors = (ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    assert shape.nbytes == sum(t.numel() * t.element_size() for t in tensors)


def test_dataset_shape_checks_its_parameters():
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        dataset_shape("gaussian", dim=0)


# ----------------------------------------------------------------------------- FashionMNIST


@pytest.fixture(scope="module")
def real_fmnist():
    if not all((REAL_FMNIST / f"{stem}.gz").is_file() for stem in FMNIST_STEMS):
        pytest.skip(
            f"real FashionMNIST not in {REAL_FMNIST} (apt-get install -y dataset-fashion-mnist)"
        )
    return load_dataset("fashion_mnist", root=REAL_FMNIST, download=False)


def test_fashion_mnist_real_files(real_fmnist):
    ds = real_fmnist
    shape = dataset_shape("fashion_mnist")
    assert (shape.input_shape, shape.num_classes) == (ds.input_shape, ds.num_classes)
    assert (shape.n_train, shape.n_test) == (len(ds.train_y), len(ds.test_y))
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and not ds.augment
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert ds.test_y.bincount().tolist() == [1000] * 10
    assert abs(ds.train_x.mean().item()) < 1e-4 and abs(ds.train_x.std().item() - 1) < 1e-4
    # the test split uses the training statistics: close to, not exactly, 0 and 1
    assert abs(ds.test_x.mean().item()) < 0.05 and abs(ds.test_x.std().item() - 1) < 0.05


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_fmnist(folder: Path, n_train=20, n_test=10, compress=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, array in arrays.items():
        magic = 2051 if "images" in stem else 2049
        _write_idx(folder / (f"{stem}.gz" if compress else stem), array, magic, compress)
    return arrays


@pytest.mark.parametrize("layout", [".", "fashion_mnist", "FashionMNIST/raw"])
@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_small_files(tmp_path, no_system_fmnist, layout, compress):
    arrays = _write_fmnist(tmp_path / layout, compress=compress)
    ds = load_dataset("fashion_mnist", root=tmp_path, download=False)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    raw = arrays["train-images-idx3-ubyte"].astype(np.float64)
    expected = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(ds.train_x[:, 0].numpy(), expected, atol=1e-5)


def test_fashion_mnist_search_order(tmp_path, no_system_fmnist):
    _write_fmnist(tmp_path / "FashionMNIST" / "raw", n_train=30)
    _write_fmnist(tmp_path, n_train=20)
    assert load_dataset("fashion_mnist", root=tmp_path).train_x.shape[0] == 20


def test_fashion_mnist_system_dir_is_searched(tmp_path, monkeypatch):
    _write_fmnist(tmp_path / "system", n_train=12)
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "system")
    ds = load_dataset("fashion_mnist", root=tmp_path / "empty", download=False)
    assert ds.train_x.shape[0] == 12


def _truncate_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _wrong_magic(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[:4] = (2049).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(raw)))


def _wrong_size(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[4:8] = (21).to_bytes(4, "big")  # declares 21 images, holds 20
    path.write_bytes(gzip.compress(bytes(raw)))


def _too_few_labels(path: Path) -> None:
    _write_idx(path.parent / "train-labels-idx1-ubyte.gz", np.arange(19) % 10, 2049)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_truncate_gzip, "truncated or corrupt gzip"),
        (_wrong_magic, "magic number is 2049, expected 2051"),
        (_wrong_size, "declares shape (21, 28, 28)"),
        (_too_few_labels, "holds 20 images but"),
    ],
)
def test_fashion_mnist_corrupt_files(tmp_path, no_system_fmnist, corrupt, message):
    _write_fmnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    corrupt(images)
    with pytest.raises(ValueError) as err:
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    text = str(err.value)
    assert message in text
    assert str(images) in text
    assert "apt-get install dataset-fashion-mnist" in text and "download=true" in text


def test_fashion_mnist_missing_without_download(tmp_path, no_system_fmnist):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # an incomplete set is not enough
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    assert time.perf_counter() - start < 2
    assert isinstance(err.value, FileNotFoundError)
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text
    assert str(tmp_path) in text and "dataset.download=true" in text


def _network_reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 80), timeout=3).close()
        return True
    except OSError:
        return False


def test_fashion_mnist_download_without_network_fails_fast(tmp_path, no_system_fmnist):
    if _network_reachable("fashion-mnist.s3-website.eu-central-1.amazonaws.com"):
        pytest.skip("network is reachable: download=true would really download FashionMNIST")
    before = socket.getdefaulttimeout()
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match="failed"):
        load_dataset("fashion_mnist", root=tmp_path, download=True)
    assert time.perf_counter() - start < 15
    assert socket.getdefaulttimeout() == before


@pytest.fixture
def silent_server():
    """A local HTTP 'server' that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    server.close()


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_download_from_hanging_server_is_bounded(
    tmp_path, no_system_fmnist, monkeypatch, silent_server, name
):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [silent_server])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", silent_server + "c.tar.gz")
    monkeypatch.setattr(fmnist_module, "DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(cifar_module, "DOWNLOAD_TIMEOUT_S", 0.5)
    before = socket.getdefaulttimeout()
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match="run with internet access"):
        load_dataset(name, root=tmp_path, download=True)
    assert time.perf_counter() - start < 8
    assert socket.getdefaulttimeout() == before


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("layout", [".", "cifar-10-batches-py"])
def test_cifar10_small_files(tmp_path, layout):
    raw, labels = write_cifar(tmp_path / layout)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (10, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.augment
    shape = dataset_shape("cifar10")  # the real files' sizes: 50k/10k
    assert (shape.input_shape, shape.num_classes, shape.n_train) == (ds.input_shape, 10, 50_000)
    assert ds.train_y.tolist() == labels
    raw = raw.astype(np.float64)
    mean = raw.mean(axis=(0, 2, 3), keepdims=True)
    std = raw.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(ds.train_x.numpy(), (raw - mean) / std, atol=1e-5)
    per_channel = ds.train_x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(3))


def test_cifar10_wrong_shape_names_file(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "data_batch_3"
    write_cifar_batch(bad, np.zeros((20, 3000), dtype=np.uint8), [0] * 20)
    with pytest.raises(ValueError, match="expected N x 3072") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(bad) in str(err.value)


def test_cifar10_unreadable_batch_names_file(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "test_batch"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ValueError, match="cannot unpickle") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(bad) in str(err.value)


def test_cifar10_nan_input_is_rejected(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "data_batch_2"
    images = np.full((20, 3072), 100.0)
    images[3, 7] = np.nan
    write_cifar_batch(bad, images, [0] * 20)
    with pytest.raises(ValueError, match="NaN or Inf") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(bad) in str(err.value)


def test_cifar10_missing_without_download(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert time.perf_counter() - start < 2
    assert "cifar-10-batches-py" in str(err.value) and "download=true" in str(err.value)


# ----------------------------------------------------------------------------- synthetic


def test_circles():
    ds = load_dataset("circles", root="unused", seed=3)
    assert ds.train_x.shape == (300, 2) and ds.test_x.shape == (100, 2)
    assert ds.input_shape == (2,) and ds.num_classes == 2 and ds.train_x.dtype == torch.float32
    assert ds.train_y.bincount().tolist() == [150, 150]
    assert ds.test_y.bincount().tolist() == [50, 50]
    radius = ds.train_x.norm(dim=1)
    assert abs(radius[ds.train_y == 0].mean().item() - 1.0) < 0.02
    assert abs(radius[ds.train_y == 1].mean().item() - 0.5) < 0.02
    assert 0.03 < (radius[ds.train_y == 0] - 1).std().item() < 0.07  # noise 0.05


def test_circles_params_and_seed():
    exact = load_dataset("circles", root="unused", noise=0.0, factor=0.3, n_train=11, n_test=5)
    radius = exact.train_x.norm(dim=1)
    torch.testing.assert_close(radius[exact.train_y == 0], torch.ones(5))
    torch.testing.assert_close(radius[exact.train_y == 1], torch.full((6,), 0.3))
    a, b = (load_dataset("circles", root="unused", seed=s) for s in (1, 1))
    c = load_dataset("circles", root="unused", seed=2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)
    assert not torch.equal(a.train_x[:100], a.test_x)  # the test split is a fresh draw


def test_gaussian():
    params = {"seed": 0, "n": 2048, "n_test": 64, "dim": 32, "num_classes": 4}
    ds = load_dataset("gaussian", root="unused", **params)
    assert ds.train_x.shape == (2048, 32) and ds.test_x.shape == (64, 32)
    assert ds.input_shape == (32,) and ds.num_classes == 4
    assert abs(ds.train_x.mean().item()) < 0.02 and abs(ds.train_x.std().item() - 1) < 0.02
    assert set(ds.train_y.tolist()) == {0, 1, 2, 3}
    same = load_dataset("gaussian", root="unused", **params)
    other = load_dataset("gaussian", root="unused", **{**params, "seed": 1})
    assert torch.equal(ds.train_x, same.train_x) and torch.equal(ds.train_y, same.train_y)
    assert not torch.equal(ds.train_x, other.train_x)
    default = load_dataset("gaussian", root="unused")
    assert default.train_x.shape == (1024, 512) and default.test_x.shape == (256, 512)


# ----------------------------------------------------------------------------- DeviceDataset


def _indexed(n_train=103, n_test=17) -> DeviceDataset:
    """Vector dataset whose input is its own index (labels = index mod 5), to track order."""
    train = torch.arange(n_train, dtype=torch.float32)[:, None]
    test = torch.arange(n_test, dtype=torch.float32)[:, None]
    return DeviceDataset(
        "indexed", train, torch.arange(n_train) % 5, test, torch.arange(n_test) % 5, (1,), 5
    )


def _epoch(ds, split, batch_size, seed=None, generator=None):
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    batches = list(ds.batches(split, batch_size, generator))
    return batches, torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_train_batches_cover_every_index_once_and_keep_partial_batch():
    ds = _indexed()
    batches, x, y = _epoch(ds, "train", 10, seed=0)
    assert [len(b[0]) for b in batches] == [10] * 10 + [3]
    assert ds.num_batches("train", 10) == 11 and ds.num_batches("test", 10) == 2
    assert sorted(x[:, 0].long().tolist()) == list(range(103))
    assert torch.equal(y, x[:, 0].long() % 5)  # inputs and labels stay paired
    assert not torch.equal(x[:, 0].long(), torch.arange(103))  # shuffled


def test_train_order_follows_generator():
    ds = _indexed()
    first = _epoch(ds, "train", 16, seed=7)[1]
    assert torch.equal(first, _epoch(ds, "train", 16, seed=7)[1])
    assert not torch.equal(first, _epoch(ds, "train", 16, seed=8)[1])
    gen = torch.Generator().manual_seed(7)
    epoch1, epoch2 = (_epoch(ds, "train", 16, generator=gen)[1] for _ in range(2))
    assert torch.equal(epoch1, first) and not torch.equal(epoch1, epoch2)


def test_generator_state_does_not_depend_on_consumption():
    ds = _indexed()
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    next(iter(ds.batches("train", 8, a)))
    list(ds.batches("train", 8, b))
    assert torch.equal(a.get_state(), b.get_state())


def test_test_batches_in_order():
    ds = _indexed()
    batches, x, y = _epoch(ds, "test", 5, seed=0)
    assert [len(b[0]) for b in batches] == [5, 5, 5, 2]
    assert x[:, 0].long().tolist() == list(range(17))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ds: ds.batches("val", 4), "split must be 'train' or 'test'"),
        (lambda ds: ds.batches("train", 0), "batch_size must be an integer >= 1"),
        (lambda ds: ds.num_batches("test", 2.0), "batch_size must be an integer >= 1"),
        (lambda ds: ds.sample_batch(104), r"n must be an integer in \[1, 103\]"),
    ],
)
def test_bad_batch_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(_indexed())


def test_sample_batch():
    ds = _indexed()
    x, y = ds.sample_batch(32, torch.Generator().manual_seed(0))
    assert x.shape == (32, 1) and len(set(x[:, 0].tolist())) == 32
    assert torch.equal(y, x[:, 0].long() % 5)
    x2, _ = ds.sample_batch(32, torch.Generator().manual_seed(0))
    x3, _ = ds.sample_batch(32, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_rejected(bad):
    x = torch.randn(10, 3)
    x[4, 1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        DeviceDataset("bad", x, torch.zeros(10).long(), x[:2], torch.zeros(2).long(), (3,), 2)


def test_dataset_checks_shapes_and_labels():
    x, y = torch.randn(10, 3), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="expected N x"):
        DeviceDataset("bad", x, y, x, y, (4,), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        DeviceDataset("bad", x, y + 2, x, y, (3,), 2)
    with pytest.raises(ValueError, match="needs image inputs"):
        DeviceDataset("bad", x, y, x, y, (3,), 2, augment=True)


# ----------------------------------------------------------------------------- augmentation


def _images(augment: bool, n=24, size=8) -> DeviceDataset:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 10
    return DeviceDataset("img", x, y, x[:4], y[:4], (3, size, size), 10, augment=augment)


def test_crop_and_flip_known_offsets():
    x = torch.randn(3, 2, 6, 6)
    p = CROP_PADDING
    crops = torch.tensor([[p, p], [p, p], [p - 1, p + 2]])
    out = crop_and_flip(x, crops, torch.tensor([False, True, False]))
    assert torch.equal(out[0], x[0])  # centre crop, no flip: identity
    assert torch.equal(out[1], x[1].flip(-1))
    # offset (-1, +2): shifted down by 1 and left by 2, zeros coming in at the edges
    assert torch.equal(out[2, :, 1:, :4], x[2, :, :5, 2:])
    assert (out[2, :, 0] == 0).all() and (out[2, :, :, 4:] == 0).all()


def _matches_some_crop(aug: torch.Tensor, orig: torch.Tensor) -> tuple[int, int, bool] | None:
    p = CROP_PADDING
    h, w = orig.shape[-2:]
    padded = torch.nn.functional.pad(orig, (p, p, p, p))
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            for flip in (False, True):
                if torch.equal(aug, crop.flip(-1) if flip else crop):
                    return dy, dx, flip
    return None


def test_augmentation_is_a_crop_and_flip_of_the_original():
    aug_ds, plain_ds = _images(True), _images(False)
    _, aug_x, aug_y = _epoch(aug_ds, "train", 10, seed=5)
    _, plain_x, plain_y = _epoch(plain_ds, "train", 10, seed=5)
    assert aug_x.shape == plain_x.shape == (24, 3, 8, 8)
    assert torch.equal(aug_y, plain_y)  # same shuffle: the permutation is drawn first
    assert not torch.equal(aug_x, plain_x)
    found = [_matches_some_crop(a, o) for a, o in zip(aug_x, plain_x, strict=True)]
    assert all(f is not None for f in found)
    assert any(f[2] for f in found) and not all(f[2] for f in found)  # some flipped, some not
    assert any(f[:2] != (CROP_PADDING, CROP_PADDING) for f in found)  # some shifted


def test_augmentation_is_deterministic_and_train_only():
    ds = _images(True)
    a = _epoch(ds, "train", 7, seed=3)[1]
    assert torch.equal(a, _epoch(ds, "train", 7, seed=3)[1])
    assert not torch.equal(a, _epoch(ds, "train", 7, seed=4)[1])
    assert torch.equal(_epoch(ds, "test", 3, seed=3)[1], ds.test_x)
    x, _ = ds.sample_batch(24, torch.Generator().manual_seed(0))
    assert sorted(x.sum(dim=(1, 2, 3)).tolist()) == sorted(ds.train_x.sum(dim=(1, 2, 3)).tolist())


@pytest.mark.cuda
def test_cuda_batches_match_cpu():
    cpu = _images(True)
    gpu = DeviceDataset(
        "img",
        *(t.cuda() for t in (cpu.train_x, cpu.train_y, cpu.test_x, cpu.test_y)),
        cpu.input_shape,
        cpu.num_classes,
        augment=True,
    )
    _, x_cpu, y_cpu = _epoch(cpu, "train", 10, seed=2)
    _, x_gpu, y_gpu = _epoch(gpu, "train", 10, seed=2)
    assert x_gpu.is_cuda and torch.equal(x_gpu.cpu(), x_cpu) and torch.equal(y_gpu.cpu(), y_cpu)


def test_cifar10_fixture_is_a_python2_pickle_and_loads_exactly(tmp_path):
    # Python 2 wrote `str` keys and the image bytes as BINSTRING: Python 3's default ASCII
    # decoding fails on them, which is why the loader must pass encoding="bytes".
    images = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)  # every byte value, >= 0x80
    path = tmp_path / "data_batch_1"
    write_cifar_batch(path, images, [7, 3])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())
    x, y = cifar_module.read_batch(path)
    assert x.dtype == np.uint8 and x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(x.reshape(2, 3072), images)
    assert y.tolist() == [7, 3] and y.dtype == np.int64


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_missing_data_names_data_dir_absolute_paths_and_an_offline_alternative(
    tmp_path, no_system_fmnist, monkeypatch, name
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, root="data", download=False)
    text = str(err.value)
    assert f"data_dir={tmp_path / 'data'}" in text and "$INITBENCH_DATA_DIR" in text
    assert f" {tmp_path / 'data'}" in text and " data " not in text  # absolute, never relative
    assert "dataset=circles" in text
    if name == "cifar10":
        assert "dataset=fashion_mnist" in text and "apt-get install dataset-fashion-mnist" in text
    assert data.missing_data(name, "data") is not None and data.missing_data(name, "data") in text


def test_missing_data_is_none_when_the_files_are_there(tmp_path, no_system_fmnist):
    assert data.missing_data("circles", tmp_path / "nothing") is None  # generated
    assert data.missing_data("cifar10", tmp_path) is not None
    write_cifar(tmp_path / "cifar-10-batches-py")
    assert data.missing_data("cifar10", tmp_path) is None
    with pytest.raises(ValueError, match="unknown dataset"):
        data.missing_data("imagenet", tmp_path)


# ---- the holdout split (trainer.holdout) ------------------------------------------------------


def test_hold_out_moves_the_same_examples_whatever_the_seed():
    a = load_dataset("gaussian", root="data", seed=0, n=300, n_test=50, dim=6)
    b = load_dataset("gaussian", root="data", seed=0, n=300, n_test=50, dim=6)
    ha, hb = a.hold_out(40), b.hold_out(40)
    assert ha.train_x.shape[0] == 260 and ha.holdout_x.shape[0] == 40
    assert torch.equal(ha.holdout_x, hb.holdout_x) and torch.equal(ha.holdout_y, hb.holdout_y)
    rows = {tuple(r) for r in ha.train_x.tolist()}
    assert not any(tuple(r) in rows for r in ha.holdout_x.tolist())  # disjoint
    assert rows | {tuple(r) for r in ha.holdout_x.tolist()} == {
        tuple(r) for r in a.train_x.tolist()
    }
    assert torch.equal(ha.test_x, a.test_x)
    batches = list(ha.batches("holdout", 16))  # in order, never shuffled
    assert torch.equal(torch.cat([x for x, _ in batches]), ha.holdout_x)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'holdout'"):
        a.num_batches("holdout", 16)
    with pytest.raises(
        ValueError, match=r"trainer.holdout must be an integer in \[0, 300\) \(got 300\)"
    ):
        a.hold_out(300)
