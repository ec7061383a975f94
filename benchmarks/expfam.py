"""Wall time of the whole `metavae expfam` experiment at its default configuration (7 training runs,
the sweeps of six families with their references and the unseen families' read-outs).

Usage: python benchmarks/expfam.py [--out DIR] [--device auto]   (default: a temporary directory; DIR must be new
or empty; --device sets train.device, which training and the evaluation of the models use)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from metavae.experiments import expfam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--device", default="auto", help="train.device (auto, cpu, cuda, cuda:N, mps)")
    args = parser.parse_args()
    config = expfam.load_expfam_config(None, [("train.device", args.device)])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "expfam"
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty: the run must start from nothing to be timed")
        start = time.perf_counter()
        summary = expfam.report(config, out, progress=False)
        seconds = time.perf_counter() - start
    print(expfam.format_summary(summary))
    print(f"whole `metavae expfam` run (default config, {torch.get_num_threads()} threads): {seconds / 60:.2f} min")
    print(json.dumps({"seconds": round(seconds, 1), "evaluation_seconds": round(summary["evaluation_seconds"], 1),
                      "training_seconds": {k: round(v["train_seconds"], 1) for k, v in summary["training"].items()}}))


if __name__ == "__main__":
    main()
