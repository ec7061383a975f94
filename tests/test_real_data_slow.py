"""Long runs on the real MNIST (``make test-slow``): learning actually happens on real data."""

import json
from pathlib import Path

import pytest

from metavae.cli import main
from metavae.data.mnist import files_ok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not files_ok(Path("data")), reason="needs real MNIST in ./data")]


@pytest.mark.parametrize("family", ["rotate", "scale", "shear"])
def test_short_metavae_run_gives_a_useful_probe_on_real_mnist(family, tmp_path):
    out = tmp_path / family
    sets = ["train.max_steps=600", "train.validate_every=300", "train.val_examples=300", "train.val_importance_samples=10",
            "probe.train_examples=3000", "probe.test_examples=2000"]
    args = ["train", f"configs/mnist/{family}_sparse.yaml", "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["probe", str(out)]) == 0
    result = json.loads((out / "probe.json").read_text())
    # a chance-level or broken representation gives ≈ 0.1; 600 steps already reach ≈ 0.8
    assert result["mean_accuracy"] > 0.7
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_iwae"] > records[0]["val_iwae"]
