"""DatasetFamily: the forms it accepts, the errors it gives, and a whole run through the public API.

The Task contract itself (queries, contexts and decoders from one distribution, disjoint
validation, held-out batches) is checked for every task in ``test_task_contract.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import metavae
from metavae import DatasetFamily, MetaVAE, MetaVAEConfig, TrainConfig, Trainer, probe
from metavae.errors import ConfigError


def blobs(k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 8, 8)`` images of distribution k: a 3×3 bright square whose position is the label
    (4 classes: the quadrants), on a background grey level (k + 1)/10."""
    g = torch.Generator().manual_seed(seed * 100 + k)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.full((n, 1, 8, 8), (k + 1) / 10)
    for c, (r, col) in enumerate(((0, 0), (0, 5), (5, 0), (5, 5))):
        x[labels == c, 0, r : r + 3, col : col + 3] = 1.0
    return x, labels


def test_tensors_arrays_pairs_and_datasets_give_the_same_family():
    pairs = [blobs(k, 30) for k in range(3)]

    class Items(Dataset):  # a map-style Dataset of (x, label) items
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    forms = {
        "pairs": pairs,
        "numpy": [(x.numpy(), y.numpy()) for x, y in pairs],
        "dataset": [Items(x, y) for x, y in pairs],
        "tensordataset": [TensorDataset(x, y) for x, y in pairs],
    }
    reference = None
    for name, train in forms.items():
        task = DatasetFamily(train, held_out=[2], context_size=4, seed=1)
        batch = task.train_batch(0, 0, 5, 8, torch.Generator().manual_seed(0))
        if reference is None:
            reference = batch
        assert torch.equal(batch.x, reference.x) and torch.equal(batch.labels, reference.labels), name


def test_uint8_data_are_read_as_grey_levels_and_labels_are_optional():
    x = torch.randint(0, 256, (60, 5, 5), dtype=torch.uint8)
    task = DatasetFamily([x, x], context_size=3)
    batch = task.validation_batch(2, 0)
    assert batch.labels is None
    assert batch.x.dtype == torch.float32 and float(batch.x.max()) <= 1.0
    stored = {tuple(row.tolist()) for row in (x.float() / 255).flatten(1)}
    assert {tuple(row.tolist()) for row in batch.x.flatten(1)} <= stored


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train=[]), r"train: expected one entry per distribution, got none"),
        (dict(train=[torch.rand(9, 4), torch.rand(9, 5)]), r"train\[1\]: expected examples of shape \(4,\) \(as train\[0\]\), got \(5,\)"),
        (dict(train=[torch.rand(9, 4)], test=[torch.rand(3, 4), torch.rand(3, 4)]), r"test: expected 1 entries"),
        (dict(train=[torch.rand(9, 4), torch.rand(9, 4)], held_out=[2]), r"held_out: expected distinct indices in \[0, 2\), got \[2\]"),
        (dict(train=[torch.rand(9, 4), torch.rand(9, 4)], held_out=[0, 1]), r"held_out: all 2 distributions are held out"),
        (dict(train=[torch.rand(9, 4)], names=["a", "b"]), r"names: expected 1 distinct names"),
        (dict(train=[torch.rand(9, 4) * 3]), r"train\[0\]: values must lie in \[0, 1\] .* got range \[0\.\d+, 2\.\d+\]"),
        (dict(train=[torch.rand(9, 4) * 3], value_range=(0.0, 2.0)), r"train\[0\]: values must lie in \[0, 2\]"),
        (dict(train=[torch.full((9, 4), float("nan"))], value_range=None), r"train\[0\]: values must be finite"),
        (dict(train=[torch.ones(9, 4, dtype=torch.int64)]), r"train\[0\]: expected floating-point values .* got dtype torch.int64"),
        (dict(train=[torch.rand(9)]), r"train\[0\]: expected examples of shape \(n, \*event\) with n ≥ 1, got shape \(9,\)"),
        (dict(train=[(torch.rand(9, 4), torch.zeros(8, dtype=torch.long))]), r"train\[0\]: expected integer labels of shape \(9,\)"),
        (dict(train=[(torch.rand(9, 4), torch.zeros(9))]), r"train\[0\]: expected integer labels of shape \(9,\), got torch.float32"),
        (dict(train=[(torch.rand(9, 4), torch.zeros(9, dtype=torch.long)), torch.rand(9, 4)]), r"train\[1\]: has no labels"),
        (dict(train=["not data"]), r"train\[0\]: expected a tensor, an \(x, labels\) pair or a torch.utils.data.Dataset, got str"),
        (dict(train=[torch.rand(9, 4)], context_size=0), r"context_size: expected an integer ≥ 1, got 0"),
        (dict(train=[torch.rand(9, 4)], validation_fraction=1.5), r"validation_fraction: expected a number in \(0, 1\), got 1.5"),
        (dict(train=[torch.rand(1, 4)], context_size=1), r"train\[0\]: 1 example\(s\) leave none for training"),
        (dict(train=[torch.rand(9, 4), torch.rand(9, 4)], held_out=[1.7]), r"held_out: expected integer indices, got \[1.7\]"),
        (dict(train=[torch.rand(9, 4), torch.rand(9, 4)], names="ab"), r"names: expected a sequence of 2 names, got the string 'ab'"),
        (dict(train=[torch.rand(9, 4)], context_size=True), r"context_size: expected an integer ≥ 1, got True"),
        (dict(train=[torch.rand(9, 4)], test=[torch.rand(3, 4)], context_size=5),
         r"test\[0\]: 3 example\(s\), fewer than context_size 5"),
    ],
)
def test_malformed_input_is_a_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DatasetFamily(**kwargs)


def test_a_family_without_test_parts_says_so_when_asked_for_test_data():
    task = DatasetFamily([blobs(0, 20), blobs(1, 20)], held_out=[1], context_size=3)
    with pytest.raises(ValueError, match=r"part: this DatasetFamily has no test parts; pass test=\[...\]"):
        task.test_batch(5, 0)
    with pytest.raises(ValueError, match="no test parts"):
        task.distribution_batch("1", "test", 5, 0, torch.Generator())


def test_the_probe_needs_labels():
    x = torch.rand(30, 1, 4, 4)
    task = DatasetFamily([x, x, x], [x, x, x], held_out=[2], context_size=3)
    model = MetaVAE.from_config(MetaVAEConfig(z_dim=2, hidden_dim=8, summary_dim=4, summary_hidden=(8,)), task.event_shape, 2)
    with pytest.raises(ValueError, match="the probe needs labelled examples"):
        probe(model, task)


def test_unequal_sizes_weight_every_distribution_equally_and_an_epoch_follows_the_smallest():
    task = DatasetFamily([blobs(0, 40), blobs(1, 200)], context_size=3, validation_fraction=0.25)
    assert task.batches_per_epoch(10) == 3  # 30 training examples in the smallest distribution
    batch = task.train_batch(0, 2, 10, 20, torch.Generator())
    assert np.bincount(batch.decoder_index.numpy()).tolist() == [10, 10]


def test_a_whole_run_from_the_top_level_api_trains_resumes_and_probes_held_out_members(tmp_path):
    """The Trainer takes a DatasetFamily and a TrainConfig: it learns (validation IWAE rises), records the task,
    refuses to resume with another task, and the probe reads the label off held-out members' codes."""
    train = [blobs(k, 240) for k in range(5)]
    test = [blobs(k, 80, seed=1) for k in range(5)]
    task = DatasetFamily(train, test, held_out=[1, 3], names=list("abcde"), context_size=5)
    torch.manual_seed(0)
    model = MetaVAE.from_config(MetaVAEConfig(z_dim=4, hidden_dim=64, summary_dim=16, summary_hidden=(32,)),
                                task.event_shape, task.num_decoders)
    cfg = TrainConfig(batch_size=20, max_steps=120, validate_every=40, val_examples=20, val_importance_samples=5,
                      val_pool_size=20, context_pool_size=30, lr=3e-3)
    result = Trainer(model, task, cfg, tmp_path / "run").fit(progress=False)
    assert result.step == 120
    import json

    import yaml

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_iwae"] > records[0]["val_iwae"]
    assert list(records[0]["val_iwae_per_distribution"]) == ["a", "c", "e"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"]["distributions"] == ["a", "c", "e"] and saved["task"]["held_out"] == ["b", "d"]
    assert saved["model"] == {"class": "MetaVAE"} and saved["train"]["max_steps"] == 120

    longer = TrainConfig(**{**cfg.__dict__, "max_steps": 130})
    assert Trainer(model, task, longer, tmp_path / "run").fit(resume=True, progress=False).step == 130
    other = DatasetFamily(train, test, held_out=[1, 2], names=list("abcde"), context_size=5)
    with pytest.raises(ConfigError, match=r"task.distributions differs"):
        Trainer(model, other, longer, tmp_path / "run").fit(resume=True, progress=False)
    edited = [(x.clone(), y) for x, y in train]
    edited[0][0][0, 0, 0, 0] = 0.0  # one pixel of one example changed, same names and sizes
    with pytest.raises(ConfigError, match=r"task.sha256 differs"):
        Trainer(model, DatasetFamily(edited, test, held_out=[1, 3], names=list("abcde"), context_size=5), longer,
                tmp_path / "run").fit(resume=True, progress=False)

    best_step = Trainer(model, task, longer, tmp_path / "run").restore_best()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert best_step == max(records, key=lambda r: r["val_iwae"])["step"]
    from metavae.training import load_checkpoint

    saved_best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["state_dict"]
    assert all(torch.equal(v, saved_best[k]) for k, v in model.state_dict().items())

    accuracy = probe(model, task, pool_size=40, reference="a")
    assert set(accuracy["per_distribution"]) == {"b", "d"}
    assert accuracy["mean_accuracy"] > 0.9  # 4 well-separated classes; chance is 0.25
    assert set(accuracy["invariance"]["per_distribution"]) == {"b", "d"}


def test_the_trainer_refuses_a_model_built_for_another_task_before_touching_the_run_directory(tmp_path):
    task = DatasetFamily([blobs(k, 60) for k in range(3)], context_size=3)
    small = MetaVAEConfig(z_dim=2, hidden_dim=8, summary_dim=4, summary_hidden=(8,))
    cfg = TrainConfig(batch_size=5, max_steps=2, val_examples=4, val_pool_size=5, context_pool_size=5)
    with pytest.raises(ValueError, match=r"model: has 2 decoders, but the task has 3 training distributions"):
        Trainer(MetaVAE.from_config(small, task.event_shape, 2), task, cfg, tmp_path / "a").fit(progress=False)
    with pytest.raises(ValueError, match=r"model: built for data points of shape \(1, 7, 7\), but the task's are \(1, 8, 8\)"):
        Trainer(MetaVAE.from_config(small, (1, 7, 7), 3), task, cfg, tmp_path / "b").fit(progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match=r"train.context_pool_size': a context pool must hold at least the context size 3"):
        Trainer(MetaVAE.from_config(small, task.event_shape, 3), task, TrainConfig(**{**cfg.__dict__, "context_pool_size": 2}),
                tmp_path / "c").fit(progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match=r"pool_size: .* at least the context size 3; got 0"):
        probe(MetaVAE.from_config(small, task.event_shape, 3), task, pool_size=0, distributions=["0"])


def test_the_top_level_exports_the_public_api_and_every_module_declares_all():
    for name in ("MetaVAE", "NeuralStatistician", "VariationalHomoencoder", "HomoencoderVampPrior", "VAE", "Trainer",
                 "Task", "DatasetFamily", "ImageFamilyTask", "elbo", "iwae", "log_likelihood", "probe", "load_config",
                 "TrainConfig", "ExperimentConfig", "load_mnist", "MODELS"):
        assert name in metavae.__all__ and hasattr(metavae, name), name
    assert isinstance(DatasetFamily([torch.rand(9, 2)], context_size=2), metavae.Task)
    import importlib
    import pkgutil

    missing = []
    for info in pkgutil.walk_packages(metavae.__path__, "metavae."):
        module = importlib.import_module(info.name)
        if not hasattr(module, "__all__"):
            missing.append(info.name)
        else:
            missing += [f"{info.name}.{n}" for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"modules without __all__ (or naming what they lack): {missing}"


def test_a_dataset_of_items_that_are_not_tensors_is_a_value_error_naming_the_entry():
    class Dicts(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"image": torch.rand(4)}

    with pytest.raises(ValueError, match=r"train\[0\]: the Dataset's items must be tensors .* got dict"):
        DatasetFamily([Dicts()])


def test_any_finite_values_with_value_range_none():
    """Data for likelihoods other than the images' Bernoulli (e.g. Gaussian points) pass through unchanged."""
    x = [torch.randn(20, 5, 2) * 7, torch.randn(20, 5, 2) - 30]
    task = DatasetFamily(x, x, context_size=3, value_range=None)
    batch = task.distribution_batch("1", "test", None, 10, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x, x[1])
