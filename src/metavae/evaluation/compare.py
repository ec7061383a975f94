"""Train every model on one family/split, probe each, and tabulate against the paper.

Each *variant* is a registered model plus option overrides; every variant is trained with the
same data, schedule and seed, selected by the same validation IWAE, probed the same way and
scored by the same test IWAE. Results go to ``<out>/<variant>/`` (normal run directories) and
``<out>/compare.json``, ``compare.png`` (overlaid, as the paper) and ``compare_grouped.png``. A variant whose run already finished is not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from metavae.config import ExperimentConfig, experiment_from_dict
from metavae.errors import ConfigError, RunDirectoryError
from metavae.evaluation.paper import PAPER_PROBE_ACCURACY
from metavae.experiment import measure_test_log_likelihood, probe_run, train
from metavae.files import atomic_write_json, describe_os_error
from metavae.models import MODELS
from metavae.plotting.compare import plot_compare

log = logging.getLogger(__name__)

#: variant name → (registered model, option overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "metavae": ("metavae", {}),
    "homoencoder": ("homoencoder", {}),
    "neural_statistician": ("neural_statistician", {}),
    "homoencoder_vampprior": ("homoencoder_vampprior", {}),
    "vae": ("vae", {}),
    "vae_per_distribution": ("vae", {"decoders": "per_distribution"}),
}


def variant_config(base: ExperimentConfig, variant: str) -> ExperimentConfig:
    """``base`` with the variant's model: the base's model options that this model also has
    (e.g. ``z_dim``, ``hidden_dim``), then the variant's own options; other sizes at defaults."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model variant {variant!r}; choose from {', '.join(VARIANTS)}")
    model, options = VARIANTS[variant]
    raw = base.to_dict()
    valid = {f.name for f in dataclasses.fields(MODELS[model].config_class)}
    shared = {k: v for k, v in raw["model"].items() if k in valid}
    raw["model"] = {"name": model, **shared, **options}
    raw["name"] = f"{base.name}_{base.data.family}_{base.data.split}_{variant}"
    return experiment_from_dict(raw)


def run_comparison(base: ExperimentConfig, variants: list[str], out: Path, data_root: Path, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    """Train, probe and score ``variants`` into ``out/<variant>/``. A variant's finished run with the same
    config is reused; an unfinished one is resumed; ``overwrite`` moves earlier runs aside instead."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {out}: {describe_os_error(exc)}; choose another --out") from None
    rows: dict[str, Any] = {}
    for variant in variants:
        config = variant_config(base, variant)
        run_dir = out / variant
        summary_path = run_dir / "summary.json"
        if summary_path.is_file() and not overwrite:
            try:
                summary = json.loads(summary_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                summary = {}  # damaged: finish the variant again (its run resumes)
            if isinstance(summary, dict) and summary.get("config") == config.to_dict():  # same training, probe and evaluation settings
                log.info("%s: finished run found in %s, reusing it", variant, run_dir)
                rows[variant] = summary
                continue
        start = time.perf_counter()
        log.info("%s: training into %s", variant, run_dir)
        fit = train(config, run_dir, data_root, resume=not overwrite, overwrite=overwrite, progress=progress)
        train_seconds = time.perf_counter() - start
        probe = probe_run(run_dir, data_root)
        ll = measure_test_log_likelihood(run_dir, data_root)
        summary = {
            "model": config.model_name,
            "mean_accuracy": probe["mean_accuracy"],
            "per_value": probe["per_value"],
            "invariance_mean_accuracy": probe["invariance"]["mean_accuracy"],
            "test_log_likelihood": ll["test_log_likelihood"],
            "test_log_likelihood_estimand": ll["settings"]["estimand"],
            "best_val_iwae": fit.best_val,
            "best_step": fit.best_step,
            "steps": fit.step,
            "train_seconds": train_seconds,
            "config": config.to_dict(),
        }
        atomic_write_json(summary_path, summary)
        rows[variant] = summary
    result = {
        "family": base.data.family,
        "split": base.data.split,
        "seed": base.train.seed,
        "variants": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in rows.items()},
        "paper_mean_accuracy": PAPER_PROBE_ACCURACY.get((base.data.family, base.data.split), {}),
    }
    atomic_write_json(out / "compare.json", result)
    plot_compare(result, out / "compare.png")  # the paper's overlaid style
    plot_compare(result, out / "compare_grouped.png", style="grouped")
    return result


def format_compare_table(result: dict[str, Any]) -> str:
    paper = result["paper_mean_accuracy"]
    lines = [f"{result['family']} / {result['split']} (seed {result['seed']})",
             f"{'model':>22}  {'probe acc':>9}  {'paper':>6}  {'ref-clf acc':>11}  {'test IWAE':>10}"]
    for name, row in result["variants"].items():
        ref = paper.get(row["model"]) if name == row["model"] else None
        lines.append(f"{name:>22}  {row['mean_accuracy']:>9.4f}  {('≈%.2f' % ref) if ref else '—':>6}  "
                     f"{row['invariance_mean_accuracy']:>11.4f}  {row['test_log_likelihood']:>10.2f}")
    lines.append("test IWAE: log p_θi(x) with x's own decoder for metavae / vae_per_distribution; "
                 "unconditional log p(x) with one shared decoder for the others (see test_loglik.json)")
    return "\n".join(lines)
