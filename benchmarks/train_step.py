"""Throughput of the MetaVAE training step at paper sizes on MNIST rotate/sparse.

Compares, in one process and on the same data:
- ``pooled``: each distribution's context images are a pool of ``--pool`` images drawn once per
  step and embedded once; each example's context is a uniform random 10-subset of the pool;
- ``per-example`` (the straightforward step): every example gets its own 10 context images,
  each embedded separately (``train.context_pool_size = 0``).
Both steps include batch sampling, the image transforms, forward, backward and Adam.

Also measures the cost of the trainer's divergence guards (finite loss, gradient norm and
parameters, checked every step): ``Trainer.step`` against the same forward, backward and Adam step
without the checks, interleaved on the pooled trainer (fastest round of each).

Also compares the pooled step in ``bf16`` autocast with the same step in fp32 (interleaved
rounds, fastest of each), and the −ELBO of both at the same parameters (the networks in bf16, the
log-densities in float32).

Also checks that the expected loss is unchanged: the mean −ELBO of both samplers at the same
fixed parameters over many batches (with standard errors), and reports the achieved fraction
of this machine's measured float32 matmul throughput (FLOPs counted by torch's FlopCounterMode).

Usage: python benchmarks/train_step.py [--steps 30] [--device auto] [--data-dir data]. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from metavae.config import load_config
from metavae.errors import MetaVAEError
from metavae.experiments.transformed_images import build_model, build_task, resolve_data_root
from metavae.objectives import elbo
from metavae.training.devices import autocast
from metavae.training.trainer import Trainer


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def make_trainer(pool: int, data_dir: Path, device: str = "auto", precision: str = "fp32") -> Trainer:
    cfg = load_config(None, [("data.family", "rotate"), ("data.split", "sparse"), ("train.context_pool_size", pool),
                             ("train.device", device), ("train.precision", precision)])
    task = build_task(cfg, data_dir)
    return Trainer(build_model(cfg, task), task, cfg, Path("/nonexistent-run-dir"))


def unguarded_step(trainer: Trainer, batch) -> None:
    """``Trainer.step(batch, "train")`` without its divergence checks (the reference for their cost)."""
    trainer.model.train()
    batch = batch.to(trainer.device)
    with autocast(trainer.device, trainer.precision):
        log_w = trainer.model.log_weights(batch.x, batch.context, 1, decoder_index=batch.decoder_index, objective="training")
    loss = -elbo(log_w).mean()
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    float(loss.detach())


def time_steps(trainer: Trainer, steps: int, offset: int, guarded: bool = True) -> float:
    cfg = trainer.train_cfg
    start = time.perf_counter()
    for i in range(steps):
        batch = trainer.task.train_batch(0, offset + i, cfg.batch_size, cfg.context_pool_size, trainer.generator)
        if guarded:
            trainer.step(batch, "train")
        else:
            unguarded_step(trainer, batch)
    return time.perf_counter() - start


def step_flops(trainer: Trainer) -> int:
    cfg = trainer.train_cfg
    batch = trainer.task.train_batch(0, 0, cfg.batch_size, cfg.context_pool_size, trainer.generator)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step(batch, "train")
    return counter.get_total_flops()


@torch.no_grad()
def mean_loss(trainer: Trainer, state: dict, batches: int, seed: int | None = None) -> tuple[float, float]:
    """Mean and standard error of the −ELBO at parameters ``state`` over fresh batches, on the
    trainer's device and in its precision (``seed``: also fix the model's random draws)."""
    trainer.model.load_state_dict(state)
    cfg = trainer.train_cfg
    if seed is not None:
        torch.manual_seed(seed)
    losses = []
    for i in range(batches):
        b = trainer.task.train_batch(1, i, cfg.batch_size, cfg.context_pool_size, trainer.generator).to(trainer.device)
        with autocast(trainer.device, trainer.precision):
            log_w = trainer.model.log_weights(b.x, b.context, 1, decoder_index=b.decoder_index)
        losses.append(float(-elbo(log_w).mean()))
    t = torch.tensor(losses)
    return float(t.mean()), float(t.std() / len(losses) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loss-batches", type=int, default=60)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--device", default="auto", help="train.device (auto, cpu, cuda, cuda:N, mps)")
    parser.add_argument("--data-dir", default=None, help="data root (default $METAVAE_DATA or ./data)")
    args = parser.parse_args()
    torch.manual_seed(0)
    data_dir = resolve_data_root(args.data_dir)
    fast, slow = make_trainer(args.pool, data_dir, args.device), make_trainer(0, data_dir, args.device)
    half = make_trainer(args.pool, data_dir, args.device, precision="bf16")
    slow.model.load_state_dict(fast.model.state_dict())
    half.model.load_state_dict(fast.model.state_dict())
    for t in (fast, slow, half):  # warm-up (allocations, caches)
        time_steps(t, 3, 0)
    fast_s = slow_s = 0.0
    for r in range(args.rounds):  # interleaved rounds, so both see the same machine load
        fast_s += time_steps(fast, args.steps, 3 + r * args.steps)
        slow_s += time_steps(slow, args.steps, 3 + r * args.steps)
    n = args.steps * args.rounds
    steps_per_s, baseline_steps_per_s = n / fast_s, n / slow_s
    guarded, bare = [], []  # per-round times; the fastest round of each is least disturbed by other load
    for r in range(args.rounds):
        guarded.append(time_steps(fast, args.steps, 3 + (args.rounds + r) * args.steps))
        bare.append(time_steps(fast, args.steps, 3 + (args.rounds + r) * args.steps, guarded=False))
    guarded_s, bare_s = min(guarded) * args.rounds, min(bare) * args.rounds
    fp32_rounds, bf16_rounds = [], []  # fp32 vs bf16 autocast, interleaved, fastest round of each
    for r in range(args.rounds):
        offset = 3 + (2 * args.rounds + r) * args.steps
        fp32_rounds.append(time_steps(fast, args.steps, offset))
        bf16_rounds.append(time_steps(half, args.steps, offset))
    fp32_rate, bf16_rate = args.steps / min(fp32_rounds), args.steps / min(bf16_rounds)
    images_per_step = fast.task.num_decoders * fast.train_cfg.batch_size
    flops = step_flops(fast)
    peak = matmul_gflops()
    # expected loss at the same (briefly trained) parameters under both samplers
    state = {k: v.clone() for k, v in fast.model.state_dict().items()}
    loss_fast, se_fast = mean_loss(fast, state, args.loss_batches)
    loss_slow, se_slow = mean_loss(slow, state, args.loss_batches)
    fast.generator.manual_seed(123)
    half.generator.manual_seed(123)
    loss_fp32, _ = mean_loss(fast, state, 10, seed=7)
    loss_bf16, _ = mean_loss(half, state, 10, seed=7)  # same batches and, seeded alike, the same draws: only precision differs
    result = {
        "config": "MetaVAE, MNIST rotate/sparse, paper sizes, batch 100 x 5 distributions, context 10",
        "pool_size": args.pool,
        "steps_per_s": round(steps_per_s, 3),
        "images_per_s": round(steps_per_s * images_per_step, 1),
        "baseline_steps_per_s": round(baseline_steps_per_s, 3),
        "baseline_images_per_s": round(baseline_steps_per_s * images_per_step, 1),
        "speedup": round(steps_per_s / baseline_steps_per_s, 2),
        "gflop_per_step": round(flops / 1e9, 3),
        "achieved_gflops": round(flops / 1e9 * steps_per_s, 2),
        "matmul_gflops": round(peak, 2),
        "matmul_fraction": round(flops / 1e9 * steps_per_s / peak, 3),
        "loss_pooled": round(loss_fast, 3),
        "loss_pooled_se": round(se_fast, 3),
        "loss_per_example": round(loss_slow, 3),
        "loss_per_example_se": round(se_slow, 3),
        "guard_overhead": round(guarded_s / bare_s - 1, 4),
        "device": str(fast.device),
        "fp32_steps_per_s": round(fp32_rate, 3),
        "bf16_steps_per_s": round(bf16_rate, 3),
        "bf16_images_per_s": round(bf16_rate * images_per_step, 1),
        "bf16_speedup": round(bf16_rate / fp32_rate, 3),
        "bf16_loss_relative_difference": round(abs(loss_bf16 - loss_fp32) / abs(loss_fp32), 5),
        "threads": torch.get_num_threads(),
    }
    print(f"pooled contexts:      {steps_per_s:7.2f} steps/s  {result['images_per_s']:9.1f} images/s")
    print(f"per-example contexts: {baseline_steps_per_s:7.2f} steps/s  {result['baseline_images_per_s']:9.1f} images/s")
    print(f"speedup {result['speedup']}x; {result['achieved_gflops']} GFLOP/s of {result['matmul_gflops']} measured matmul "
          f"GFLOP/s ({result['matmul_fraction']:.1%})")
    print(f"divergence guards: {result['guard_overhead']:+.1%} time per step (guarded {n / guarded_s:.2f} vs unguarded "
          f"{n / bare_s:.2f} steps/s)")
    print(f"bf16 autocast: {bf16_rate:.2f} vs fp32 {fp32_rate:.2f} steps/s ({result['bf16_speedup']}x, "
          f"{result['bf16_images_per_s']} images/s); -ELBO at fixed parameters {loss_bf16:.3f} vs {loss_fp32:.3f} "
          f"({result['bf16_loss_relative_difference']:.3%} apart)")
    print(f"mean -ELBO at fixed parameters: pooled {loss_fast:.3f} ± {se_fast:.3f}, per-example {loss_slow:.3f} ± {se_slow:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except MetaVAEError as exc:
        raise SystemExit(f"train_step.py: error: {exc}") from None
