"""The probe's own guarantees: reproducible, honest about convergence, and using the configured reference value."""

import json

import pytest

from conftest import TINY
from metavae.config import load_config, with_overrides
from metavae.experiments.transformed_images import load_run, run_probe, train


@pytest.fixture
def trained(mnist_root, tmp_path):
    train(load_config(None, TINY), tmp_path / "run", mnist_root, progress=False)
    return load_run(tmp_path / "run", mnist_root)


def _strip(result):
    return json.dumps({k: v for k, v in result.items() if k != "seconds"}, sort_keys=True)


def test_probe_is_reproducible_whatever_the_global_random_state(trained):
    import torch

    config, model, task = trained
    torch.manual_seed(1)
    first = run_probe(config, model, task)
    torch.manual_seed(2)
    assert _strip(run_probe(config, model, task)) == _strip(first)


def test_probe_reports_convergence_truthfully(trained):
    config, model, task = trained
    assert run_probe(with_overrides(config, [("probe.max_iter", 1)]), model, task)["settings"]["converged"] is False
    assert run_probe(with_overrides(config, [("probe.max_iter", 5000)]), model, task)["settings"]["converged"] is True


def test_probe_uses_the_configured_reference_value(trained):
    config, model, task = trained
    default = run_probe(config, model, task)["invariance"]
    other = run_probe(with_overrides(config, [("probe.reference", 80.0)]), model, task)["invariance"]
    assert default["reference"] == 0.0 and other["reference"] == 80.0
    assert other["per_value"] != default["per_value"]  # a classifier fitted on another rotation scores differently
