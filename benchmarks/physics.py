"""Speed of the inclined-plane simulator and of the exact posterior on the paper's 304-plane test grid,
and the Bayes-optimal MSE (the floor for any estimator) at a few planes.

Usage: python benchmarks/physics.py [--simulations 1000] [--full [--out DIR]]. With ``--full`` it also times
the whole ``metavae physics`` experiment at its default configuration (training the meta network, the
oracle and the baseline, then the 304-plane evaluation) into a fresh directory. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from metavae.data.physics import TEST_PLANES, InclinedPlane
from metavae.evaluation.exact_posterior import exact_posterior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=1000, help="simulations per test plane")
    parser.add_argument("--full", action="store_true", help="also time the whole `metavae physics` run (default config)")
    parser.add_argument("--out", default=None, help="with --full: its output directory (default: a temporary one)")
    parser.add_argument("--device", default="auto", help="with --full: train.device, used by training and the evaluation "
                        "of the networks (the simulator and the exact posterior timed above run on the CPU)")
    args = parser.parse_args()
    planes = torch.tensor(TEST_PLANES, dtype=torch.float64)
    sim = InclinedPlane()
    start = time.perf_counter()
    out = sim.simulate(planes[:, 0], planes[:, 1], args.simulations, torch.Generator().manual_seed(0))
    simulate_s = time.perf_counter() - start
    n = out.mu.numel()
    length = out.length[:, None].expand_as(out.mu).reshape(-1)
    angle = out.angle[:, None].expand_as(out.mu).reshape(-1)
    start = time.perf_counter()
    post = exact_posterior(out.time.reshape(-1), out.slid.reshape(-1), length, angle)
    posterior_s = time.perf_counter() - start
    mse = ((post.mean.view_as(out.mu) - out.mu) ** 2).mean(1)  # (304,) Bayes-optimal MSE per plane
    floor = {f"L={L:g},A={A:g}": round(float(mse[i]), 6) for i, (L, A) in enumerate(TEST_PLANES)
             if (L, A) in ((10.0, 5.0), (10.0, 20.0), (10.0, 45.0), (2.0, 70.0), (19.0, 70.0))}
    result = {"planes": len(TEST_PLANES), "simulations_per_plane": args.simulations, "observations": n,
              "simulate_seconds": round(simulate_s, 4), "posterior_seconds": round(posterior_s, 3),
              "bayes_mse": floor, "threads": torch.get_num_threads()}
    print(f"simulated {n:,} boxes on {len(TEST_PLANES)} planes in {simulate_s:.3f} s")
    print(f"exact posterior of all {n:,} observations in {posterior_s:.2f} s")
    print("Bayes-optimal MSE: " + ", ".join(f"{k} {v:.5f}" for k, v in floor.items()))
    if args.full:
        result["full_run"] = full_run(args.out, args.device)
    print(json.dumps(result))


def full_run(out: str | None, device: str = "auto") -> dict:
    """Wall time of ``metavae physics`` at the default configuration, and its targets' summary."""
    import tempfile
    from pathlib import Path

    from metavae.experiments import physics

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out) if out else Path(tmp) / "physics"
        if target.exists() and any(target.iterdir()):
            raise SystemExit(f"{target} is not empty: the full run must start from nothing to be timed")
        start = time.perf_counter()
        summary = physics.report(physics.load_physics_config(None, [("train.device", device)]), target, progress=False)
        seconds = time.perf_counter() - start
    print(physics.format_summary(summary))
    print(f"whole `metavae physics` run (default config, {torch.get_num_threads()} threads): {seconds / 60:.2f} min")
    return {"seconds": round(seconds, 1), "training_seconds": {v: round(r["train_seconds"], 1) for v, r in summary["training"].items()},
            "evaluation_seconds": round(summary["seconds"], 1)}


if __name__ == "__main__":
    main()
