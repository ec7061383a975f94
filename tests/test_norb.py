"""smallNORB: the binary-matrix reader, preprocessing, stereo and instance split, the cache, the
NORB families and splits of PAPER.md, ``metavae data norb``, and training through the config path.

All on synthetic files written in the exact official format by ``norb_helpers`` (plain numpy);
expected values are computed here independently of the library.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metavae.cli import main
from metavae.config import load_config
from metavae.data.families import GRIDS, FactorSelectedImages, FactorSplit, split_values
from metavae.data.norb import EXPECTED_FILES, cache_paths, import_smallnorb, load_smallnorb, read_smallnorb_part
from metavae.errors import ConfigError, DataError
from metavae.experiments.transformed_images import build_task
from norb_helpers import (
    INT32_MAGIC,
    PREFIX,
    UINT8_MAGIC,
    decode,
    factor_value,
    header,
    make_norb_root,
    synthetic_pairs,
    write_matrix,
    write_smallnorb,
)

TRAIN_DAT = f"{PREFIX['train']}-dat.mat"
TEST_DAT = f"{PREFIX['test']}-dat.mat"


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- the files and their format
def test_expected_names_and_sizes_follow_from_the_format():
    pairs, side = 24300, 96
    assert EXPECTED_FILES == {
        "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat": 4 + 4 + 4 * 4 + pairs * 2 * side * side,
        "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat": 4 + 4 + 3 * 4 + pairs * 4,
        "smallnorb-5x46789x9x18x6x2x96x96-training-info.mat": 4 + 4 + 3 * 4 + pairs * 4 * 4,
        "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat": 447_897_624,
        "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat": 97_220,
        "smallnorb-5x01235x9x18x6x2x96x96-testing-info.mat": 388_820,
    }


@pytest.mark.parametrize("compress", [False, True])
def test_plain_and_gzipped_files_read_back_exactly(tmp_path, compress):
    written = write_smallnorb(tmp_path, n_train=18, n_test=36, compress=compress)
    assert all(p.name.endswith(".mat.gz") == compress for p in tmp_path.iterdir())
    for part in ("train", "test"):
        dat, cat, info, sources = read_smallnorb_part(tmp_path, part)
        np.testing.assert_array_equal(dat, written[part].dat)
        np.testing.assert_array_equal(cat, written[part].cat)
        np.testing.assert_array_equal(info, written[part].info)
        assert dat.dtype == np.uint8 and cat.dtype.kind == "i" and info.shape == (len(cat), 4)
        assert len(sources) == 3 and all(len(s["sha256"]) == 64 for s in sources.values())


def _one_file(tmp_path: Path, name: str, data: bytes) -> Path:
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_a_wrong_magic_number_is_one_line_naming_the_file_and_the_fix(tmp_path):
    good = synthetic_pairs("train", 18).cat
    _one_file(tmp_path, f"{PREFIX['train']}-cat.mat", header(UINT8_MAGIC, good.shape) + good.astype("<i4").tobytes())
    with pytest.raises(DataError) as err:
        read_smallnorb_part(tmp_path, "train")
    msg = one_line(err)
    assert "training-cat.mat: magic number 0x1e3d4c55 is not 0x1e3d4c54" in msg and "metavae data norb --source" in msg


def test_an_int32_magic_on_the_image_file_is_refused(tmp_path):
    dat = synthetic_pairs("test", 18).dat
    _one_file(tmp_path, TEST_DAT, header(INT32_MAGIC, dat.shape) + dat.tobytes())
    with pytest.raises(DataError, match=r"testing-dat.mat: magic number 0x1e3d4c54 is not 0x1e3d4c55.*not a smallNORB dat"):
        read_smallnorb_part(tmp_path, "test")


def test_a_truncated_file_is_one_line(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    path = tmp_path / TRAIN_DAT
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        read_smallnorb_part(tmp_path, "train")
    msg = one_line(err)
    assert TRAIN_DAT in msg and "truncated or corrupted" in msg and "metavae data norb --source" in msg
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(DataError, match=r"training-dat.mat: 6 bytes, too short .* \(truncated\)"):
        read_smallnorb_part(tmp_path, "train")
    path.write_bytes(header(UINT8_MAGIC, (18, 2, 96, 96))[:14])  # magic, ndim, then a dim and a half
    with pytest.raises(DataError, match=r"shorter than its 24-byte header"):
        read_smallnorb_part(tmp_path, "train")


def test_a_corrupt_gzip_is_one_line(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18, compress=True)
    path = tmp_path / f"{TRAIN_DAT}.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError) as err:
        read_smallnorb_part(tmp_path, "train")
    msg = one_line(err)
    assert f"{TRAIN_DAT}.gz: cannot be read" in msg and "metavae data norb --source" in msg


def test_wrong_dims_are_refused(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    small = np.zeros((18, 2, 48, 48), dtype=np.uint8)
    write_matrix(tmp_path / TRAIN_DAT, small)
    with pytest.raises(DataError, match=r"training-dat.mat: dims \[18, 2, 48, 48\], expected \[N, 2, 96, 96\]"):
        read_smallnorb_part(tmp_path, "train")
    write_matrix(tmp_path / f"{PREFIX['test']}-info.mat", synthetic_pairs("test", 18).info[:, 0].copy())  # ndim 1
    with pytest.raises(DataError, match=r"testing-info.mat: the header announces 1 dimensions, a smallNORB info file has 2"):
        read_smallnorb_part(tmp_path, "test")


def test_files_disagreeing_on_the_pairs_are_refused(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    write_matrix(tmp_path / f"{PREFIX['train']}-cat.mat", synthetic_pairs("train", 36).cat)
    with pytest.raises(DataError, match=r"disagree on the number of pairs \(dat 18, cat 36, info 18\)"):
        read_smallnorb_part(tmp_path, "train")


def test_swapped_training_and_testing_files_are_caught_by_their_instances(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    write_matrix(tmp_path / f"{PREFIX['train']}-info.mat", synthetic_pairs("test", 18).info)
    with pytest.raises(DataError, match=r"training-info.mat: instance \(for the train part\) out of range in 18 rows "
                                         r"\(allowed: \[4, 6, 7, 8, 9\]; first bad value 0\)"):
        read_smallnorb_part(tmp_path, "train")


@pytest.mark.parametrize("column, value, what", [(1, 9, "elevation"), (2, 3, "azimuth"), (3, 6, "lighting")])
def test_factor_values_out_of_range_are_refused(tmp_path, column, value, what):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    info = synthetic_pairs("test", 18).info
    info[5, column] = value
    write_matrix(tmp_path / f"{PREFIX['test']}-info.mat", info)
    with pytest.raises(DataError, match=rf"testing-info.mat: {what} out of range in 1 rows .*first bad value {value}\)"):
        read_smallnorb_part(tmp_path, "test")


def test_a_category_out_of_range_is_refused(tmp_path):
    write_smallnorb(tmp_path, n_train=18, n_test=18)
    cat = synthetic_pairs("train", 18).cat
    cat[0] = 5
    write_matrix(tmp_path / f"{PREFIX['train']}-cat.mat", cat)
    with pytest.raises(DataError, match=r"training-cat.mat: category out of range in 1 rows \(allowed: \[0, 1, 2, 3, 4\]"):
        read_smallnorb_part(tmp_path, "train")


# --------------------------------------------------------------------------- preprocessing, stereo, instance split
@pytest.fixture
def norb(tmp_path):
    """A data root with 36 synthetic pairs per part, and what was written."""
    return make_norb_root(tmp_path / "data", n_train=36, n_test=36)


def test_every_image_is_the_rounded_mean_of_its_3x3_blocks_both_cameras_as_rows_2i_2i_plus_1(norb):
    root, written = norb
    for split, part in zip(load_smallnorb(root), ("train", "test")):
        dat = written[part].dat.astype(np.float64)  # (n, 2, 96, 96)
        expected = np.rint(dat.reshape(-1, 32, 3, 32, 3).mean(axis=(2, 4)))  # (2n, 32, 32), pair-major
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape) == (72, 32, 32)
        np.testing.assert_array_equal(split.images.numpy(), expected)


def test_stereo_images_are_two_examples_with_the_pairs_label_and_factors(norb):
    root, written = norb
    train, test = load_smallnorb(root)
    for split, part in ((train, "train"), (test, "test")):
        pairs = written[part]
        m = decode(split.images.float() / 255)
        assert m.pair.tolist() == [i // 2 for i in range(72)] and m.camera.tolist() == [0, 1] * 36
        assert (m.is_test == (part == "test")).all()
        assert split.labels.tolist() == np.repeat(pairs.cat, 2).tolist()
        f = split.factors
        assert f["camera"].tolist() == [0, 1] * 36
        assert f["instance"].tolist() == np.repeat(pairs.info[:, 0], 2).tolist()
        assert f["elevation"].tolist() == np.repeat(pairs.info[:, 1], 2).tolist()
        assert f["azimuth"].tolist() == np.repeat(pairs.info[:, 2] // 2, 2).tolist()  # 0, 2, …, 34 → index 0 … 17
        assert f["lighting"].tolist() == np.repeat(pairs.info[:, 3], 2).tolist()
        assert not torch.equal(split.images[0::2], split.images[1::2])  # the two cameras' images, not one twice


def test_the_official_instance_split_gives_the_train_and_test_parts(norb):
    root, _ = norb
    train, test = load_smallnorb(root)
    assert set(train.factors["instance"].tolist()) == {4, 6, 7, 8, 9}
    assert set(test.factors["instance"].tolist()) == {0, 1, 2, 3, 5}
    task = build_task(load_config(None, [("data.dataset", "norb"), ("data.family", "lighting"), ("data.validation_size", 2),
                                         ("data.context_size", 3)]), root)
    for part, instances in (("train", {4, 6, 7, 8, 9}), ("test", {0, 1, 2, 3, 5})):
        for name in task.distribution_names() + task.held_out_names():
            batch = task.distribution_batch(name, part, None, 6, torch.Generator().manual_seed(0))
            m = decode(batch.x)
            assert (m.is_test == (part == "test")).all()
            info = synthetic_pairs(part, 36).info
            assert set(info[m.pair, 0].tolist()) <= instances


# --------------------------------------------------------------------------- families and splits
#: PAPER.md §2's table, written out: (train values, held-out values) of every NORB family and split
NORB_SPLITS = {
    ("elevation", "interleaved"): ([0, 2, 4, 6, 8], [1, 3, 5, 7]),
    ("elevation", "sparse"): ([1, 4, 7], [0, 2, 3, 5, 6, 8]),
    ("elevation", "contiguous"): ([0, 1, 2, 3, 4], [5, 6, 7, 8]),
    ("azimuth", "interleaved"): ([0, 2, 4, 6, 8, 10, 12, 14, 16], [1, 3, 5, 7, 9, 11, 13, 15, 17]),
    ("azimuth", "sparse"): ([0, 4, 8, 12, 16], [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17]),
    ("azimuth", "contiguous"): ([0, 1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17]),
    ("lighting", "interleaved"): ([0, 2, 4], [1, 3, 5]),
    ("lighting", "sparse"): ([1, 4], [0, 2, 3, 5]),
    ("lighting", "contiguous"): ([0, 1, 2], [3, 4, 5]),
}


def test_norb_grids_are_the_factor_indices():
    assert GRIDS["elevation"] == tuple(range(9)) and GRIDS["azimuth"] == tuple(range(18)) and GRIDS["lighting"] == tuple(range(6))


@pytest.mark.parametrize("family, split", list(NORB_SPLITS))
def test_norb_splits_are_exactly_papers_table(family, split):
    train, held_out = NORB_SPLITS[(family, split)]
    assert split_values(family, split) == (tuple(train), tuple(held_out))


@pytest.mark.parametrize("family, split", [("azimuth", "sparse"), ("elevation", "interleaved"), ("lighting", "contiguous")])
def test_the_task_trains_on_the_splits_values_and_names_them(norb, family, split):
    root, _ = norb
    task = build_task(load_config(None, [("data.dataset", "norb"), ("data.family", family), ("data.split", split),
                                         ("data.validation_size", 1)]), root)
    train, held_out = NORB_SPLITS[(family, split)]
    assert task.distribution_names() == [f"{family}={v}" for v in train]
    assert task.held_out_names() == [f"{family}={v}" for v in held_out]
    assert task.num_decoders == len(train) and task.event_shape == (1, 32, 32)


@pytest.mark.parametrize("family", ["elevation", "azimuth", "lighting"])
def test_each_distribution_is_exactly_the_examples_at_its_value(norb, family):
    root, written = norb
    train, test = load_smallnorb(root)
    images = FactorSelectedImages(family, GRIDS[family], train, test)
    for part in ("train", "test"):
        n = images.size(part)
        assert n * len(GRIDS[family]) == 72  # every example in exactly one distribution
        for d, value in enumerate(GRIDS[family]):
            x, labels = images.fetch(part, torch.full((n,), d), torch.arange(n))
            m = decode(x)
            assert (factor_value(written[part], family, m.pair) == value).all()
            expected = {(i, c) for i in range(36) if factor_value(written[part], family, np.array([i]))[0] == value
                        for c in (0, 1)}
            assert set(zip(m.pair.tolist(), m.camera.tolist())) == expected
            assert labels.tolist() == written[part].cat[m.pair].tolist()
            assert x.shape == (n, 1, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_unequal_numbers_of_examples_per_value_are_refused():
    images = torch.zeros(5, 32, 32, dtype=torch.uint8)
    split = FactorSplit(images, torch.zeros(5, dtype=torch.long), {"lighting": torch.tensor([0, 0, 1, 2, 3])})
    with pytest.raises(DataError, match=r"the train split has \[2, 1, 1, 1, 0, 0\] examples for the lighting values"):
        FactorSelectedImages("lighting", GRIDS["lighting"], split, split)


def test_train_subset_keeps_the_first_examples_of_each_value(norb):
    root, written = norb
    task = build_task(load_config(None, [("data.dataset", "norb"), ("data.family", "elevation"), ("data.train_subset", 3),
                                         ("data.validation_size", 1)]), root)
    assert task.images.size("train") == 3 and task.images.size("test") == 8
    x, _ = task.images.fetch("train", torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert decode(x).pair.tolist() == [0, 0, 9]  # elevation 0: pairs 0, 9, 18, 27 — the first three examples


def test_family_names_are_checked_against_the_dataset():
    with pytest.raises(ConfigError, match=r"config key 'data.family': 'rotate' is not a family of data.dataset 'norb'; "
                                          r"choose one of elevation, azimuth, lighting"):
        load_config(None, [("data.dataset", "norb")])
    with pytest.raises(ConfigError, match=r"'lighting' is not a family of data.dataset 'mnist'; choose one of rotate, scale, shear"):
        load_config(None, [("data.family", "lighting")])
    with pytest.raises(ConfigError, match=r"config key 'data.dataset': 'smallnorb' is not one of"):
        load_config(None, [("data.dataset", "smallnorb")])


def test_nine_norb_configs_load_with_the_papers_settings():
    paths = sorted(Path("configs/norb").glob("*.yaml"))
    assert {p.stem for p in paths} == {f"{f}_{s}" for f in ("elevation", "azimuth", "lighting")
                                       for s in ("interleaved", "sparse", "contiguous")}
    for path in paths:
        cfg = load_config(path)
        family, split = path.stem.split("_")
        assert (cfg.data.dataset, cfg.data.family, cfg.data.split) == ("norb", family, split)
        assert cfg.train.batch_size == 32 and cfg.data.context_size == 10 and cfg.train.lr == 2e-4
        assert cfg.name == f"norb_{family}_{split}" and cfg.model_name == "metavae"
        assert cfg.model.backbone == "conv" and cfg.model.conv_channels == (64, 128, 256)  # the paper's NORB networks
        assert cfg.model.conv_layers_per_stage == 3


# --------------------------------------------------------------------------- the cache
def test_a_second_load_reads_the_cache_not_the_raw_files(norb):
    root, _ = norb
    first = load_smallnorb(root)
    npz, manifest = cache_paths(root)
    assert npz.is_file() and json.loads(manifest.read_text())["examples"] == {"train": 72, "test": 72}
    shutil.move(root / "smallNORB" / "raw", root / "elsewhere")
    second = load_smallnorb(root)
    for a, b in zip(first, second):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert all(torch.equal(a.factors[k], b.factors[k]) for k in a.factors)


def test_a_damaged_cache_without_raw_files_is_one_line(norb):
    root, _ = norb
    load_smallnorb(root)
    npz, _ = cache_paths(root)
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    shutil.rmtree(root / "smallNORB" / "raw")
    with pytest.raises(DataError) as err:
        load_smallnorb(root)
    msg = one_line(err)
    assert "does not match the checksum in its manifest (damaged)" in msg and "metavae data norb --source" in msg


@pytest.mark.parametrize("damage", ["flip", "manifest", "truncate"])
def test_a_damaged_cache_is_rebuilt_from_the_raw_files(norb, damage, caplog):
    root, _ = norb
    first = load_smallnorb(root)
    npz, manifest = cache_paths(root)
    if damage == "flip":
        data = bytearray(npz.read_bytes())
        data[-200] ^= 0x01
        npz.write_bytes(bytes(data))
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:1000])
    else:
        manifest.write_text("{not json")
    again = load_smallnorb(root)
    assert "rebuilding the smallNORB cache" in caplog.text
    assert torch.equal(first[0].images, again[0].images)
    shutil.rmtree(root / "smallNORB" / "raw")  # the rebuilt cache is valid on its own
    assert torch.equal(load_smallnorb(root)[1].images, first[1].images)


def test_a_cache_of_raw_files_that_changed_since_is_rebuilt(norb):
    root, _ = norb
    old_train, _ = load_smallnorb(root)
    write_smallnorb(root / "smallNORB" / "raw", n_train=18, n_test=36)  # new training files
    new_train, _ = load_smallnorb(root)
    assert len(old_train) == 72 and len(new_train) == 36


def test_no_cache_and_no_raw_files_names_the_expected_files_and_sizes(tmp_path):
    with pytest.raises(DataError) as err:
        load_smallnorb(tmp_path)
    msg = one_line(err)
    assert all(name in msg for name in EXPECTED_FILES)
    assert "447,897,624 bytes" in msg and "97,220 bytes" in msg and "388,820 bytes" in msg


# --------------------------------------------------------------------------- metavae data norb
def test_data_norb_with_missing_files_exits_2_with_one_line(tmp_path, capsys):
    source = tmp_path / "download"
    source.mkdir()
    write_matrix(source / f"{PREFIX['test']}-cat.mat", synthetic_pairs("test", 18).cat)  # one of six present
    assert main(["data", "norb", "--source", str(source), "--root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metavae: error: smallNORB files missing from")
    missing = [name for name in EXPECTED_FILES if name != f"{PREFIX['test']}-cat.mat"]
    assert all(name in err for name in missing) and f"{PREFIX['test']}-cat.mat" not in err
    assert "447,897,624 bytes" in err
    assert not (tmp_path / "data").exists()


def test_data_norb_imports_checks_and_caches(tmp_path, capsys):
    source = tmp_path / "download"
    write_smallnorb(source, n_train=18, n_test=18, compress=True)
    root = tmp_path / "data"
    assert main(["data", "norb", "--source", str(source), "--root", str(root)]) == 0
    assert "smallNORB checked and imported" in capsys.readouterr().out
    raw = root / "smallNORB" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in EXPECTED_FILES)
    for name in EXPECTED_FILES:
        assert (raw / f"{name}.gz").read_bytes() == (source / f"{name}.gz").read_bytes()
    shutil.rmtree(source)
    train, test = load_smallnorb(root)
    assert len(train) == len(test) == 36
    manifest = json.loads(cache_paths(root)[1].read_text())
    assert set(manifest["sources"]) == {f"{name}.gz" for name in EXPECTED_FILES}


def test_data_norb_replaces_an_earlier_import_of_the_other_compression(tmp_path):
    root = tmp_path / "data"
    write_smallnorb(tmp_path / "plain", n_train=18, n_test=18)
    import_smallnorb(root, tmp_path / "plain")
    write_smallnorb(tmp_path / "gz", n_train=36, n_test=18, compress=True)
    import_smallnorb(root, tmp_path / "gz")
    assert sorted(p.name for p in (root / "smallNORB" / "raw").iterdir()) == sorted(f"{n}.gz" for n in EXPECTED_FILES)
    assert len(load_smallnorb(root)[0]) == 72


def test_a_bad_download_is_refused_before_anything_is_copied(tmp_path, capsys):
    source = tmp_path / "download"
    write_smallnorb(source, n_train=18, n_test=18)
    path = source / TEST_DAT
    path.write_bytes(path.read_bytes()[:-1])
    assert main(["data", "norb", "--source", str(source), "--root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TEST_DAT in err and "truncated or corrupted" in err
    assert not (tmp_path / "data").exists()


def test_data_norb_without_source_rebuilds_from_the_raw_files(norb, tmp_path, capsys):
    root, _ = norb
    assert main(["data", "norb", "--root", str(root)]) == 0
    assert cache_paths(root)[0].is_file()
    assert main(["data", "norb", "--root", str(tmp_path / "nothing")]) == 2  # no raw files: what to download, and where
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(name in err for name in EXPECTED_FILES) and "nothing/smallNORB/raw" in err
    assert main(["data", "mnist", "--source", str(root), "--root", str(root)]) == 2
    assert "--source is for `metavae data fashion-mnist` and `metavae data norb`" in capsys.readouterr().err


# --------------------------------------------------------------------------- training through the config path
TINY_NORB = [
    "model.hidden_dim=32", "model.summary_dim=16", "model.summary_hidden=[32]", "model.z_dim=4",
    "model.conv_channels=[4, 4, 4]", "model.conv_layers_per_stage=1",  # the configs' conv backbone, tiny
    "data.validation_size=10", "data.context_size=5",
    "train.batch_size=10", "train.max_steps=4", "train.validate_every=2", "train.checkpoint_every=2",
    "train.val_examples=10", "train.val_importance_samples=2", "train.val_pool_size=10", "train.context_pool_size=20",
    "evaluation.test_examples=10", "evaluation.importance_samples=2", "evaluation.pool_size=20",
    "probe.train_examples=40", "probe.test_examples=30", "probe.pool_size=20", "probe.max_iter=50",
]
TINY_SET = [item for entry in TINY_NORB for item in ("--set", entry)]


@pytest.fixture
def norb_root(tmp_path):
    """180 pairs per part: 60 examples per lighting value and part."""
    return make_norb_root(tmp_path / "data", n_train=180, n_test=180)[0]


def test_train_and_probe_a_norb_config_through_the_cli(norb_root, tmp_path, monkeypatch, capsys):
    from metavae.training.trainer import Trainer

    seen = []
    fit = Trainer.fit

    def spy(self, *args, **kwargs):
        seen.append((self.task.event_shape, self.task.num_decoders, self.task.distribution_names()))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    out = tmp_path / "run"
    assert main(["--data-dir", str(norb_root), "train", "configs/norb/lighting_sparse.yaml", "--out", str(out),
                 "--no-progress", *TINY_SET]) == 0
    assert seen == [((1, 32, 32), 2, ["lighting=1", "lighting=4"])]
    assert (out / "checkpoints" / "best.pt").is_file() and "dataset: norb" in (out / "config.yaml").read_text()
    assert main(["--data-dir", str(norb_root), "probe", str(out)]) == 0
    result = json.loads((out / "probe.json").read_text())
    assert (result["family"], result["split"]) == ("lighting", "sparse")
    assert list(result["per_value"]) == ["0", "2", "3", "5"]
    assert result["invariance"]["reference"] == 1.0  # no identity: the first training value
    assert all(0.0 <= a <= 1.0 for a in result["per_value"].values())
    assert "paper (Fig. 6)" in capsys.readouterr().out


def test_compare_on_norb_never_fetches_mnist(norb_root, tmp_path, monkeypatch, capsys):
    import metavae.cli as cli

    def no_mnist(root):
        raise AssertionError("compare on smallNORB tried to fetch MNIST")

    monkeypatch.setattr(cli, "ensure_mnist", no_mnist)
    out = tmp_path / "compare"
    assert main(["--data-dir", str(norb_root), "compare", "configs/norb/azimuth_contiguous.yaml", "--models", "metavae",
                 "--out", str(out), "--no-progress", *TINY_SET, "--set", "data.validation_size=5",
                 "--set", "train.batch_size=4", "--set", "train.val_examples=5", "--set", "train.val_pool_size=5",
                 "--set", "train.context_pool_size=10", "--set", "evaluation.pool_size=10", "--set", "probe.pool_size=10",
                 "--set", "probe.train_examples=20", "--set", "probe.test_examples=20"]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert (result["family"], result["split"]) == ("azimuth", "contiguous")
    assert list(result["variants"]["metavae"]["per_value"]) == [str(v) for v in range(9, 18)]
    assert result["paper_mean_accuracy"]["metavae"] == 0.60


def test_a_norb_run_without_the_data_says_how_to_import_it(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "empty"), "train", "configs/norb/elevation_sparse.yaml", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "smallNORB files missing" in err and "metavae data norb --source DIR" in err


def test_gzip_helper_writes_what_the_reader_decompresses(tmp_path):
    """The synthetic .gz files are real gzip streams of the plain files (guards the fixture itself)."""
    write_smallnorb(tmp_path / "a", n_train=18, n_test=18)
    write_smallnorb(tmp_path / "b", n_train=18, n_test=18, compress=True)
    for name in EXPECTED_FILES:
        assert gzip.decompress((tmp_path / "b" / f"{name}.gz").read_bytes()) == (tmp_path / "a" / name).read_bytes()
