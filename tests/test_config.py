from pathlib import Path

import pytest

from metavae.config import load_config, parse_overrides
from metavae.errors import ConfigError

CONFIGS = sorted(Path("configs/mnist").glob("*.yaml"))


def test_nine_mnist_configs_shipped():
    names = {p.stem for p in Path("configs/mnist").glob("*.yaml")}
    assert names == {f"{f}_{s}" for f in ("rotate", "scale", "shear") for s in ("interleaved", "sparse", "contiguous")}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_with_paper_settings(path):
    cfg = load_config(path)
    family, split = path.stem.split("_")
    assert (cfg.data.family, cfg.data.split) == (family, split)
    assert cfg.train.lr == 2e-4 and cfg.train.batch_size == 100 and cfg.train.epochs == 100
    assert cfg.model.z_dim == 40 and cfg.model.hidden_dim == 400 and cfg.data.context_size == 10
    assert "/" not in str(cfg.to_dict().get("data"))  # no paths in configs


FASHION = sorted(Path("configs/fashion_mnist").glob("*.yaml"))

#: the loader of each folder of configs/ (a new folder must be added here, or the test below fails)
LOADERS = {"mnist": "image", "fashion_mnist": "image", "fashion_mnist_conv": "image", "norb": "image", "physics": "physics", "expfam": "expfam"}


def test_fashion_configs_mirror_the_mnist_ones():
    """Nine Fashion-MNIST configs, each its MNIST counterpart with data.dataset = fashion_mnist and its own name."""
    assert [p.stem for p in FASHION] == [p.stem for p in CONFIGS]
    for fashion in FASHION:
        cfg, twin = load_config(fashion).to_dict(), load_config(Path("configs/mnist") / fashion.name).to_dict()
        assert cfg["data"]["dataset"] == "fashion_mnist" and twin["data"]["dataset"] == "mnist"
        assert cfg["name"] == f"fashion_mnist_{fashion.stem}" and twin["name"] == f"mnist_{fashion.stem}"
        cfg["data"]["dataset"], cfg["name"] = "mnist", twin["name"]
        assert cfg == twin


SHIPPED = sorted(Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to("configs")) for p in SHIPPED])
def test_every_shipped_config_loads(path):
    from metavae.experiments import expfam, physics

    kind = LOADERS[path.parent.name]
    load = {"image": load_config, "physics": physics.load_physics_config, "expfam": expfam.load_expfam_config}[kind]
    assert load(path) is not None


def test_defaults_are_paper_sizes():
    cfg = load_config(None)
    assert cfg.model_name == "metavae" and cfg.model.summary_hidden == (784, 400) and cfg.model.summary_dim == 400


def test_unknown_key_is_a_clear_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learning_rate'; valid keys here: .*lr"):
        load_config(p)


@pytest.mark.parametrize(
    "override, message",
    [
        (("train.lr", "fast"), r"config key 'train.lr': expected float, got 'fast'"),
        (("train.lr", -1.0), r"config key 'train.lr': must be positive"),
        (("data.family", "flip"), r"config key 'data.family': 'flip' is not one of 'rotate', 'scale', 'shear'"),
        (("data.split", "random"), r"unknown split 'random'"),
        (("model.name", "gan"), r"config key 'model.name': unknown model 'gan'"),
        (("model.z_dim", 0), r"config key 'model.z_dim': must be positive"),
        (("train.batch_size", 2.5), r"config key 'train.batch_size': expected int"),
        (("probe.pool_size", 5), r"config key 'probe.pool_size': a context pool must hold at least data.context_size = 10"),
        (("train.val_pool_size", 3), r"config key 'train.val_pool_size': a context pool must hold"),
        (("train.num_threads", -1), r"config key 'train.num_threads': must be ≥ 1"),
        (("probe.reference", 45.0), r"config key 'probe.reference': 45.0 is not a rotate value"),
        (("probe.max_iter", 0), r"config key 'probe.max_iter': must be ≥ 1"),
    ],
)
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_split_alias_and_overrides():
    cfg = load_config(None, parse_overrides(["data.split=standard", "train.epochs=3", "model.summary_hidden=[10, 20]"]))
    assert cfg.data.split == "interleaved" and cfg.train.epochs == 3 and cfg.model.summary_hidden == (10, 20)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.epochs"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
