"""``metavae data fashion-mnist``: importing, verifying and reading Fashion-MNIST's idx files.

The official files hold 60,000 + 10,000 images; the tests write small synthetic idx files in the
exact format and point the expected shapes and digests at them (``small_official``), so every
check of the importer runs on them. A slow test imports the real files when they are present.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, synthetic_digits, write_idx
from metavae.cli import main
from metavae.data import mnist
from metavae.data.mnist import FASHION_FILES, FASHION_SOURCE, import_fashion_mnist, load_split
from metavae.errors import DataError

STEMS = list(FASHION_FILES)


def _arrays(n_train: int = 400, n_test: int = 200) -> dict[str, np.ndarray]:
    out = {}
    for prefix, n, seed in (("train", n_train, 5), ("t10k", n_test, 6)):
        images, labels = synthetic_digits(n, seed)
        out[f"{prefix}-images-idx3-ubyte"], out[f"{prefix}-labels-idx1-ubyte"] = images, labels
    return out


def _write_source(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The four files, images gzipped and labels plain (the importer takes either form)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / stem, array, compress="images" in stem)
    return folder


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of synthetic Fashion-MNIST files, declared official: the expected shapes and
    SHA-256 digests are those of these files."""
    arrays = _arrays()
    folder = _write_source(tmp_path / "src", arrays)
    files = {}
    for stem in STEMS:
        path = next(folder.glob(f"{stem}*"))
        data = _content(path)
        files[stem] = (hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setattr(mnist, "FASHION_FILES", files)
    monkeypatch.setattr(mnist, "SHAPES", {stem: arrays[stem].shape for stem in STEMS})
    return folder


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metavae: error: ") and "Traceback" not in err, err
    return err


def test_import_then_read_round_trip(source, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "fashion-mnist", "--source", str(source), "--root", str(root)]) == 0
    assert "Fashion-MNIST (60,000 train / 10,000 test) verified in" in capsys.readouterr().out
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(STEMS)  # written uncompressed, no temporary files left
    expected = _arrays()
    for train, prefix in ((True, "train"), (False, "t10k")):
        split = load_split(root, train=train, dataset="FashionMNIST")
        assert torch.equal(split.images, torch.from_numpy(expected[f"{prefix}-images-idx3-ubyte"]))
        assert torch.equal(split.labels, torch.from_numpy(expected[f"{prefix}-labels-idx1-ubyte"].astype(np.int64)))


def test_data_dir_is_the_default_root_and_a_second_import_needs_no_source(source, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "fashion-mnist", "--source", str(source), "--data-dir", str(root)]) == 0
    for path in source.iterdir():
        path.unlink()  # the imported files are kept and verified; the source is no longer read
    assert main(["data", "fashion-mnist", "--source", str(source), "--data-dir", str(root)]) == 0
    assert "verified in" in capsys.readouterr().out


def test_missing_file_says_how_to_get_the_files(source, tmp_path, capsys):
    (source / "t10k-labels-idx1-ubyte").unlink()
    root = tmp_path / "data"
    assert main(["data", "fashion-mnist", "--source", str(source), "--root", str(root)]) == 2
    err = _one_line_error(capsys)
    assert "lacks t10k-labels-idx1-ubyte (or .gz)" in err
    assert "apt-get install dataset-fashion-mnist" in err and "--source DIR" in err
    assert not root.exists()  # nothing written


def test_default_source_absent(source, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_SOURCE", tmp_path / "no-such-folder")
    assert main(["data", "fashion-mnist", "--root", str(tmp_path / "data")]) == 2
    err = _one_line_error(capsys)
    assert f"{tmp_path / 'no-such-folder'} does not exist" in err and "apt-get install dataset-fashion-mnist" in err


def test_wrong_digest_is_refused_and_nothing_is_written(source, tmp_path, capsys):
    images, _ = synthetic_digits(200, 99)  # same shape as the expected test images, other content
    write_idx(source / "t10k-images-idx3-ubyte", images, compress=True)
    root = tmp_path / "data"
    assert main(["data", "fashion-mnist", "--source", str(source), "--root", str(root)]) == 2
    err = _one_line_error(capsys)
    assert "t10k-images-idx3-ubyte.gz: SHA-256 of its content does not match the official Fashion-MNIST" in err
    assert not (root / "FashionMNIST" / "raw").exists() or not any((root / "FashionMNIST" / "raw").iterdir())


def test_wrong_shape_is_refused(source, tmp_path, capsys):
    write_idx(source / "train-labels-idx1-ubyte", np.zeros(399, dtype=np.uint8))
    assert main(["data", "fashion-mnist", "--source", str(source), "--root", str(tmp_path / "data")]) == 2
    err = _one_line_error(capsys)
    assert "train-labels-idx1-ubyte: holds an array of shape (399,), Fashion-MNIST's train-labels-idx1-ubyte has (400,)" in err


@pytest.mark.parametrize("damage", ["truncated", "bad magic", "bad gzip"])
def test_damaged_file_is_refused(source, tmp_path, capsys, damage):
    path = source / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(gzip.compress(data[:-100]))
    elif damage == "bad magic":
        path.write_bytes(gzip.compress(b"\x01" + data[1:]))
    else:
        path.write_bytes(path.read_bytes()[:1000])
    assert main(["data", "fashion-mnist", "--source", str(source), "--root", str(tmp_path / "data")]) == 2
    err = _one_line_error(capsys)
    expected = {"truncated": "truncated or corrupted", "bad magic": "not an idx file", "bad gzip": "cannot be read"}[damage]
    assert str(path) in err and expected in err


def test_a_corrupted_imported_file_is_caught_when_read(source, tmp_path):
    root = tmp_path / "data"
    import_fashion_mnist(root, source)
    target = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch .* `metavae data fashion-mnist"):
        load_split(root, train=False, dataset="FashionMNIST")


def test_source_flag_is_refused_for_mnist(tmp_path, capsys):
    assert main(["data", "mnist", "--source", str(tmp_path), "--root", str(tmp_path / "data")]) == 2
    assert "--source is for `metavae data fashion-mnist` and `metavae data norb`" in _one_line_error(capsys)


def test_missing_fashion_data_at_training_names_the_import_command(tmp_path, capsys):
    assert main(["train", "configs/fashion_mnist/rotate_sparse.yaml", "--data-dir", str(tmp_path / "empty"),
                 "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "FashionMNIST/raw/train-images-idx3-ubyte" in err and "metavae data fashion-mnist" in err


def test_a_fashion_config_trains_on_the_imported_files(source, tmp_path):
    """The shipped config reads <root>/FashionMNIST (there is no MNIST under this root)."""
    root = tmp_path / "data"
    import_fashion_mnist(root, source)
    sets = [item for key, value in TINY for item in ("--set", f"{key}={json.dumps(value)}")]
    out = tmp_path / "run"
    assert main(["train", "configs/fashion_mnist/shear_contiguous.yaml", "--data-dir", str(root), "--out", str(out),
                 "--no-progress", *sets]) == 0
    assert "dataset: fashion_mnist" in (out / "config.yaml").read_text()


REAL_SOURCE = Path(os.environ.get("FASHION_MNIST_SOURCE", FASHION_SOURCE))


@pytest.mark.slow
@pytest.mark.skipif(not all((REAL_SOURCE / f"{s}.gz").exists() or (REAL_SOURCE / s).exists() for s in STEMS),
                    reason=f"needs the real Fashion-MNIST files in {REAL_SOURCE} (apt-get install dataset-fashion-mnist)")
def test_real_files_import_with_their_official_digests(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "fashion-mnist", "--source", str(REAL_SOURCE), "--root", str(root)]) == 0
    train, test = load_split(root, train=True, dataset="FashionMNIST"), load_split(root, train=False, dataset="FashionMNIST")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10 and torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.labels[:4].tolist() == [9, 0, 0, 3]
    assert abs(train.images.float().mean().item() / 255 - 0.2860) < 1e-4


def test_the_papers_mnist_numbers_are_not_shown_beside_fashion_mnist_panels():
    from metavae.evaluation.paper import paper_probe_accuracy

    assert paper_probe_accuracy("fashion_mnist", "rotate", "sparse") == {}
    assert paper_probe_accuracy("mnist", "rotate", "sparse")["metavae"] == 0.88
    assert paper_probe_accuracy("norb", "azimuth", "sparse")["metavae"] == 0.63
