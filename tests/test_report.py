"""REPORT.md from a directory of tiny finished runs: every section, every number from a run file."""

from __future__ import annotations

import csv
import json
import shutil

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


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A directory of tiny finished runs of every kind (the executor's path, as `metavae reproduce`)."""
    from conftest import make_mnist_root

    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "out"
    outcomes = ex.run_manifest(tiny_manifest(), out, make_mnist_root(tmp / "data"), progress=False)
    assert all(o.status == "finished" for o in outcomes), ex.format_outcomes(outcomes)
    return out


def _line(text: str, start: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(start))


def test_report_of_tiny_finished_runs(finished):
    out = finished
    text = build_report(out).read_text()
    for section in SECTIONS:
        assert f"\n{section}" in text
    assert "Not finished yet" not in text and "No panel has finished" not in text
    # Fig. 6: every variant's mean accuracy with its file, the paper's reading (the readings file's, typed here
    # from the paper: MNIST rotate / sparse, MetaVAE ≈ 0.88) and the difference
    compare = json.loads((out / "mnist/rotate_sparse/compare.json").read_text())
    for variant, row in compare["variants"].items():
        line = _line(text, f"| mnist rotate/sparse | {variant} |")
        assert f"| {row['mean_accuracy']:.3f} |" in line and "`mnist/rotate_sparse/compare.json`" in line
    metavae = compare["variants"]["metavae"]["mean_accuracy"]
    assert f"| 0.88 | {metavae - 0.88:+.3f} |" in text
    assert "| vae_per_distribution |" in text and "Fig. 6, MNIST rotate / sparse" in text
    wins = int(metavae >= compare["variants"]["vae_per_distribution"]["mean_accuracy"])
    assert f"highest mean held-out probe accuracy of the models in {wins} of 1 panels" in text
    iwae = {v: r["test_log_likelihood"] for v, r in compare["variants"].items()}
    assert f"and the highest test IWAE in {int(iwae['metavae'] >= iwae['vae_per_distribution'])} of 1 " in text
    assert f"over the panels with a reading: metavae {metavae - 0.88:+.3f} (1 panels)." in text
    for png in ("figures/fig6_mnist_rotate_sparse.png", "figures/fig6_summary.png", "physics/heatmaps.png",
                "physics/ratios.png", "expfam/sweeps.png"):
        assert f"({png})" in text and (out / png).stat().st_size > 1000, png
    # Fig. 1: the Bayes floor, the variants' ratios, and the paper's claim (MSE < 0.001 for A in [20, 70],
    # L in [2, 20]) counted plane by plane from planes.csv
    phys = json.loads((out / "physics/summary.json").read_text())
    assert f"{phys['mean_mse_bayes_all']:.5f}" in text and f"| meta | {phys['variants']['meta']['median_ratio_all']:.3f} |" in text
    with open(out / "physics/planes.csv", newline="") as fh:
        planes = [r for r in csv.DictReader(fh) if 20 <= float(r["angle"]) <= 70 and 2 <= float(r["length"]) <= 20]
    ours = sum(float(r["mse_meta"]) < 0.001 for r in planes)
    floor = sum(float(r["mse_bayes"]) < 0.001 for r in planes)
    assert f"of the {len(planes)} test planes there: ours below it on {ours}, the exact posterior" in text
    assert f"(the floor for any estimator) on {floor};" in text
    # Figs. 2-3: ratios, the Gaussian means at ±10 beside the paper (≈40 MetaVAE, ≈95–157 VAE), unseen families
    fam = json.loads((out / "expfam/summary.json").read_text())["summary"]
    gauss = fam["gaussian"]["single_gaussian_metavae"]
    assert f"| gaussian | single_gaussian_metavae | {gauss['max_ratio_in_range']:.3f} |" in text
    with open(out / "expfam/sweep.csv", newline="") as fh:
        sweep = {(r["estimator"], r["family"], float(r["theta"])): float(r["mse"]) for r in csv.DictReader(fh)}
    vae = (sweep[("single_gaussian_vae", "gaussian", -10.0)], sweep[("single_gaussian_vae", "gaussian", 10.0)])
    assert f"| single_gaussian_vae | {vae[0]:.3g} | {vae[1]:.3g} | ≈95–157 |" in text
    beta = fam["beta"]["single_gaussian_metavae"]
    assert f"| beta | single_gaussian_metavae | {beta['theta']:g} | {beta['mse']:.3g} | — |" in text
    # Table 1 with the paper's distances in parentheses (rotate-trained MetaVAE measured on rotate: 1.65)
    inv = json.loads((out / "invariance/invariance.json").read_text())["runs"][0]
    assert f"| rotate metavae | {inv['families']['rotate']['distance']:.3f} (1.65) |" in text
    # Runs: seed, the device it ran on, threads, steps, schedule
    run = json.loads((out / "mnist/scale_sparse/metavae/summary.json").read_text())
    assert run["environment"]["device"] == "cpu"
    assert run["environment"]["commit"] != "" and run["environment"]["metavae"]
    assert (f"| mnist/scale_sparse/metavae | metavae | 0 | cpu | {run['environment']['threads']} | "
            f"{run['environment']['commit']} | {run['steps']} ({run['best_step']}) | {run['config']['train']['lr']:g} |") in text
    assert "smallNORB row (trained-family distances: elevation 0.39, azimuth 0.44, lighting 0.26) is not measured" in text
    assert "| physics/meta | physics | 0 | cpu |" in text and "| expfam/single_gaussian_vae | expfam | 0 | cpu |" in text


def test_report_to_another_directory_copies_figures_and_configs(finished, tmp_path):
    dest = tmp_path / "docs" / "results"
    path = build_report(finished, dest)
    assert path == dest / "REPORT.md"
    text = path.read_text()
    for rel in ("figures/fig6_summary.png", "physics/heatmaps.png", "expfam/sweeps.png",
                "mnist/scale_sparse/metavae/config.yaml", "physics/meta/config.yaml"):
        assert f"({rel})" in text and (dest / rel).is_file(), rel
    assert (dest / "mnist/scale_sparse/metavae/config.yaml").read_bytes() == \
        (finished / "mnist/scale_sparse/metavae/config.yaml").read_bytes()
    assert not list(dest.rglob("*.pt")) and not list(dest.rglob("checkpoints"))  # no checkpoints travel with it
    assert not (finished / "docs").exists()


def test_report_header_sums_the_invocations(finished, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(finished, root)
    calls = [{"started": "2026-12-01 03:00:00 UTC", "seconds": 3600.0, "engine": "local", "jobs": 2,
              "counts": {"finished": 5, "skipped": 0, "failed": 1, "blocked": 0}},
             {"started": "2026-12-01 05:00:00 UTC", "seconds": 1800.0, "engine": "local", "jobs": 2,
              "counts": {"finished": 1, "skipped": 5, "failed": 0, "blocked": 0}}]
    runs = {"a": {"status": "finished"}, "b": {"status": "skipped"}}
    (root / "reproduce.json").write_text(json.dumps({"preset": "cpu", "invocations": calls, "runs": runs}))
    text = build_report(root).read_text()
    assert "| 2026-12-01 03:00:00 UTC | local | 2 | 5 / 0 / 1 / 0 | 1.00 |" in text
    assert "| total | | | | 1.50 |" in text and "1 finished, 1 skipped, 0 failed, 0 blocked" in text


def test_report_of_an_empty_directory_has_every_section(tmp_path):
    text = build_report(tmp_path).read_text()
    assert all(f"\n{section}" in text for section in SECTIONS)
    assert text.count("Not finished yet") == 3 and "No panel has finished yet" in text and "(no finished run yet)" in text


def test_report_refuses_a_missing_directory(tmp_path):
    with pytest.raises(RunDirectoryError, match="is not a directory"):
        build_report(tmp_path / "nope")


def test_a_damaged_record_is_one_line_naming_the_section(finished, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(finished, root)
    compare = json.loads((root / "mnist/rotate_sparse/compare.json").read_text())
    del compare["variants"]["metavae"]["mean_accuracy"]
    (root / "mnist/rotate_sparse/compare.json").write_text(json.dumps(compare))
    with pytest.raises(RunDirectoryError, match=r"the Fig\. 6 section reads has unexpected content \(KeyError: 'mean_accuracy'\)"):
        build_report(root)
