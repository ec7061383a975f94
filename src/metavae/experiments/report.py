"""``REPORT.md`` of a ``metavae reproduce`` directory: our numbers beside the paper's (``metavae report DIR``).

Every number comes from a file of the directory, named in the table it appears in (``compare.json``,
``summary.json``, ``invariance.json``, the runs' ``summary.json``); the only numbers not read from
the directory are the paper's, from :data:`~metavae.evaluation.paper.PAPER_READINGS` (the readings
file, each with its figure / table and panel). The figures embedded are the ones the experiments
already wrote (``compare.png``, ``heatmaps.png``, ``ratios.png``, ``sweeps.png``). A part with no
results yet says so; the sections are always there.

Sections: header (library version, commit, preset and outcome of the runs from ``reproduce.json``),
Fig. 6 (per panel: the figure and ours / paper / difference per model; then one summary table of
every panel and model), Fig. 1 (physics, with the Bayes floor), Figs. 2–3 (exponential families,
ratios to the exact posterior), Table 1 (invariance), and the runs (model, seed, device, steps,
wall time, config file).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from metavae import __version__
from metavae.errors import RunDirectoryError
from metavae.evaluation.paper import PAPER_READINGS
from metavae.files import atomic_write_text

__all__ = ["SECTIONS", "build_report", "paper_accuracy"]

SECTIONS = ("## Fig. 6", "## Summary: every panel and model", "## Fig. 1", "## Figs. 2–3", "## Table 1", "## Runs")


def paper_accuracy(dataset: str, family: str, split: str) -> tuple[dict[str, float], str | None]:
    """The paper's Fig. 6 readings of a panel of ``dataset`` (none for Fashion-MNIST) and their source."""
    for e in PAPER_READINGS["probe_accuracy"]:
        if (e["dataset"], e["family"], e["split"]) == (dataset, family, split):
            return {k: v for k, v in e.items() if k not in ("dataset", "family", "split", "source")}, e["source"]
    return {}, None


def _paper_invariance(trained: str, measured: str) -> float | None:
    for e in PAPER_READINGS["invariance"]:
        if (e["dataset"], e["trained"]) == ("mnist", trained):
            return e.get(measured)
    return None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _num(value: Any, fmt: str = ".3f") -> str:
    return "—" if value is None else format(value, fmt)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _header(root: Path) -> list[str]:
    status = _read(root / "reproduce.json")
    lines = ["# Reproducing Wu et al. (AAAI 2020), Meta-Amortized Variational Inference and Learning", "",
             f"metavae {__version__}, commit {_commit()}; written {time.strftime('%Y-%m-%d %H:%M %Z')} from `{root}`.",
             "Paper numbers: `metavae/data/paper_readings.yaml` (each with its figure or table and panel; Fig. 6 bars "
             "read off the plots, about ±0.02). Every other number: the file named in its table."]
    if isinstance(status, dict) and isinstance(status.get("runs"), dict):
        runs = status["runs"].values()
        counts = {s: sum(r.get("status") == s for r in runs) for s in ("finished", "skipped", "failed", "blocked")}
        lines.append(f"Preset `{status.get('preset')}` (`reproduce.json`): " + ", ".join(f"{n} {s}" for s, n in counts.items())
                     + f"; {sum(r.get('seconds', 0.0) for r in runs) / 3600:.2f} h of run time in the last invocation.")
    return [*lines, ""]


def _panels(root: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(root.glob("*/*/compare.json")):
        result = _read(path)
        if isinstance(result, dict) and isinstance(result.get("variants"), dict):
            out.append((path.relative_to(root).as_posix(), result))
    return out


def _fig6(root: Path) -> tuple[list[str], list[str]]:
    panels = _panels(root)
    fig = ["## Fig. 6: linear probe on held-out transformations", ""]
    summary = ["## Summary: every panel and model", "",
               "| panel | model | ours | paper | ours − paper | source |", "|---|---|---|---|---|---|"]
    if not panels:
        fig.append("No panel has finished yet (no `<dataset>/<panel>/compare.json`).")
        summary = [*summary[:2], "No panel has finished yet."]
    for rel, result in panels:
        dataset = rel.split("/")[0]
        paper, source = paper_accuracy(dataset, result["family"], result["split"])
        fig += [f"### {dataset} {result['family']} / {result['split']} (seed {result['seed']})", "",
                f"![{rel}]({Path(rel).with_name('compare.png').as_posix()})", "",
                "| model | probe accuracy | paper | difference | ref-classifier accuracy | test IWAE |",
                "|---|---|---|---|---|---|"]
        for variant, row in result["variants"].items():
            ours = row["mean_accuracy"]
            ref = paper.get(row["model"]) if variant == row["model"] else None  # vae_per_distribution is no paper model
            diff = None if ref is None else ours - ref
            fig.append(f"| {variant} | {ours:.3f} | {_num(ref, '.2f')} | {_num(diff, '+.3f')} | "
                       f"{row['invariance_mean_accuracy']:.3f} | {row['test_log_likelihood']:.2f} |")
            summary.append(f"| {dataset} {result['family']}/{result['split']} | {variant} | {ours:.3f} | {_num(ref, '.2f')} | "
                           f"{_num(diff, '+.3f')} | `{rel}`{'; ' + source if ref is not None else ''} |")
        fig += ["", f"Numbers: `{rel}`; paper: {source or 'no reading for this data set'}.", ""]
    return fig, [*summary, ""]


def _physics(root: Path) -> list[str]:
    lines = ["## Fig. 1: compiled inference on the inclined plane", ""]
    s = _read(root / "physics" / "summary.json")
    if not isinstance(s, dict) or "variants" not in s:
        return [*lines, "Not finished yet (no `physics/summary.json`).", ""]
    lines += ["![heatmaps](physics/heatmaps.png)", "", "![ratios](physics/ratios.png)", "",
              f"MSE of the posterior mean against the exact posterior's (the Bayes floor, mean MSE "
              f"{s['mean_mse_bayes_all']:.5f} over {s['planes']} planes); training range: {s['planes_in_training_range']} planes. "
              "The paper reports MetaVAE MSE < 0.001 for A ∈ [20, 70], part of it below this floor (PAPER.md §3).", "",
              "| variant | median ratio (all) | max ratio in range | planes ≤ 1.2× in range | 90 % coverage in range | mean MSE |",
              "|---|---|---|---|---|---|"]
    for v, r in s["variants"].items():
        cov = r.get("coverage90_in_range") or [None, None]
        lines.append(f"| {v} | {r['median_ratio_all']:.3f} | {_num(r['max_ratio_in_range'])} | "
                     f"{r['planes_within_1.2_in_range']}/{s['planes_in_training_range']} | {_num(cov[0])}–{_num(cov[1])} | "
                     f"{r['mean_mse_all']:.5f} |")
    lines.append(f"| exact posterior (floor) | 1.000 | 1.000 | — | — | {s['mean_mse_bayes_all']:.5f} |")
    return [*lines, "", "Numbers: `physics/summary.json` (per plane: `physics/planes.csv`).", ""]


def _expfam(root: Path) -> list[str]:
    lines = ["## Figs. 2–3: sufficient statistics of exponential families", ""]
    s = _read(root / "expfam" / "summary.json")
    if not isinstance(s, dict) or "summary" not in s:
        return [*lines, "Not finished yet (no `expfam/summary.json`).", ""]
    lines += ["![sweeps](expfam/sweeps.png)", "",
              "Ratio = MSE / the exact posterior's (given x) on the same observations; reach: the first swept θ beyond "
              "the training range where the ratio exceeds 2 (— : never).", "",
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
                unseen.append(f"| {family} | {name} | {r['theta']:g} | {r['mse']:.3g} |")
    if unseen:
        lines += ["", "Families never trained on (the paper, Fig. 3: MSE at parameter 5 ≈ 25 Beta, 23 Weibull, 27 "
                  "Laplace for the 90-distribution MetaVAE):", "", "| family | estimator | θ | MSE |", "|---|---|---|---|",
                  *unseen]
    return [*lines, "", "Numbers: `expfam/summary.json` (per θ: `expfam/sweep.csv`).", ""]


def _invariance(root: Path) -> list[str]:
    lines = ["## Table 1: invariance of the representation", ""]
    result = _read(root / "invariance" / "invariance.json")
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
    return [*lines, "", "Numbers: `invariance/invariance.json`; the paper's distances are on its own code scale, "
            "so the normalised columns (distance / between-image distance) are the comparable ones.", ""]


def _runs(root: Path) -> list[str]:
    lines = ["## Runs", "", "| run | model | seed | train.device | steps (best) | train time (s) | config |", "|---|---|---|---|---|---|---|"]
    for path in sorted(root.glob("*/*/*/summary.json")):
        s = _read(path)
        if not isinstance(s, dict) or "config" not in s:
            continue
        rel = path.parent.relative_to(root).as_posix()
        train = s["config"].get("train", {})
        lines.append(f"| {rel} | {s.get('model')} | {train.get('seed')} | {train.get('device', 'cpu')} | "
                     f"{s.get('steps')} ({s.get('best_step')}) | {s.get('train_seconds', 0):.0f} | `{rel}/config.yaml` |")
    for part in ("physics", "expfam"):
        s = _read(root / part / "summary.json")
        if isinstance(s, dict) and isinstance(s.get("training"), dict):
            train = s.get("config", {}).get("train", {})
            for name, t in s["training"].items():
                lines.append(f"| {part}/{name} | {part} | {train.get('seed')} | {train.get('device', 'cpu')} | "
                             f"{t.get('steps')} ({t.get('best_step', '—')}) | {t.get('train_seconds', 0):.0f} | "
                             f"`{part}/{name}/config.yaml` |")
    if len(lines) == 4:
        lines.append("| (no finished run yet) | | | | | | |")
    return [*lines, ""]


def build_report(root: str | Path) -> Path:
    """Write ``<root>/REPORT.md`` from the files under ``root``; returns its path."""
    root = Path(root)
    if not root.is_dir():
        raise RunDirectoryError(f"{root} is not a directory: give the --out of `metavae reproduce`")
    fig6, summary = _fig6(root)
    text = "\n".join([*_header(root), *summary, *fig6, *_physics(root), *_expfam(root), *_invariance(root), *_runs(root)])
    path = root / "REPORT.md"
    atomic_write_text(path, text)
    return path
