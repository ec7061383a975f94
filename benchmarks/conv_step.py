"""Training throughput of the conv backbone on this machine, against the MLP backbone in the same process.

One ``Trainer.step`` (batch sampling, the image transforms, forward, backward and Adam) of each
model on MNIST rotate/sparse (5 training distributions; 28×28 images, the conv encoder gives
256×4×4 features at the paper's channels), repeated in interleaved rounds; the fastest round of each
counts. Reported per model and backbone: steps/s and images/s, counting the query images of a step
(``5·batch_size``) and, separately, every image the encoders see (queries plus the context pool).

Usage: python benchmarks/conv_step.py [--models metavae,vae] [--channels 64,128,256] [--batch-size 32]
[--steps 5] [--rounds 2] [--precision fp32] [--device auto] [--data-dir DIR]. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metavae.config import load_config
from metavae.errors import MetaVAEError
from metavae.experiments.transformed_images import VARIANTS, build_model, build_task, resolve_data_root, variant_config
from metavae.training.trainer import Trainer


def make_trainer(variant: str, backbone: str, channels: list[int], batch_size: int, pool: int, data_dir: Path,
                 device: str, precision: str) -> Trainer:
    base = load_config(None, [("data.family", "rotate"), ("data.split", "sparse"), ("model.backbone", backbone),
                              ("model.conv_channels", channels), ("train.batch_size", batch_size),
                              ("train.context_pool_size", pool), ("train.device", device), ("train.precision", precision)])
    cfg = variant_config(base, variant)
    task = build_task(cfg, data_dir)
    return Trainer(build_model(cfg, task), task, cfg, Path("/nonexistent-run-dir"))


def timed_round(trainer: Trainer, steps: int, generator: torch.Generator, batch_size: int, pool: int) -> float:
    batches = [trainer.task.train_batch(0, i, batch_size, pool, generator) for i in range(steps)]
    trainer.step(batches[0], "train")  # warm-up (allocations)
    start = time.perf_counter()
    for batch in batches:
        trainer.step(batch, "train")
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="metavae,vae_per_distribution", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--channels", default="64,128,256", help="model.conv_channels")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per distribution and step")
    parser.add_argument("--pool", type=int, default=32, help="context pool per distribution and step")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    try:
        data_dir = resolve_data_root(args.data_dir)
        channels = [int(c) for c in args.channels.split(",")]
        trainers = {(v, b): make_trainer(v, b, channels, args.batch_size, args.pool, data_dir, args.device, args.precision)
                    for v in args.models.split(",") for b in ("mlp", "conv")}
    except MetaVAEError as error:
        raise SystemExit(f"metavae: error: {error}") from None
    generator = torch.Generator().manual_seed(0)
    best = {key: float("inf") for key in trainers}
    for _ in range(args.rounds):
        for key, trainer in trainers.items():
            best[key] = min(best[key], timed_round(trainer, args.steps, generator, args.batch_size, args.pool))
    distributions = next(iter(trainers.values())).task.num_decoders
    queries = distributions * args.batch_size
    seen = queries + distributions * args.pool
    rows = []
    print(f"{'model':24s} {'backbone':8s} {'s/step':>8s} {'query img/s':>12s} {'all img/s':>10s}  params")
    for (variant, backbone), seconds in best.items():
        params = sum(p.numel() for p in trainers[(variant, backbone)].model.parameters())
        rows.append({"model": variant, "backbone": backbone, "seconds_per_step": seconds, "query_images_per_s": queries / seconds,
                     "encoded_images_per_s": seen / seconds, "parameters": params})
        print(f"{variant:24s} {backbone:8s} {seconds:8.3f} {queries / seconds:12.0f} {seen / seconds:10.0f}  {params:,}")
    print(json.dumps({"channels": channels, "batch_size": args.batch_size, "pool": args.pool, "precision": args.precision,
                      "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
