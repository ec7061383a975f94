"""Throughput of data-parallel training: one process against N gloo ranks (torchrun) on this machine.

The step is the library's: MetaVAE at paper sizes on MNIST rotate/sparse (global batch 100 × 5
distributions, context pools of 100), through the one ``Trainer``. One process uses all the cores'
threads; N ranks get ``cores / N`` threads each and split every global batch (each rank draws the
whole batch's indices from the shared seed, fetches and transforms it, and computes the model on its
share; gradients are averaged by ``DistributedDataParallel``).

Usage: python benchmarks/data_parallel.py [--nproc 2] [--steps 40] [--device cpu] [--data-dir data]. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def measure(steps: int, warmup: int, data_dir: str, device: str) -> dict:
    """Time ``steps`` training steps after ``warmup`` (in this process, which may be one rank of many)."""
    from metavae.config import load_config
    from metavae.experiments.transformed_images import build_model, build_task
    from metavae.training import Trainer

    cfg = load_config(None, [("data.family", "rotate"), ("data.split", "sparse"), ("train.device", device)])
    task = build_task(cfg, Path(data_dir))
    trainer = Trainer(build_model(cfg, task), task, cfg, Path("/nonexistent-run-dir"))
    tc = trainer.train_cfg
    for i in range(warmup + steps):
        if i == warmup:
            if trainer.dist.active:
                torch.distributed.barrier()
            start = time.perf_counter()
        trainer.step(task.train_batch(0, i, tc.batch_size, tc.context_pool_size, trainer.generator), "train")
    seconds = time.perf_counter() - start
    result = {"world_size": trainer.dist.world_size, "threads_per_rank": torch.get_num_threads(),
              "steps_per_s": steps / seconds, "images_per_s": steps * tc.batch_size * task.num_decoders / seconds}
    trainer.dist.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("METAVAE_DATA", "data"))
    parser.add_argument("--device", default="cpu", help="train.device of every rank (cuda: one GPU per rank, nccl)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: write this process's result here
    args = parser.parse_args()
    if args.worker:
        result = measure(args.steps, args.warmup, args.data_dir, args.device)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.worker).write_text(json.dumps(result))
        return
    cores = os.cpu_count() or 1
    results = {}
    for nproc in (1, args.nproc):
        out = Path(f"/tmp/metavae-dp-bench-{os.getpid()}-{nproc}.json")
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // nproc)))
        env.pop("WORLD_SIZE", None)
        me = [str(Path(__file__).resolve()), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--data-dir", args.data_dir, "--device", args.device, "--worker", str(out)]
        command = [sys.executable, *me] if nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *me]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results[nproc] = json.loads(out.read_text())
        out.unlink()
    one, many = results[1], results[args.nproc]
    for r in (one, many):
        print(f"{r['world_size']} rank(s) × {r['threads_per_rank']} thread(s): {r['steps_per_s']:.2f} steps/s, "
              f"{r['images_per_s']:.0f} images/s")
    print(json.dumps({"cores": cores, "one_process": one, "data_parallel": many,
                      "speedup": round(many["steps_per_s"] / one["steps_per_s"], 3)}))


if __name__ == "__main__":
    main()
