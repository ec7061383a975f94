"""``REPORT.md`` of a ``metavae reproduce`` directory: our numbers beside the paper's (``metavae report DIR``).

Every number comes from a file of the directory, named in the table or sentence it appears in
(``compare.json``, ``summary.json``, ``planes.csv``, ``sweep.csv``, ``invariance.json``, the runs'
``summary.json`` and ``reproduce.json``); the only numbers not read from the directory are the
paper's, from :data:`~metavae.evaluation.paper.PAPER_READINGS` (the readings file, each with its
figure or table and panel). A part with no results yet says so; the sections are always there.

Figures: the report draws its own Fig. 6 figures from ``compare.json`` (per panel, our probe
accuracy per held-out value with the paper's mean as a dashed line per model; and one summary of
every panel, ours beside the paper) into ``figures/``, and embeds the physics and
exponential-family figures the experiments wrote (``heatmaps.png``, ``ratios.png``, ``sweeps.png``).

``dest`` (``metavae report DIR --to DEST``, e.g. ``docs/results``): the report, its figures and the
runs' ``config.yaml`` files are written there instead of into ``DIR``, so that the report can be
committed without the checkpoints.

Sections (:data:`SECTIONS`): header (library version, commit, preset, the invocations of
``reproduce`` with their wall time), the summary of every panel and model, Fig. 6 per panel, Fig. 1
(physics, with the Bayes floor and the paper's claim checked plane by plane), Figs. 2–3 (exponential
families: ratios to the exact posterior, the Gaussian sweep at ±10 and the unseen families beside
the paper), Table 1 (invariance), and the runs (model, seed, device, threads, steps, schedule, wall
time, config file).
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path
from typing import Any

from metavae import __version__
from metavae.errors import RunDirectoryError
from metavae.evaluation.paper import PAPER_READINGS, paper_probe_accuracy, reading
from metavae.experiments.common import read_json, source_commit
from metavae.experiments.physics import read_planes_csv
from metavae.files import atomic_write_text, describe_os_error

__all__ = ["SECTIONS", "build_report", "paper_accuracy"]

SECTIONS = ("## Summary: every panel and model", "## Fig. 6", "## Fig. 1", "## Figs. 2–3", "## Table 1", "## Runs")


def paper_accuracy(dataset: str, family: str, split: str) -> tuple[dict[str, float], str | None]:
    """The paper's Fig. 6 readings of a panel of ``dataset`` (none for Fashion-MNIST) and their source."""
    e = reading("probe_accuracy", dataset=dataset, family=family, split=split)
    return paper_probe_accuracy(dataset, family, split), None if e is None else e["source"]


def _paper_invariance(trained: str, measured: str) -> float | None:
    e = reading("invariance", dataset="mnist", trained=trained)
    return None if e is None else e.get(measured)


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _num(value: Any, fmt: str = ".3f") -> str:
    return "—" if value is None else format(value, fmt)


class _Files:
    """Where the report reads (``root``) and writes (``dest``): figures and configs it refers to are
    copied into ``dest`` when it differs from ``root``, under the same relative paths."""

    def __init__(self, root: Path, dest: Path) -> None:
        self.root, self.dest = root, dest

    def figure(self, rel: str) -> str:
        """Embed ``root/rel`` (copied into ``dest`` if need be); returns the markdown link target."""
        self.copy(rel)
        return rel

    def copy(self, rel: str) -> None:
        src, dst = self.root / rel, self.dest / rel
        if src.resolve() == dst.resolve() or not src.is_file():
            return
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        except OSError as exc:
            raise RunDirectoryError(f"cannot copy {src} into {self.dest}: {describe_os_error(exc)}") from exc


def _header(root: Path) -> list[str]:
    status = read_json(root / "reproduce.json")
    lines = ["# Reproducing Wu et al. (AAAI 2020), Meta-Amortized Variational Inference and Learning", "",
             f"metavae {__version__}, commit {source_commit()}; written {time.strftime('%Y-%m-%d %H:%M %Z')} by `metavae report`.",
             "Paper numbers: `metavae/data/paper_readings.yaml` (each with its figure or table and panel; Fig. 6 bars "
             "read off the plots, about ±0.02). Every other number: the file named beside it, relative to the "
             "`metavae reproduce --out` directory.", ""]
    if isinstance(status, dict) and isinstance(status.get("runs"), dict):
        runs = status["runs"].values()
        counts = {s: sum(r.get("status") == s for r in runs) for s in ("finished", "skipped", "failed", "blocked")}
        lines.append(f"Preset `{status.get('preset')}` (`reproduce.json`), last invocation: "
                     + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
        calls = [c for c in status.get("invocations", []) if isinstance(c, dict)]
        if calls:
            lines += ["", "| invocation started | engine | jobs | runs finished / skipped / failed / blocked | wall time (h) |",
                      "|---|---|---|---|---|"]
            for c in calls:
                n = c.get("counts", {})
                lines.append(f"| {c.get('started')} | {c.get('engine')} | {c.get('jobs')} | "
                             f"{n.get('finished', 0)} / {n.get('skipped', 0)} / {n.get('failed', 0)} / {n.get('blocked', 0)} | "
                             f"{c.get('seconds', 0.0) / 3600:.2f} |")
            lines.append(f"| total | | | | {sum(c.get('seconds', 0.0) for c in calls) / 3600:.2f} |")
    return [*lines, ""]


def _panels(root: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(root.glob("*/*/compare.json")):
        result = read_json(path)
        if isinstance(result, dict) and isinstance(result.get("variants"), dict):
            out.append((path.relative_to(root).as_posix(), result))
    order = {"mnist": 0, "fashion_mnist": 1, "norb": 2}
    splits = {"interleaved": 0, "sparse": 1, "contiguous": 2}
    return sorted(out, key=lambda p: (order.get(p[0].split("/")[0], 9), p[1]["family"], splits.get(p[1]["split"], 9)))


def _fig6(root: Path, files: _Files) -> tuple[list[str], list[str]]:
    from metavae.plotting.compare import plot_compare, plot_panel_summary

    panels = _panels(root)
    fig = ["## Fig. 6: linear probe on held-out transformations", "",
           "Per panel: our probe accuracy per held-out value (bars, one colour per model) and the paper's mean over "
           "the held-out values (dashed lines, where the paper has the model: its per-value bars were not read off, only "
           "each panel's mean).", ""]
    summary = ["## Summary: every panel and model", ""]
    table = ["| panel | model | ours | paper | ours − paper | source |", "|---|---|---|---|---|---|"]
    if not panels:
        return [*fig, "No panel has finished yet (no `<dataset>/<panel>/compare.json`)."], [*summary, "No panel has finished yet.", ""]
    (files.dest / "figures").mkdir(parents=True, exist_ok=True)
    bars: list[tuple[str, dict[str, tuple[float, float | None]]]] = []
    iwae_best = 0
    for rel, result in panels:
        dataset = rel.split("/")[0]
        paper, source = paper_accuracy(dataset, result["family"], result["split"])
        name = f"figures/fig6_{dataset}_{result['family']}_{result['split']}.png"
        plot_compare(result, files.dest / name, style="grouped", paper=paper)
        fig += [f"### {dataset} {result['family']} / {result['split']} (seed {result['seed']})", "",
                f"![{rel}]({name})", "",
                "| model | probe accuracy | paper | difference | ref-classifier accuracy | test IWAE |",
                "|---|---|---|---|---|---|"]
        row_bars: dict[str, tuple[float, float | None]] = {}
        for variant, row in result["variants"].items():
            ours = row["mean_accuracy"]
            ref = paper.get(row["model"]) if variant == row["model"] else None  # vae_per_distribution is no paper model
            diff = None if ref is None else ours - ref
            row_bars[variant] = (ours, ref)
            fig.append(f"| {variant} | {ours:.3f} | {_num(ref, '.2f')} | {_num(diff, '+.3f')} | "
                       f"{row['invariance_mean_accuracy']:.3f} | {row['test_log_likelihood']:.2f} |")
            table.append(f"| {dataset} {result['family']}/{result['split']} | {variant} | {ours:.3f} | {_num(ref, '.2f')} | "
                         f"{_num(diff, '+.3f')} | `{rel}`{'; ' + source if ref is not None else ''} |")
        bars.append((f"{dataset} {result['family']}/{result['split']}", row_bars))
        iwae = {v: r["test_log_likelihood"] for v, r in result["variants"].items()}
        iwae_best += "metavae" in iwae and iwae["metavae"] >= max(iwae.values())
        fig += ["", f"Numbers: `{rel}`; paper: {source or 'no reading for this data set'}. Ref-classifier accuracy: "
                "one classifier fitted on the codes of the reference (untransformed) images, tested on every held-out "
                "value's codes (each run's `probe.json`).", ""]
    plot_panel_summary(bars, files.dest / "figures/fig6_summary.png")
    wins = [(label, row) for label, row in bars if "metavae" in row and len(row) > 1]
    best = sum(row["metavae"][0] >= max(v[0] for k, v in row.items() if k != "metavae") for _, row in wins)
    summary += ["![every panel](figures/fig6_summary.png)", "",
                f"MetaVAE has the highest mean held-out probe accuracy of the models in {best} of {len(wins)} panels, "
                f"and the highest test IWAE in {iwae_best} of {len(panels)} (the IWAE of models with one decoder per "
                "distribution scores x under its own decoder; see each run's `test_loglik.json`).", "",
                *_mean_differences(bars), "",
                *table, ""]
    return fig, summary


def _mean_differences(bars: list[tuple[str, dict[str, tuple[float, float | None]]]]) -> list[str]:
    """Per model with paper readings: the mean of (ours − paper) over the panels that have one."""
    diffs: dict[str, list[float]] = {}
    for _, row in bars:
        for model, (ours, ref) in row.items():
            if ref is not None:
                diffs.setdefault(model, []).append(ours - ref)
    if not diffs:
        return ["No panel has a paper reading (Fashion-MNIST only)."]
    return ["Mean of ours − paper over the panels with a reading: " +
            ", ".join(f"{m} {sum(d) / len(d):+.3f} ({len(d)} panels)" for m, d in diffs.items()) + "."]


def _physics_claim(rows: list[dict[str, Any]], variant: str) -> list[str]:
    """The paper's Fig. 1 claims checked plane by plane against ``planes.csv``."""
    bound = reading("physics", quantity="metavae_mse_bound")
    scale = reading("physics", quantity="heatmap_scale")
    lines = []
    region = [r for r in rows if bound and bound["angle_min"] <= r["angle"] <= bound["angle_max"]
              and bound["length_min"] <= r["length"] <= bound["length_max"]]
    if bound and region and f"mse_{variant}" in region[0]:
        ours = sum(r[f"mse_{variant}"] < bound["mse_below"] for r in region)
        floor = sum(r["mse_bayes"] < bound["mse_below"] for r in region)
        worst = max(region, key=lambda r: r[f"mse_{variant}"])
        lines.append(f"The paper ({bound['source']}): MSE < {bound['mse_below']:g} on every plane with "
                     f"A ∈ [{bound['angle_min']:g}, {bound['angle_max']:g}], L ∈ [{bound['length_min']:g}, {bound['length_max']:g}]. "
                     f"Here, of the {len(region)} test planes there: ours below it on {ours}, the exact posterior (the "
                     f"floor for any estimator) on {floor}; our worst plane there L = {worst['length']:g}, "
                     f"A = {worst['angle']:g}: MSE {worst[f'mse_{variant}']:.4f} against the floor's "
                     f"{worst['mse_bayes']:.4f} (`physics/planes.csv`).")
    if scale and rows:
        tops = {k: max(r[f"mse_{v}"] for r in rows) for k, v in (("metavae", variant), ("baseline", "baseline"))
                if f"mse_{v}" in rows[0]}
        lines.append("Worst plane over the whole grid (the top of a heatmap's scale): ours "
                     + ", ".join(f"{k} {v:.3f} (paper ≈{scale[k]:g})" for k, v in tops.items())
                     + f"; the exact posterior {max(r['mse_bayes'] for r in rows):.3f} ({scale['source']}).")
    return lines


def _physics(root: Path, files: _Files) -> list[str]:
    lines = ["## Fig. 1: compiled inference on the inclined plane", ""]
    s = read_json(root / "physics" / "summary.json")
    if not isinstance(s, dict) or "variants" not in s:
        return [*lines, "Not finished yet (no `physics/summary.json`).", ""]
    heat, ratios = files.figure("physics/heatmaps.png"), files.figure("physics/ratios.png")
    lines += [f"![heatmaps]({heat})", "", f"![ratios]({ratios})", "",
              f"MSE of the posterior mean over {s['planes']} test planes against the exact posterior's (the Bayes floor, "
              f"mean MSE {s['mean_mse_bayes_all']:.5f}); ratio = variant MSE / floor MSE on the same boxes; training range: "
              f"{s['planes_in_training_range']} planes.", "",
              "| variant | median ratio (all) | max ratio in range | planes ≤ 1.2× in range | 90 % coverage in range | mean MSE |",
              "|---|---|---|---|---|---|"]
    for v, r in s["variants"].items():
        cov = r.get("coverage90_in_range") or [None, None]
        lines.append(f"| {v} | {r['median_ratio_all']:.3f} | {_num(r['max_ratio_in_range'])} | "
                     f"{r['planes_within_1.2_in_range']}/{s['planes_in_training_range']} | {_num(cov[0])}–{_num(cov[1])} | "
                     f"{r['mean_mse_all']:.5f} |")
    lines += [f"| exact posterior (floor) | 1.000 | 1.000 | — | — | {s['mean_mse_bayes_all']:.5f} |", "",
              "Numbers: `physics/summary.json` (per plane: `physics/planes.csv`).", ""]
    planes = root / "physics" / "planes.csv"
    claim = _physics_claim(read_planes_csv(planes) if planes.is_file() else [], "meta")
    return [*lines, *(f"{c}\n" for c in claim)]


def _expfam(root: Path, files: _Files) -> list[str]:
    lines = ["## Figs. 2–3: sufficient statistics of exponential families", ""]
    s = read_json(root / "expfam" / "summary.json")
    if not isinstance(s, dict) or "summary" not in s:
        return [*lines, "Not finished yet (no `expfam/summary.json`).", ""]
    lines += [f"![sweeps]({files.figure('expfam/sweeps.png')})", "",
              "Ratio = MSE / the exact posterior's (given x) on the same observations; reach: the first swept θ beyond "
              "the training range where the ratio exceeds 2 (— : never). Estimators `mle_x` and `mle_x_and_context` are "
              "the references (the MLE from x, and from x with its context set).", "",
              "| family | estimator | max ratio in range | median ratio in range | reach below | reach above |",
              "|---|---|---|---|---|---|"]
    unseen = []
    for family, models in s["summary"].items():
        for name, r in models.items():
            if "max_ratio_in_range" in r:
                reach = r["first_theta_beyond_2x"]
                lines.append(f"| {family} | {name} | {_num(r['max_ratio_in_range'])} | {_num(r['median_ratio_in_range'])} | "
                             f"{_num(reach['below'], 'g')} | {_num(reach['above'], 'g')} |")
            else:
                paper = reading("expfam", experiment="unseen", family=family)
                ref = paper.get("metavae_many") if paper and name == "many_metavae" and math.isclose(paper["theta"], r["theta"]) else None
                unseen.append(f"| {family} | {name} | {r['theta']:g} | {r['mse']:.3g} | {_num(ref, 'g')} |")
    lines += ["", "Numbers: `expfam/summary.json` (per θ: `expfam/sweep.csv`).", ""]
    gauss = reading("expfam", experiment="gaussian_sweep", family="gaussian")
    sweep = _read_csv(root / "expfam" / "sweep.csv")
    if gauss and sweep:
        at = {(r["estimator"], float(r["theta"])): float(r["mse"]) for r in sweep if r["family"] == "gaussian"}
        cells = []
        for est, paper in (("single_gaussian_metavae", f"≈{gauss['metavae']:g}"),
                           ("single_gaussian_vae", f"≈{gauss['vae_low']:g}–{gauss['vae_high']:g}")):
            ends = [at.get((est, t)) for t in (-gauss["theta"], gauss["theta"])]
            if None not in ends:
                cells.append(f"| {est} | {ends[0]:.3g} | {ends[1]:.3g} | {paper} |")
        if cells:
            lines += [f"Gaussian means at ±{gauss['theta']:g}, outside the training range ({gauss['source']}; "
                      "numbers: `expfam/sweep.csv`):", "",
                      f"| estimator | MSE at −{gauss['theta']:g} | MSE at +{gauss['theta']:g} | paper |", "|---|---|---|---|",
                      *cells, ""]
    if unseen:
        lines += ["Families never trained on, read off a frozen encoder (paper: Fig. 3, the 90-distribution MetaVAE; "
                  "numbers: `expfam/summary.json`):", "",
                  "| family | estimator | θ | MSE | paper |", "|---|---|---|---|---|", *unseen, ""]
    return lines


def _invariance(root: Path) -> list[str]:
    lines = ["## Table 1: invariance of the representation", ""]
    result = read_json(root / "invariance" / "invariance.json")
    if not isinstance(result, dict) or not result.get("runs"):
        return [*lines, "Not finished yet (no `invariance/invariance.json`).", ""]
    columns = list(result["settings"]["families"])
    lines += [f"Mean L2 distance between the code of a base test image and of its transformed versions "
              f"({result['settings']['examples']} test images); paper in parentheses (Table 1).", "",
              "| trained on | " + " | ".join(columns) + " | normalised (" + ", ".join(columns) + ") |",
              "|---" * (len(columns) + 2) + "|"]
    for row in result["runs"]:
        fam = row["families"]
        cells = []
        for c in columns:
            paper = _paper_invariance(row["family"], c) if (row["dataset"], row["model"]) == ("mnist", "metavae") else None
            cells.append(f"{fam[c]['distance']:.3f}" + (f" ({paper:.2f})" if paper is not None else ""))
        normalised = ", ".join(_num(fam[c]["normalised"]) for c in columns)
        lines.append(f"| {row['family']} {row['model']} | " + " | ".join(cells) + f" | {normalised} |")
    norb = ", ".join(f"{e['trained']} {e[e['trained']]:g}" for e in PAPER_READINGS["invariance"] if e["dataset"] == "norb")
    return [*lines, "", "Numbers: `invariance/invariance.json`; the paper's distances are on its own code scale, "
            "so the normalised columns (distance / between-image distance) are the comparable ones.", "",
            f"The paper's smallNORB row (trained-family distances: {norb}) is not measured: smallNORB's factors are "
            "photographs of the object under other conditions, not transformations that can be applied to a base "
            "image, so there is no transformed version of a test image to compare with (`metavae invariance` refuses "
            "smallNORB runs).", ""]


def _run_row(rel: str, model: Any, train: dict[str, Any], env: dict[str, Any] | None, steps: Any, best: Any,
             seconds: float, files: _Files) -> str:
    """One row of the Runs table; ``env``: the run's ``environment`` record (absent in older runs: the
    device setting is shown instead); the run's ``config.yaml`` is copied beside the report."""
    env = env or {}
    device = env.get("device") or f"{train.get('device', '?')} (setting)"
    files.copy(f"{rel}/config.yaml")
    return (f"| {rel} | {model} | {train.get('seed')} | {device} | {env.get('threads', '—')} | {env.get('commit', '—')} | "
            f"{steps} ({best}) | {train.get('lr', 0):g} | {train.get('batch_size')} | {seconds:.0f} | "
            f"[`{rel}/config.yaml`]({rel}/config.yaml) |")


def _runs(root: Path, files: _Files) -> list[str]:
    lines = ["## Runs", "",
             "Every training run: its seed, the device it ran on, torch's threads, the library's commit (— : not "
             "recorded by older runs), its length (the best validation step in parentheses), schedule, wall time of "
             "training and config.", "",
             "| run | model | seed | device | threads | commit | steps (best) | lr | batch | train time (s) | config |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    header = len(lines)
    for path in sorted(root.glob("*/*/*/summary.json")):
        s = read_json(path)
        if isinstance(s, dict) and "config" in s:
            lines.append(_run_row(path.parent.relative_to(root).as_posix(), s.get("model"), s["config"].get("train", {}),
                                  s.get("environment"), s.get("steps"), s.get("best_step"), s.get("train_seconds", 0),
                                  files))
    for part in ("physics", "expfam"):
        s = read_json(root / part / "summary.json")
        if not isinstance(s, dict) or not isinstance(s.get("training"), dict):
            continue
        train = s.get("config", {}).get("train", {})
        for name, t in s["training"].items():
            done = read_json(root / part / name / "finished.json") or {}
            lines.append(_run_row(f"{part}/{name}", part, train, done.get("environment") or s.get("environment"),
                                  t.get("steps"), t.get("best_step", "—"), t.get("train_seconds", 0), files))
    if len(lines) == header:
        lines.append("| (no finished run yet) | | | | | | | | | | |")
    return [*lines, ""]


def build_report(root: str | Path, dest: str | Path | None = None) -> Path:
    """Write ``REPORT.md`` from the files under ``root`` into ``dest`` (default ``root``), with the
    figures it embeds and the configs it links; returns its path."""
    root = Path(root)
    if not root.is_dir():
        raise RunDirectoryError(f"{root} is not a directory: give the --out of `metavae reproduce`")
    dest = root if dest is None else Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {dest}: {describe_os_error(exc)}") from exc
    files = _Files(root, dest)

    def section(name: str, build: Any, *args: Any) -> Any:
        try:
            return build(*args)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a record written by something else, or damaged
            raise RunDirectoryError(f"{root}: a file that the {name} section reads has unexpected content "
                                    f"({type(exc).__name__}: {exc}); run `metavae reproduce` with the same --out again "
                                    "to redo the step that wrote it") from None

    fig6, summary = section("Fig. 6", _fig6, root, files)
    text = "\n".join([*section("header", _header, root), *summary, *fig6, *section("Fig. 1", _physics, root, files),
                      *section("Figs. 2–3", _expfam, root, files), *section("Table 1", _invariance, root),
                      *section("Runs", _runs, root, files)])
    path = dest / "REPORT.md"
    atomic_write_text(path, text)
    return path

