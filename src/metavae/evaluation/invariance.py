"""Invariance of a representation to image transformations: the distances of paper Table 1.

Wu et al. (2020, Table 1) report "the average L2 distance between the representation of a base
test image and of its transformed versions", for MetaVAEs trained on one transformation family
(rows) and measured on every family (columns). Here, for one family F with grid values v_1 … v_G:

- **base** is the identity transformation of F (rotate 0°, scale 1.0, shear 0°, all in the grid):
  the untransformed test image. Its code is therefore the same in every column.
- B base test images x_1 … x_B (a seeded random subset of the test part) are embedded under
  every value: r_b(v) = posterior mean of q(z | D_b(v), T_v(x_b)) (the model's
  ``representation(x, context)``), where the context set D_b(v) holds N test images transformed
  by the *same* value v, as the linear probe does. The context sets are **paired**: the same N
  base images for every value (a pool of P test images, each query's set a fixed random N-subset
  of it), only transformed, so that a distance measures the transformation alone and not the
  resampling of the context (that part is reported separately, below).
- **distance** d_F = mean over b and over the G − 1 values v ≠ identity of ‖r_b(v) − r_b(identity)‖₂.
- **between-image distance** s_F = mean over the G values and over the B(B − 1) ordered pairs
  b ≠ b′ of ‖r_b(v) − r_b′(v)‖₂: the scale of the representation (different images, same value).
- **normalised** = d_F / s_F: 0 for an invariant code, about 1 when a transformed image is as
  far from its base as a different image is.
- **context resampling** (per model): mean ‖r_b − r′_b‖₂ of the base images under two independent
  draws of their context sets (identity value); what the paired design leaves out.

Everything is batched over images and values (each group of values is transformed and embedded
at once) and drawn from one seeded generator: the same base images and context sets for every
family and every run, so rows and columns are paired comparisons, and the result is deterministic.

:func:`invariance_of_runs` measures trained run directories (``metavae invariance``),
:func:`measure_invariance` any model with a ``representation`` on given base images.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metavae.config.loading import from_dict, require, set_dotted, to_dict
from metavae.data.context import Context, sample_without_replacement
from metavae.data.families import FAMILIES, GRIDS, IDENTITY
from metavae.data.transforms import transform_images
from metavae.errors import ConfigError, RunDirectoryError
from metavae.evaluation.paper import PAPER_INVARIANCE
from metavae.files import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["InvarianceConfig", "measure_invariance", "invariance_of_runs", "invariance_config", "write_invariance",
           "format_invariance_table"]


@dataclass(frozen=True)
class InvarianceConfig:
    """Settings of the invariance distances (``metavae invariance --set invariance.key=value``).

    ``examples``: base test images B (at least 2). ``pool_size``: test images P that the context
    sets are drawn from (at least the context size). ``families``: the measured families (columns).
    ``max_images``: images transformed and embedded at once (queries and pool of a group of values).
    ``seed``: the base images and context sets."""

    examples: int = 1000
    pool_size: int = 1000
    families: tuple[str, ...] = FAMILIES
    seed: int = 0
    max_images: int = 20000

    def __post_init__(self) -> None:
        require(self.examples >= 2, "invariance.examples", f"must be ≥ 2 (distances between different images), got {self.examples}")
        require(self.pool_size >= 1, "invariance.pool_size", f"must be ≥ 1, got {self.pool_size}")
        require(self.seed >= 0, "invariance.seed", f"must be ≥ 0, got {self.seed}")
        require(self.max_images >= 1, "invariance.max_images", f"must be ≥ 1, got {self.max_images}")
        require(len(self.families) >= 1 and len(set(self.families)) == len(self.families), "invariance.families",
                f"give each family at most once, at least one, got {list(self.families)}")
        for family in self.families:
            require(family in FAMILIES, "invariance.families", f"{family!r} is not one of {', '.join(FAMILIES)}")


def invariance_config(overrides: Sequence[tuple[str, Any]] = ()) -> InvarianceConfig:
    """The defaults with dotted ``invariance.*`` overrides, e.g. ``[("invariance.examples", 500)]``."""
    tree: dict[str, Any] = {}
    for key, value in overrides:
        if not key.startswith("invariance."):
            raise ConfigError(f"--set {key}: metavae invariance takes only invariance.* keys (e.g. invariance.examples=500); "
                              "a run's data and model are fixed by its checkpoint")
        set_dotted(tree, key, value)
    return from_dict(InvarianceConfig, tree.get("invariance", {}), prefix="invariance")


@dataclass(frozen=True)
class _Draw:
    """Which base images and context sets: ``query (B,)``, ``pool (P,)`` test-image indices and
    ``subsets (B, N)`` rows of the pool (query b's context set)."""

    query: Tensor
    pool: Tensor
    subsets: Tensor


def _draw(num_images: int, examples: int, pool_size: int, context_size: int, generator: torch.Generator) -> _Draw:
    query = torch.randperm(num_images, generator=generator)[:examples].sort().values  # (B,)
    pool = sample_without_replacement(1, num_images, pool_size, generator)[0]  # (P,)
    subsets = sample_without_replacement(examples, pool_size, context_size, generator)  # (B, N)
    return _Draw(query, pool, subsets)


def _embed(model: nn.Module, images: Tensor, family: str, values: Sequence[float], draw: _Draw, max_images: int) -> Tensor:
    """Codes ``(G, B, code_dim)`` of the B query images under each of the G values, each query with
    its paired context set transformed by the same value; values are processed in groups of at
    most ``max_images`` images (queries and pools)."""
    b, p = draw.query.numel(), draw.pool.numel()
    device = images.device
    query_images, pool_images = images[draw.query.to(device)], images[draw.pool.to(device)]  # (B, H, W), (P, H, W)
    per_group = max(1, max_images // (b + p))
    codes = []
    for start in range(0, len(values), per_group):
        group = torch.tensor(values[start : start + per_group], dtype=torch.float64)  # (g,)
        g = group.numel()
        x = transform_images(query_images.repeat(g, 1, 1), family, group.repeat_interleave(b))  # (g·B, 1, H, W)
        elements = transform_images(pool_images.repeat(g, 1, 1), family, group.repeat_interleave(p))  # (g·P, 1, H, W)
        offset = torch.arange(g).repeat_interleave(b).unsqueeze(1) * p  # (g·B, 1): value k's pool is rows k·P … (k+1)·P − 1
        index = (draw.subsets.repeat(g, 1) + offset).to(device)  # (g·B, N)
        codes.append(model.representation(x, Context(elements, index)).double().view(g, b, -1))  # (g, B, d)
    return torch.cat(codes)  # (G, B, d)


def _mean_pairwise_distance(codes: Tensor, rows: int = 256) -> Tensor:
    """Per value, the mean distance between the codes of different images: ``(G, B, d)`` → ``(G,)``."""
    g, b, _ = codes.shape
    total = codes.new_zeros(g)
    for start in range(0, b, rows):  # (G, rows, B) at a time: memory bounded for large B
        block = torch.cdist(codes[:, start : start + rows], codes, compute_mode="donot_use_mm_for_euclid_dist")
        total += block.sum(dim=(1, 2))  # the diagonal (an image with itself) is exactly 0
    return total / (b * (b - 1))


def measure_invariance(
    model: nn.Module,
    images: Tensor,
    context_size: int,
    config: InvarianceConfig | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Distances of paper Table 1 for one model (see the module docstring for the definitions).

    Args:
        model: anything with ``representation(x: (B, 1, H, W), context: Context) → (B, code_dim)``.
        images: the base test images ``(n, H, W)``, uint8 grey levels or floats in [0, 1], on the
            model's device.
        context_size: N, the size of each context set.
        config: examples, pool size, families, seed (default :class:`InvarianceConfig`).
        grids: the values of each family (default the paper's, :data:`~metavae.data.families.GRIDS`);
            each must contain the family's identity value.

    Returns:
        ``{"families": {family: {"values", "base_value", "distance_to_base": {value: d}, "between_images":
        {value: s}, "distance", "between_images_mean", "normalised"}}, "context_resampling", "code_dim"}``;
        ``normalised`` is ``None`` when every image has the same code (a between-image distance of 0).

    Raises:
        ConfigError: more examples or a larger pool than there are images, or a pool smaller
            than the context size.
        TypeError: ``model`` has no ``representation`` method.
    """
    config = InvarianceConfig() if config is None else config
    if not callable(getattr(model, "representation", None)):
        raise TypeError(f"model: {type(model).__name__} has no representation(x, context) method")
    n = int(images.shape[0])
    if config.examples > n:
        raise ConfigError(f"config key 'invariance.examples': {config.examples} exceeds the {n} test images; choose a smaller value")
    if not context_size <= config.pool_size <= n:
        raise ConfigError(f"config key 'invariance.pool_size': the context sets of {context_size} are drawn from a pool of "
                          f"test images, so it must lie between {context_size} and {n}; got {config.pool_size}")
    generator = torch.Generator().manual_seed(config.seed)
    draw = _draw(n, config.examples, config.pool_size, context_size, generator)
    again = _draw(n, config.examples, config.pool_size, context_size, generator)
    again = _Draw(draw.query, again.pool, again.subsets)  # the same images, other context sets
    families: dict[str, Any] = {}
    code_dim = 0
    for family in config.families:
        values = tuple(float(v) for v in (GRIDS if grids is None else grids)[family])
        if IDENTITY[family] not in values:
            raise ValueError(f"grids: the {family} grid {values} lacks the identity value {IDENTITY[family]:g}")
        base = values.index(IDENTITY[family])
        codes = _embed(model, images, family, values, draw, config.max_images)  # (G, B, d)
        code_dim = int(codes.shape[-1])
        to_base = (codes - codes[base]).norm(dim=-1).mean(dim=1)  # (G,)
        between = _mean_pairwise_distance(codes)  # (G,)
        others = [k for k in range(len(values)) if k != base]
        distance = float(to_base[others].mean())
        scale = float(between.mean())
        families[family] = {
            "values": list(values),
            "base_value": IDENTITY[family],
            "distance_to_base": {f"{v:g}": float(d) for v, d in zip(values, to_base)},
            "between_images": {f"{v:g}": float(s) for v, s in zip(values, between)},
            "distance": distance,
            "between_images_mean": scale,
            "normalised": distance / scale if scale > 0 else None,  # None: every image has the same code
        }
    first, second = (_embed(model, images, "rotate", (0.0,), d, config.max_images)[0] for d in (draw, again))  # (B, d)
    return {"families": families, "context_resampling": float((first - second).norm(dim=-1).mean()), "code_dim": code_dim}


def _load(run_dir: Path, data_root: Path) -> tuple[Any, Any, Any]:
    """``(config, model, task)`` of a run trained on transformed images, or one line saying why not."""
    from metavae.experiments.transformed_images import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is a file"
        raise RunDirectoryError(f"{run_dir} {what}: give the run directories of models trained with `metavae train` "
                                "(each holds checkpoints/best.pt)")
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        from metavae.config.loading import read_config_file

        try:
            saved = read_config_file(config_file)
        except ConfigError:
            saved = None
        family = saved.get("data", {}).get("family") if isinstance(saved, dict) and isinstance(saved.get("data"), dict) else None
        if isinstance(saved, dict) and family is None:
            raise RunDirectoryError(f"{run_dir} is not a run on transformed images (its config.yaml has no data.family): "
                                    "metavae invariance measures models trained on rotate, scale or shear")
        if family is not None and family not in IDENTITY:
            raise RunDirectoryError(f"{run_dir} was trained on the {family!r} family, not on a transformation of images: "
                                    f"metavae invariance transforms base images by {', '.join(IDENTITY)} (smallNORB's factors "
                                    "cannot be applied to an image; its invariance table is not measured here)")
    return load_run(run_dir, data_root)


def invariance_of_runs(run_dirs: Sequence[str | Path], data_root: str | Path, config: InvarianceConfig | None = None) -> dict[str, Any]:
    """:func:`measure_invariance` of the best checkpoint of each run (a model trained on one
    transformation family), on the base test images of its data set; the ``invariance.json`` content.

    Raises:
        RunDirectoryError, CheckpointError: a path that is not a run on transformed images, or whose
            checkpoint is missing or damaged; the message names it.
    """
    config = InvarianceConfig() if config is None else config
    if not run_dirs:
        raise ConfigError("give at least one run directory")
    rows = []
    for run_dir in run_dirs:
        start = time.perf_counter()
        run_config, model, task = _load(Path(run_dir), Path(data_root))
        try:
            measured = measure_invariance(model, task.images.test.images, run_config.data.context_size, config)
        except (TypeError, NotImplementedError):
            raise RunDirectoryError(f"{run_dir}: its model '{run_config.model_name}' has no representation(x, context) to "
                                    "measure") from None
        family, dataset = run_config.data.family, run_config.data.dataset
        paper = PAPER_INVARIANCE.get(family, {}) if (dataset, run_config.model_name) == ("mnist", "metavae") else {}
        for column, entry in measured["families"].items():
            entry["paper_distance"] = paper.get(column)
        rows.append({"run_dir": str(run_dir), "model": run_config.model_name, "dataset": dataset, "family": family,
                     "split": run_config.data.split, **measured, "seconds": time.perf_counter() - start})
        log.info("%s: %s", run_dir, {k: round(v["distance"], 3) for k, v in measured["families"].items()})
    return {
        "settings": {**to_dict(config), "representation": "posterior mean (model.representation)",
                     "base": {f: IDENTITY[f] for f in config.families},
                     "contexts": "paired: the same pool and subsets of test images for every value, transformed by the "
                                 "query's value", "checkpoint": "best"},
        "runs": rows,
    }


_CSV_FIELDS = ["run_dir", "model", "dataset", "trained_family", "split", "measured_family", "distance", "between_images_mean",
               "normalised", "context_resampling", "paper_distance", "examples"]


def write_invariance(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``invariance.json`` and ``invariance.csv`` (one row per run and measured family) into
    ``out``, atomically; returns their paths."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {out}: {exc.strerror or exc}; choose another --out") from None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in result["runs"]:
        for column, entry in row["families"].items():
            writer.writerow({"run_dir": row["run_dir"], "model": row["model"], "dataset": row["dataset"],
                             "trained_family": row["family"], "split": row["split"], "measured_family": column,
                             "distance": f"{entry['distance']:.6g}", "between_images_mean": f"{entry['between_images_mean']:.6g}",
                             "normalised": "" if entry["normalised"] is None else f"{entry['normalised']:.6g}", "context_resampling": f"{row['context_resampling']:.6g}",
                             "paper_distance": "" if entry["paper_distance"] is None else entry["paper_distance"],
                             "examples": result["settings"]["examples"]})
    json_path, csv_path = out / "invariance.json", out / "invariance.csv"
    atomic_write_json(json_path, result)
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path


def format_invariance_table(result: dict[str, Any]) -> str:
    """The printed table: one row per run (its training family and model); for each measured family
    the distance to base, the between-image distance and their ratio, then the context-resampling
    distance; the paper's Table 1 row below each MNIST MetaVAE."""
    columns = list(result["settings"]["families"])
    width = max([18, *(len(f"{r['family']} {r['model']}") for r in result["runs"])])
    group = 9 * len(columns)
    names = "".join(f"{c:>9}" for c in columns)
    lines = [
        f"mean L2 distance between the code of a base test image (identity) and the codes of its transformed versions; "
        f"{result['settings']['examples']} test images, paired contexts",
        f"{'':<{width}}{'distance to base':>{group}}   {'between images':>{group}}   {'normalised':>{group}}   {'context':>10}",
        f"{'trained on':<{width}}{names}   {names}   {names}   {'resampling':>10}",
    ]
    for row in result["runs"]:
        fam = row["families"]
        cells = ["".join(f"{'—':>9}" if fam[c][key] is None else f"{fam[c][key]:>9.3f}" for c in columns)
                 for key in ("distance", "between_images_mean", "normalised")]
        lines.append(f"{row['family'] + ' ' + row['model']:<{width}}{cells[0]}   {cells[1]}   {cells[2]}   "
                     f"{row['context_resampling']:>10.3f}")
        if any(fam[c]["paper_distance"] is not None for c in columns):
            paper = "".join(f"{fam[c]['paper_distance']:>9.2f}" if fam[c]["paper_distance"] is not None else f"{'—':>9}"
                            for c in columns)
            lines.append(f"{'  paper (Table 1)':<{width}}{paper}")
    return "\n".join(lines)
