"""Training loop: resume equals uninterrupted, checkpoints, model selection."""

import json

import pytest
import torch

from conftest import TINY
from metavae.config import load_config
from metavae.errors import CheckpointError, ConfigError
from metavae.experiments.transformed_images import load_run, train
from metavae.training.checkpoint import load_checkpoint, save_checkpoint
from metavae.training.trainer import Trainer


def _config(*extra):
    return load_config(None, [*TINY, *extra])


def test_resume_after_interruption_equals_uninterrupted_run(mnist_root, tmp_path, monkeypatch):
    full = _config(("train.max_steps", 8))
    train(full, tmp_path / "full", mnist_root, progress=False)

    # the same run, killed during its 6th training step (last checkpoint: step 4)
    original = Trainer.step
    calls = {"train": 0}

    def dying_step(self, batch, stage):
        if stage == "train":
            calls["train"] += 1
            if calls["train"] == 6:
                raise KeyboardInterrupt
        return original(self, batch, stage)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(full, tmp_path / "killed", mnist_root, progress=False)
    monkeypatch.setattr(Trainer, "step", original)
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] == 4

    result = train(full, tmp_path / "killed", mnist_root, resume=True, progress=False)
    assert result.step == 8
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], atol=0, rtol=0)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], atol=0, rtol=0)
    assert a["best"] == b["best"]
    full_metrics = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    resumed_metrics = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(resumed_metrics) == strip(full_metrics)


def test_validation_on_test_part_option(mnist_root, tmp_path):
    train(_config(("data.validation", "test")), tmp_path / "run", mnist_root, progress=False)
    cfg, model, task = load_run(tmp_path / "run", mnist_root)
    assert task.val_part == "test" and cfg.data.validation == "test"


def test_training_reduces_loss(mnist_root, tmp_path):
    cfg = _config(("train.max_steps", 60), ("train.validate_every", 30), ("train.lr", 3e-3))
    train(cfg, tmp_path / "run", mnist_root, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 20
    assert records[-1]["val_iwae"] > records[0]["val_iwae"]


def test_incompatible_and_corrupt_checkpoints_give_clear_errors(mnist_root, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*metavae train"):
        load_run(tmp_path / "nothing", mnist_root)
    train(_config(), tmp_path / "run", mnist_root, progress=False)
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    payload["state_dict"] = {k: v[..., :1] for k, v in payload["state_dict"].items()}
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_run(tmp_path / "run", mnist_root)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable metavae checkpoint"):
        load_run(tmp_path / "run", mnist_root)
    torch.save({"format": 999, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="incompatible checkpoint"):
        load_run(tmp_path / "run", mnist_root)


def test_resume_accepts_changed_probe_settings(mnist_root, tmp_path):
    train(_config(), tmp_path / "run", mnist_root, progress=False)
    result = train(_config(("probe.max_iter", 7)), tmp_path / "run", mnist_root, resume=True, progress=False)
    assert result.step == 6


def test_resume_with_a_different_config_is_refused(mnist_root, tmp_path):
    train(_config(), tmp_path / "run", mnist_root, progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume .*train\.lr differs \(the run has 0\.0002, the config gives 0\.001\)"):
        train(_config(("train.lr", 1e-3)), tmp_path / "run", mnist_root, resume=True, progress=False)
