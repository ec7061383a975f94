"""Smoke runs of every command on small synthetic data in the official format."""

import json

import pytest

from conftest import TINY
from metavae.cli import demo_config_path, main

TINY_SET = [item for key, value in TINY for item in ("--set", f"{key}={json.dumps(value)}")]


def test_train_then_probe(mnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data-dir", str(mnist_root), "train", "configs/mnist/scale_interleaved.yaml", "--split", "sparse",
                 "--out", str(out), "--no-progress", *TINY_SET]) == 0
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "best.pt").exists()
    assert "split: sparse" in (out / "config.yaml").read_text()
    assert main(["--data-dir", str(mnist_root), "probe", str(out)]) == 0
    result = json.loads((out / "probe.json").read_text())
    assert result["family"] == "scale" and result["split"] == "sparse"
    assert list(result["per_value"]) == ["0.5", "0.7", "0.8", "0.9", "1.1", "1.2", "1.3", "1.5", "1.6", "1.7", "1.9"]
    assert set(result["invariance"]) == {"reference", "per_value", "mean_accuracy"} and result["invariance"]["reference"] == 1.0
    assert (out / "probe.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "mean" in printed and "paper (Fig. 6)" in printed


@pytest.mark.parametrize("path", ["configs/mnist/shear_contiguous.yaml", "configs/mnist/rotate_interleaved.yaml"])
def test_shipped_configs_train_in_tiny_mode(mnist_root, tmp_path, path):
    assert main(["--data-dir", str(mnist_root), "train", path, "--out", str(tmp_path / "r"), "--no-progress", *TINY_SET,
                 "--set", "train.max_steps=2"]) == 0


def test_demo_in_tiny_mode(mnist_root, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--data-dir", str(mnist_root), "demo", "--out", str(out), "--no-progress", *TINY_SET]) == 0
    for name in ("probe.json", "probe.png", "metrics.jsonl", "config.yaml", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (out / name).exists(), name
    result = json.loads((out / "probe.json").read_text())
    assert (result["family"], result["split"], len(result["per_value"])) == ("rotate", "sparse", 13)
    assert "paper (Fig. 6)" in capsys.readouterr().out


def test_bad_config_gives_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'train.epoch'" in err


def test_missing_data_gives_clear_error(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "empty"), "train", "configs/mnist/rotate_sparse.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "missing data file" in err and "metavae data mnist" in err and "Traceback" not in err


def test_probe_of_missing_run(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_compare_all_models_in_tiny_mode(mnist_root, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["--data-dir", str(mnist_root), "compare", "--out", str(out), "--no-progress", *TINY_SET,
            "--set", "train.max_steps=3"]
    assert main(args) == 0
    result = json.loads((out / "compare.json").read_text())
    assert set(result["variants"]) == {"metavae", "homoencoder", "neural_statistician", "homoencoder_vampprior", "vae",
                                       "vae_per_distribution"}
    for row in result["variants"].values():
        assert len(row["per_value"]) == 13
    ns = json.loads((out / "neural_statistician" / "summary.json").read_text())["config"]["model"]
    assert ns["hidden_dim"] == 32 and ns["c_dim"] == 300  # shared sizes carried over, own sizes at defaults
    assert result["paper_mean_accuracy"]["metavae"] == 0.88
    assert (out / "compare.png").stat().st_size > 1000 and (out / "compare_grouped.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "neural_statistician" in table and "≈0.60" in table
    # a second call (here through the library, with its default arguments) reuses the finished runs:
    # no file of the earlier run is rewritten (no retraining, no new probe or test log-likelihood), nothing moved aside
    from metavae.config import load_config as _load
    from metavae.experiments.transformed_images import report

    stamps = {p: p.stat().st_mtime_ns for p in (out / "metavae").rglob("*") if p.is_file()}
    base = _load(str(demo_config_path()), [(k, v) for k, v in TINY] + [("train.max_steps", 3)])
    report(base, ["metavae"], out, mnist_root, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "metavae").rglob("*") if p.is_file()} == stamps
    assert not list(out.glob("*.replaced-*"))


def test_compare_rejects_unknown_model(tmp_path, capsys):
    assert main(["compare", "--models", "metavae,gan", "--out", str(tmp_path)]) == 2
    assert "unknown model 'gan'" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_flags_before_or_after_the_command(mnist_root, tmp_path, capsys, monkeypatch, where):
    """``--data-dir`` and ``--quiet`` work on either side of the command name. The fallback data root
    ($METAVAE_DATA) points nowhere, so the run only finds data through the flag; ``--quiet`` drops the
    progress bar (written to stderr when the run is not quiet and ``--no-progress`` is not given)."""
    monkeypatch.setenv("METAVAE_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.chdir(tmp_path)
    flags = ["--data-dir", str(mnist_root), "--quiet"]
    command = ["train", "--out", str(tmp_path / "run"), *TINY_SET]
    argv = [*flags, *command] if where == "before" else [*command, *flags]
    assert main(argv) == 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    err = capsys.readouterr().err
    assert "step/s" not in err and "s/step" not in err


def test_without_quiet_the_progress_bar_is_shown(mnist_root, tmp_path, capsys):
    """The check above can fail: the same run without ``--quiet`` draws the bar."""
    assert main(["train", "--data-dir", str(mnist_root), "--out", str(tmp_path / "run"), *TINY_SET]) == 0
    err = capsys.readouterr().err
    assert "step/s" in err or "s/step" in err


def test_a_flag_after_the_command_overrides_the_one_before(mnist_root, tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "nothing-here"), "train", "--data-dir", str(mnist_root), "--out",
                 str(tmp_path / "run"), "--quiet", *TINY_SET]) == 0
    assert main(["--data-dir", str(mnist_root), "train", "--data-dir", str(tmp_path / "nothing-here"), "--out",
                 str(tmp_path / "run2"), "--quiet", *TINY_SET]) == 2
    assert "missing data file" in capsys.readouterr().err


def test_data_command_takes_data_dir_after_the_command(tmp_path, capsys):
    """``metavae data mnist --data-dir X`` uses X: here a file, so the command stops (before any download)
    naming it; with the flag ignored it would have used ./data."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert main(["data", "mnist", "--data-dir", str(blocker)]) == 2
    assert f"{blocker} is a file" in capsys.readouterr().err


def test_train_without_a_config_uses_the_defaults_plus_set(mnist_root, tmp_path):
    """No CONFIG: the paper defaults (rotate / sparse, MetaVAE), changed only by --set."""
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(mnist_root), "--out", str(out), "--no-progress", *TINY_SET,
                 "--set", "data.family=shear"]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["family"] == "shear" and saved["data"]["split"] == "sparse"
    assert saved["model"]["name"] == "metavae" and saved["train"]["epochs"] == 100 and saved["train"]["max_steps"] == 6
