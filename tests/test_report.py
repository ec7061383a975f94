"""REPORT.md from a directory of tiny finished runs: every section, every number from a run file."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from metavae.config import load_config
from metavae.errors import RunDirectoryError
from metavae.evaluation.invariance import invariance_config
from metavae.experiments import executor as ex
from metavae.experiments import expfam, physics
from metavae.experiments import transformed_images as images
from metavae.experiments.report import SECTIONS, build_report
from metavae.experiments.reproduce import RunSpec

PHYSICS = [("train.max_steps", 6), ("train.validate_every", 3), ("train.checkpoint_every", 3), ("data.simulations", 200),
           ("train.val_examples", 10), ("train.val_pool_size", 20), ("evaluation.simulations", 20), ("evaluation.pool_size", 20),
           ("models", ["meta", "baseline"])]
EXPFAM = [("train.max_steps", 6), ("train.validate_every", 3), ("train.checkpoint_every", 3), ("evaluation.steps", 3),
          ("evaluation.observations", 8), ("data.observations", 60), ("data.distributions", 3), ("train.val_pool_size", 6),
          ("train.val_examples", 4), ("train.context_pool_size", 12), ("train.batch_size", 4), ("data.context_size", 3),
          ("evaluation.read_out_steps", 5), ("evaluation.read_out_distributions", 2), ("experiments", ["single"])]


def tiny_manifest() -> list[RunSpec]:
    specs = []
    for family in ("rotate", "scale", "shear"):
        base = load_config(None, [("name", "tiny"), ("data.family", family), ("data.split", "sparse"), *TINY])
        variants = ("metavae", "vae_per_distribution") if family == "rotate" else ("metavae",)
        panel = f"mnist/{family}_sparse"
        models = [RunSpec(f"{panel}/{v}", "model", images.variant_config(base, v), 0, f"{panel}/{v}") for v in variants]
        specs += models
        if family == "rotate":
            specs.append(RunSpec(f"{panel}/compare", "compare", base, 0, panel, tuple(m.name for m in models)))
    inv = invariance_config([("invariance.examples", 10), ("invariance.pool_size", 20)])
    specs.append(RunSpec("invariance", "invariance", inv, 0, "invariance", tuple(f"mnist/{f}_sparse/metavae" for f in ("rotate", "scale", "shear"))))
    specs.append(RunSpec("physics", "physics", physics.load_physics_config(None, PHYSICS), 0, "physics"))
    specs.append(RunSpec("expfam", "expfam", expfam.load_expfam_config(None, EXPFAM), 0, "expfam"))
    return specs


def test_report_of_tiny_finished_runs(mnist_root, tmp_path):
    out = tmp_path / "out"
    outcomes = ex.run_manifest(tiny_manifest(), out, mnist_root, progress=False)
    assert all(o.status == "finished" for o in outcomes), ex.format_outcomes(outcomes)
    text = build_report(out).read_text()
    for section in SECTIONS:
        assert f"\n{section}" in text
    assert "Not finished yet" not in text and "No panel has finished" not in text
    compare = json.loads((out / "mnist/rotate_sparse/compare.json").read_text())
    for variant, row in compare["variants"].items():
        line = next(x for x in text.splitlines() if x.startswith(f"| mnist rotate/sparse | {variant} |"))
        assert f"| {row['mean_accuracy']:.3f} |" in line and "`mnist/rotate_sparse/compare.json`" in line
    metavae = compare["variants"]["metavae"]["mean_accuracy"]
    assert f"| 0.88 | {metavae - 0.88:+.3f} |" in text  # the paper's reading and the difference
    assert "Fig. 6, MNIST rotate / sparse" in text and "![mnist/rotate_sparse/compare.json](mnist/rotate_sparse/compare.png)" in text
    phys = json.loads((out / "physics/summary.json").read_text())
    assert f"{phys['mean_mse_bayes_all']:.5f}" in text and f"| meta | {phys['variants']['meta']['median_ratio_all']:.3f} |" in text
    fam = json.loads((out / "expfam/summary.json").read_text())["summary"]
    gauss = fam["gaussian"]["single_gaussian_metavae"]
    assert f"| gaussian | single_gaussian_metavae | {gauss['max_ratio_in_range']:.3f} |" in text
    inv = json.loads((out / "invariance/invariance.json").read_text())["runs"][0]
    assert f"| rotate metavae | {inv['families']['rotate']['distance']:.3f} (1.65) |" in text
    run = json.loads((out / "mnist/scale_sparse/metavae/summary.json").read_text())
    device = run['config']['train']['device']
    assert f"| mnist/scale_sparse/metavae | metavae | 0 | {device} | {run['steps']} ({run['best_step']}) |" in text
    assert "| physics/meta | physics |" in text and "| expfam/single_gaussian_vae | expfam |" in text
    for png in ("mnist/rotate_sparse/compare.png", "physics/heatmaps.png", "physics/ratios.png", "expfam/sweeps.png"):
        assert f"({png})" in text and (out / png).is_file()


def test_report_of_an_empty_directory_has_every_section(tmp_path):
    text = build_report(tmp_path).read_text()
    assert all(f"\n{section}" in text for section in SECTIONS)
    assert text.count("Not finished yet") == 3 and "No panel has finished yet" in text and "(no finished run yet)" in text


def test_report_refuses_a_missing_directory(tmp_path):
    with pytest.raises(RunDirectoryError, match="is not a directory"):
        build_report(tmp_path / "nope")
