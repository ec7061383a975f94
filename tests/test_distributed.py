"""Data-parallel training with torch.distributed (gloo on this CPU): the ranks stay identical, agree
with one process on the same global batch, and a killed multi-rank run resumes.

Each test launches real processes with ``torch.distributed.run`` (torchrun), as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY

HERE = Path(__file__).parent
WORKER = HERE / "ddp_worker.py"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *args], env=_env(), capture_output=True, text=True, timeout=300, **kwargs)


def test_two_gloo_ranks_stay_identical_and_match_one_process_on_the_same_global_batch(mnist_root, tmp_path):
    steps = 5
    proc = torchrun(str(WORKER), str(tmp_path / "two"), str(mnist_root), str(steps))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "two" / "rank0.pt"), torch.load(tmp_path / "two" / "rank1.pt")
    assert rank0.shape[0] == steps
    assert torch.equal(rank0, rank1), "the ranks' parameters differ after some step"
    one = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one"), str(mnist_root), str(steps)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    single = torch.load(tmp_path / "one" / "rank0.pt")
    assert not torch.equal(single[0], single[-1])  # the parameters did move
    moved = (single[-1] - single[0]).abs().max()
    torch.testing.assert_close(rank0, single, rtol=0, atol=1e-6)  # float rounding of other matrix shapes only
    assert moved > 100 * 1e-6  # the tolerance is far below how far the 5 steps moved them (8e-4 at lr 2e-4)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return [c for child in children for c in (child, *_descendants(child))]


def _tiny_set(*extra: tuple[str, object]) -> list[str]:
    return [item for key, value in [*TINY, *extra] for item in ("--set", f"{key}={json.dumps(value)}")]


def test_a_killed_two_rank_run_resumes_where_it_stopped(mnist_root, tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "metavae", "--data-dir", str(mnist_root), "train", "--out", str(out), "--nproc", "2",
            "--no-progress"]
    settings = _tiny_set(("train.max_steps", 100_000), ("train.checkpoint_every", 2), ("train.validate_every", 50),
                         ("train.device", "cpu"))
    proc = subprocess.Popen([*base, *settings], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["step"] >= 6:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
    for pid in [proc.pid, *_descendants(proc.pid)]:  # the launcher, torchrun and both ranks, mid-run
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stderr.close()
    stopped = torch.load(last, weights_only=True)["step"]
    resumed = subprocess.run([*base, "--resume", *_tiny_set(("train.max_steps", stopped + 4), ("train.checkpoint_every", 2),
                                                             ("train.validate_every", 50), ("train.device", "cpu"))],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["step"] == stopped + 4
    assert f"resumed from {last} at step {stopped}" in resumed.stderr
    # the same 2-rank run without the kill ends bit-identically (every rank restored rank 0's state)
    whole = subprocess.run([*[a if a != str(out) else str(tmp_path / "whole") for a in base],
                            *_tiny_set(("train.max_steps", stopped + 4), ("train.checkpoint_every", 2),
                                       ("train.validate_every", 50), ("train.device", "cpu"))],
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a = torch.load(last, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_global_batch_must_split_evenly_across_ranks(mnist_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metavae", "--data-dir", str(mnist_root), "train", "--out",
                           str(tmp_path / "r"), "--nproc", "3", "--no-progress", *_tiny_set(("train.device", "cpu"))],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "does not split into 3 equal shares" in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before the run directory was created


@pytest.mark.parametrize("value", ["0", "two"])
def test_nproc_must_be_a_positive_whole_number(value, capsys):
    from metavae.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--nproc", value])
    assert "expected a whole number ≥ 1" in capsys.readouterr().err
