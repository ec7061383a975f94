"""The manifest of `metavae reproduce`: names, configs through the real loaders, seeds, dependencies, filtering."""

from __future__ import annotations

from pathlib import Path

import pytest

from metavae.config import ExperimentConfig, experiment_from_dict, flatten, load_config
from metavae.data.families import FAMILIES
from metavae.data.norb import EXPECTED_FILES
from metavae.errors import ConfigError
from metavae.evaluation.invariance import InvarianceConfig, invariance_config
from metavae.experiments import expfam, physics
from metavae.experiments import reproduce as rp
from metavae.experiments import transformed_images as images

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PANELS = [f"{f}_{s}" for f in FAMILIES for s in rp.SPLITS]
NORB_PANELS = [f"{f}_{s}" for f in rp.NORB_FAMILIES for s in rp.SPLITS]


@pytest.fixture
def every_dataset(tmp_path, monkeypatch) -> Path:
    """A data root where Fashion-MNIST and smallNORB count as present (the six smallNORB file names, empty:
    presence is decided by the names, the reader checks the content; Fashion's check spied)."""
    root = tmp_path / "data"
    (root / "smallNORB" / "raw").mkdir(parents=True)
    for name in EXPECTED_FILES:
        (root / "smallNORB" / "raw" / f"{name}.gz").write_bytes(b"")
    monkeypatch.setattr(rp, "files_ok", lambda r, dataset="MNIST": dataset == "FashionMNIST" and Path(r) == root)
    return root


def reloaded(config):
    """The config rebuilt from its plain data by the loader its command uses."""
    if isinstance(config, ExperimentConfig):
        return experiment_from_dict(config.to_dict())
    if isinstance(config, physics.PhysicsConfig):
        return physics.load_physics_config(None, flatten(config.to_dict()))
    if isinstance(config, expfam.ExpFamConfig):
        return expfam.load_expfam_config(None, flatten(config.to_dict()))
    assert isinstance(config, InvarianceConfig)
    return invariance_config(flatten({"invariance": rp.config_dict(rp.RunSpec("x", "invariance", config, 0, "x"))}))


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_manifest_names_configs_seeds_dependencies(preset, every_dataset):
    specs = rp.manifest(preset, every_dataset)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    outs = [s.out for s in specs if s.kind != "compare"]
    assert len(outs) == len(set(outs))
    seen: set[str] = set()
    for spec in specs:
        assert set(spec.depends) <= seen, f"{spec.name} depends on a later or unknown run"
        seen.add(spec.name)
        assert reloaded(spec.config) == spec.config
        seed = spec.config.seed if isinstance(spec.config, InvarianceConfig) else spec.config.train.seed
        assert spec.seed == seed == 0
        assert spec.kind in {"model", "compare", "physics", "expfam", "invariance"}
    kinds = [s.kind for s in specs]
    fashion_panels = 9 if preset == "paper" else 1
    assert kinds.count("compare") == 9 + fashion_panels + 9
    assert kinds.count("model") == 6 * (9 + fashion_panels + 9)
    for dataset, panels in (("mnist", PANELS), ("norb", NORB_PANELS)):
        for panel in panels:
            compare = next(s for s in specs if s.name == f"{dataset}/{panel}/compare")
            assert compare.depends == tuple(f"{dataset}/{panel}/{v}" for v in images.VARIANTS)
            assert compare.out == f"{dataset}/{panel}"
    inv = next(s for s in specs if s.name == "invariance")
    assert inv.depends == tuple(f"mnist/{f}_interleaved/metavae" for f in FAMILIES)
    assert {s.name for s in specs} >= {"physics", "expfam", "invariance"}


def test_paper_preset_is_the_shipped_configs(every_dataset):
    specs = {s.name: s for s in rp.manifest("paper", every_dataset)}
    for dataset, folder, panels in (("mnist", "mnist", PANELS), ("fashion_mnist", "fashion_mnist", PANELS),
                                    ("norb", "norb", NORB_PANELS)):
        for panel in panels:
            base = load_config(CONFIGS / folder / f"{panel}.yaml")
            for variant in images.VARIANTS:
                assert specs[f"{dataset}/{panel}/{variant}"].config == images.variant_config(base, variant), (panel, variant)
            assert specs[f"{dataset}/{panel}/compare"].config == base
            assert base.train.epochs == 100 and base.train.max_steps is None
    assert specs["physics"].config == physics.load_physics_config(CONFIGS / "physics" / "default.yaml")
    assert specs["expfam"].config == expfam.load_expfam_config(CONFIGS / "expfam" / "default.yaml",
                                                                [("train.max_steps", 4500)])
    assert specs["invariance"].config == InvarianceConfig()


def test_cpu_preset_schedule(every_dataset):
    specs = {s.name: s for s in rp.manifest("cpu", every_dataset)}
    paper = {s.name: s for s in rp.manifest("paper", every_dataset)}
    for dataset, panels in (("mnist", PANELS), ("fashion_mnist", ["rotate_sparse"])):
        for panel in panels:
            for variant in images.VARIANTS:
                c = specs[f"{dataset}/{panel}/{variant}"].config
                assert (c.train.max_steps, c.train.lr, c.probe.train_examples) == (600, 1e-3, 5000)
                assert (c.evaluation.test_examples, c.evaluation.importance_samples) == (500, 50)
                p = paper[f"{dataset}/{panel}/{variant}"].config
                assert (c.data, c.train.batch_size) == (p.data, p.train.batch_size)  # the schedule differs, not the data
                if variant == "homoencoder_vampprior":
                    assert c.model.num_pseudo_sets == 100 and p.model.num_pseudo_sets == 500
                else:
                    assert c.model == p.model  # the paper's MLP models and sizes
    assert [n for n in specs if n.startswith("fashion_mnist/")] == [f"fashion_mnist/rotate_sparse/{v}" for v in images.VARIANTS] + \
        ["fashion_mnist/rotate_sparse/compare"]
    # smallNORB: the conv backbone at the channels of the shipped conv CPU preset
    shipped = load_config(CONFIGS / "fashion_mnist_conv" / "cpu_rotate_sparse.yaml")
    for p in NORB_PANELS:
        model = specs[f"norb/{p}/metavae"].config.model
        assert (model.backbone, model.conv_channels) == ("conv", shipped.model.conv_channels)


def test_optional_datasets_only_when_present(tmp_path):
    root = tmp_path / "empty"
    specs = rp.manifest("cpu", root)
    assert not any(s.name.startswith(("norb/", "fashion_mnist/")) for s in specs)
    assert len([s for s in specs if s.name.startswith("mnist/")]) == 9 * 7
    notes = rp.omitted(root)
    assert len(notes) == 2 and "metavae data norb" in notes[1] and "metavae data fashion-mnist" in notes[0]


def test_unknown_preset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'gpu'"):
        rp.manifest("gpu", tmp_path)


def test_select_by_pattern_with_dependencies(tmp_path):
    specs = rp.manifest("cpu", tmp_path)
    panel = rp.select(specs, ["mnist/rotate_sparse/*"])
    assert [s.name for s in panel] == [f"mnist/rotate_sparse/{v}" for v in images.VARIANTS] + ["mnist/rotate_sparse/compare"]
    assert [s.name for s in rp.select(specs, ["mnist/rotate_sparse/compare"])] == [s.name for s in panel]  # its models come along
    inv = rp.select(specs, ["invariance"])
    assert [s.name for s in inv] == [*rp.INVARIANCE_RUNS, "invariance"]
    assert [s.name for s in rp.select(specs, ["physics", "exp*"])] == ["physics", "expfam"]
    with pytest.raises(ConfigError, match="--only nothing: no run matches"):
        rp.select(specs, ["nothing"])


def test_format_manifest_lists_every_run(tmp_path):
    specs = rp.manifest("cpu", tmp_path)
    lines = rp.format_manifest(specs).splitlines()
    assert len(lines) == len(specs)
    assert lines[0].startswith("mnist/rotate_interleaved/metavae ") and "600 steps" in lines[0]
    assert lines[-1].startswith("invariance ")


def test_smallnorb_counts_only_with_its_six_files_or_its_cache(tmp_path):
    raw = tmp_path / "smallNORB" / "raw"
    raw.mkdir(parents=True)
    (raw / "stray.txt").write_text("not a smallNORB file")
    names = sorted(EXPECTED_FILES)
    for name in names[:-1]:
        (raw / name).write_bytes(b"")
    assert not any(s.name.startswith("norb/") for s in rp.manifest("cpu", tmp_path))  # five of six
    (raw / f"{names[-1]}.gz").write_bytes(b"")
    assert len([s for s in rp.manifest("cpu", tmp_path) if s.name.startswith("norb/")]) == 9 * 7
    for name in names:
        for path in (raw / name, raw / f"{name}.gz"):
            path.unlink(missing_ok=True)
    cache = tmp_path / "smallNORB" / "processed" / "smallnorb-32x32.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")
    assert len([s for s in rp.manifest("cpu", tmp_path) if s.name.startswith("norb/")]) == 9 * 7
