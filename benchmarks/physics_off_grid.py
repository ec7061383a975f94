"""The physics networks on planes that are on neither the training nor the 304-plane test grid.

Usage: python benchmarks/physics_off_grid.py RUN_DIR   (RUN_DIR: the --out of a `metavae physics` run)

Evaluates the run's variants, exactly as `metavae physics` does on the test grid, on 32 planes inside
the training range but between its grid points (A = 22.5, 27.5, …, 57.5; L = 2.5, 4.5, 6.5, 8.5): a
check that nothing about the networks was fitted to the test grid's planes. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from metavae.experiments import physics

OFF_GRID = tuple((length, angle) for length in (2.5, 4.5, 6.5, 8.5) for angle in (22.5, 27.5, 32.5, 37.5, 42.5, 47.5, 52.5, 57.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "summary.json").read_text())
    config = physics.PhysicsConfig.from_dict(summary["config"])
    models = {v: physics.load_run(args.run_dir / v)[1] for v in config.models}
    rows = physics.evaluate_planes(models, config, OFF_GRID)
    result = {}
    for v in models:
        ratios = [r[f"ratio_{v}"] for r in rows]
        cover = [r[f"coverage90_{v}"] for r in rows]
        result[v] = {"median_ratio": round(statistics.median(ratios), 3), "max_ratio": round(max(ratios), 2),
                     "within_1.2": sum(x <= 1.2 for x in ratios), "coverage90": [round(min(cover), 3), round(max(cover), 3)]}
        print(f"{v:>10}: median ratio {result[v]['median_ratio']:.3f}, worst {result[v]['max_ratio']:.2f}, "
              f"{result[v]['within_1.2']}/{len(rows)} within 1.2×, 90 % coverage {cover and min(cover):.3f}–{max(cover):.3f}")
    print(json.dumps({"planes": len(rows), "variants": result}))


if __name__ == "__main__":
    main()
