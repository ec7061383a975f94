"""Devices and precision (``train.device``, ``train.precision``): one code path, exercised on the CPU.

CUDA and MPS cannot run on these machines; they take exactly this path with another
``torch.device`` (see README, "Devices and precision"). What is checked here: the device-aware path
changes nothing on the CPU, data are fetched and transformed on the task's device (shown with
PyTorch's shape-only ``meta`` device), checkpoints are device-independent, bf16 autocast keeps the
objective within 0.5 % while the log-densities stay float32, and fp16 trains with its scaler.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY
from metavae.config import TrainConfig, load_config
from metavae.data import DatasetFamily
from metavae.errors import ConfigError
from metavae.experiments.transformed_images import build_model, build_task, load_run, train, variant_config
from metavae.models import MODELS
from metavae.objectives import elbo
from metavae.training import Trainer, load_checkpoint
from metavae.training.devices import autocast, resolve_device


def _config(*extra):
    return load_config(None, [*TINY, *extra])


def test_device_names_are_validated_and_an_absent_accelerator_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"train.device': 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"):
        TrainConfig(device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train.device': 'cuda:1' requested but this torch has no usable CUDA"):
            resolve_device("cuda:1")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            resolve_device("mps")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_log_weights_through_the_device_aware_path_are_identical_on_the_cpu(mnist_root, tmp_path, name):
    """The trainer's path (model and batch moved to ``device="cpu"``, autocast off in fp32) gives
    bit-identical log-weights to calling the model directly."""
    config = variant_config(_config(("train.device", "cpu")), name)
    task = build_task(config, mnist_root)
    model = build_model(config, task)
    batch = task.train_batch(0, 0, 20, 30, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    direct = model.log_weights(batch.x, batch.context, 3, decoder_index=batch.decoder_index)
    trainer = Trainer(model, task, config, tmp_path / "run")
    moved = batch.to(trainer.device)
    torch.manual_seed(1)
    with autocast(trainer.device, trainer.precision):
        through = trainer.model.log_weights(moved.x, moved.context, 3, decoder_index=moved.decoder_index)
    assert through.device.type == "cpu"
    torch.testing.assert_close(through, direct, rtol=0, atol=0)


def test_examples_are_fetched_and_transformed_on_the_tasks_device(mnist_root):
    """``meta`` tensors have shapes but no data: a batch comes out on it only if the base images
    were indexed and transformed there (the indices are still drawn on the CPU)."""
    meta = torch.device("meta")
    image_task = build_task(_config(), mnist_root).to(meta)
    batch = image_task.train_batch(0, 0, 20, 30, torch.Generator().manual_seed(0))
    assert batch.x.device == meta and batch.context.elements.device == meta and batch.x.shape == (100, 1, 28, 28)
    assert batch.context.index.device.type == "cpu"  # sampled on the CPU from the seeded generator
    family = DatasetFamily([torch.rand(40, 1, 4, 4), torch.rand(40, 1, 4, 4)], context_size=3).to(meta)
    assert family.validation_batch(1, 3).x.device == meta


def test_checkpoints_are_device_independent_and_round_trip_through_map_location(mnist_root, tmp_path):
    config = _config(("train.device", "cpu"))
    train(config, tmp_path / "run", mnist_root, progress=False)
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    tensors = list(payload["state_dict"].values())
    tensors += [t for s in payload["optimizer"]["state"].values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    raw = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    _, model, _ = load_run(tmp_path / "run", mnist_root, which="last")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, raw["state_dict"][key], rtol=0, atol=0)


def _mean_loss(trainer, batches, seed=5):
    torch.manual_seed(seed)
    losses = []
    with torch.no_grad(), autocast(trainer.device, trainer.precision):
        for b in batches:
            log_w = trainer.model.log_weights(b.x, b.context, 1, decoder_index=b.decoder_index, objective="training")
            assert log_w.dtype == torch.float32  # log-densities and KL stay float32 under autocast
            losses.append(-elbo(log_w).mean())
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("name", ["metavae", "neural_statistician"])
def test_bf16_autocast_objective_at_fixed_parameters_is_within_half_a_percent_of_fp32(mnist_root, tmp_path, name):
    config = variant_config(_config(), name)
    task = build_task(config, mnist_root)
    model = build_model(config, task)
    batches = [task.train_batch(0, i, 20, 30, torch.Generator().manual_seed(i)) for i in range(4)]
    fp32 = _mean_loss(Trainer(model, task, config, tmp_path / "a"), batches)
    bf16 = _mean_loss(Trainer(model, task, variant_config(_config(("train.precision", "bf16")), name), tmp_path / "b"), batches)
    assert fp32 != bf16  # the networks did run in bf16
    assert abs(bf16 - fp32) / abs(fp32) < 0.005, (fp32, bf16)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_runs_learns_and_resumes(mnist_root, tmp_path, precision):
    config = _config(("train.precision", precision), ("train.max_steps", 40), ("train.validate_every", 20),
                     ("train.lr", 3e-3))
    result = train(config, tmp_path / "run", mnist_root, progress=False)
    assert result.step == 40
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_iwae"] > records[0]["val_iwae"]
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert bool(payload["scaler"]) == (precision == "fp16")  # the fp16 loss scale is saved for resume
    assert all(v.dtype == torch.float32 for v in payload["state_dict"].values())  # parameters stay float32
    longer = _config(("train.precision", precision), ("train.max_steps", 44), ("train.validate_every", 20), ("train.lr", 3e-3))
    assert train(longer, tmp_path / "run", mnist_root, resume=True, progress=False).step == 44


def test_a_noise_shard_uses_exactly_its_rows_of_the_whole_batchs_noise():
    """What makes N ranks equal to one process: inside ``noise_shard(rows, B)`` a shard's latents are
    perturbed by rows ``rows`` of the noise the whole batch would get from the same stream."""
    from torch.distributions import Independent, Normal

    from metavae.models.base import noise_shard, reparameterized_sample

    loc, scale = torch.randn(6, 3), torch.rand(6, 3) + 0.5
    full = Independent(Normal(loc, scale), 1)
    torch.manual_seed(3)
    whole = reparameterized_sample(full, (2,))  # (2, 6, 3), the plain rsample stream
    torch.manual_seed(3)
    assert torch.equal(whole, full.rsample((2,)))
    for rows in (slice(0, 3), slice(3, 6), slice(0, 6)):
        torch.manual_seed(3)
        with noise_shard(rows, 6):
            shard = reparameterized_sample(Independent(Normal(loc[rows], scale[rows]), 1), (2,))
        assert torch.equal(shard, whole[:, rows])


def test_the_trainer_step_is_the_hand_written_adam_step_on_the_negative_elbo(mnist_root, tmp_path):
    """The device-aware step (device cpu, fp32, disabled scaler, divergence guards) changes nothing:
    the same loss and the same parameters as ``−ELBO → backward → Adam`` written out here."""
    import copy

    config = _config(("train.device", "cpu"), ("train.lr", 1e-3))
    task = build_task(config, mnist_root)
    model = build_model(config, task)
    reference = copy.deepcopy(model)
    batch = task.train_batch(0, 0, 20, 30, torch.Generator().manual_seed(0))
    trainer = Trainer(model, task, config, tmp_path / "run")
    torch.manual_seed(4)
    loss = trainer.step(batch, "train")["loss"]
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    torch.manual_seed(4)
    expected = -elbo(reference.log_weights(batch.x, batch.context, 1, decoder_index=batch.decoder_index,
                                           objective="training")).mean()
    expected.backward()
    optimizer.step()
    assert loss == float(expected.detach())
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name
