"""The paper's readings: one data file with a source per reading, loaded under the existing names."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from metavae.data.families import FAMILIES
from metavae.evaluation import paper
from metavae.experiments.reproduce import NORB_FAMILIES, SPLITS


def test_every_panel_and_row_with_its_source():
    assert set(paper.PAPER_PROBE_ACCURACY) == {(f, s) for f in (*FAMILIES, *NORB_FAMILIES) for s in SPLITS}
    for entry in paper.PAPER_READINGS["probe_accuracy"]:
        assert entry["source"] == f"Fig. 6, {'MNIST' if entry['dataset'] == 'mnist' else 'smallNORB'} {entry['family']} / {entry['split']}"
        assert set(paper.PAPER_PROBE_ACCURACY[(entry["family"], entry["split"])]) == {"metavae", "homoencoder", "neural_statistician"}
    assert set(paper.PAPER_INVARIANCE) == set(FAMILIES) and all(set(row) == set(FAMILIES) for row in paper.PAPER_INVARIANCE.values())
    assert all(e["source"].startswith("Table 1, ") for e in paper.PAPER_READINGS["invariance"])


def test_spot_values_of_the_spec():  # PAPER.md §2: Fig. 6 table and Table 1
    assert paper.PAPER_PROBE_ACCURACY[("scale", "contiguous")] == {"metavae": 0.89, "homoencoder": 0.46, "neural_statistician": 0.33}
    assert paper.PAPER_PROBE_ACCURACY[("lighting", "contiguous")]["neural_statistician"] == 0.43
    assert paper.PAPER_INVARIANCE["scale"] == {"rotate": 5.44, "scale": 2.16, "shear": 4.92}
    norb = {e["trained"]: e[e["trained"]] for e in paper.PAPER_READINGS["invariance"] if e["dataset"] == "norb"}
    assert norb == {"elevation": 0.39, "azimuth": 0.44, "lighting": 0.26}


REST = "invariance: []\nphysics: []\nexpfam: []\n"


@pytest.mark.parametrize("text, match", [
    ("probe_accuracy: []\n", "expected the sections"),
    ("probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, metavae: 0.9}]\n" + REST, "needs dataset, family, split, source"),
    ("probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, source: x, metavae: high}]\n" + REST, "numbers for the rest"),
    ("probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, source: x}]\n" + REST, "numbers for the rest"),
    ("probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, source: x, metavae: 0.9},"
     " {dataset: mnist, family: rotate, split: sparse, source: y, metavae: 0.8}]\n" + REST, "two entries for"),
])
def test_a_malformed_file_is_refused(text, match):
    with pytest.raises(ValueError, match=match):
        paper.load_readings(text)


def test_a_well_formed_file_is_read():
    entry = "{dataset: mnist, family: rotate, split: sparse, source: x, metavae: 0.9}"
    assert paper.load_readings(f"probe_accuracy: [{entry}]\n" + REST)["probe_accuracy"][0]["metavae"] == 0.9


def test_physics_and_expfam_readings_of_the_spec():  # PAPER.md §3 and §4
    bound = paper.reading("physics", quantity="metavae_mse_bound")
    assert (bound["angle_min"], bound["angle_max"], bound["length_min"], bound["length_max"], bound["mse_below"]) == (20, 70, 2, 20, 0.001)
    assert paper.reading("physics", quantity="heatmap_scale")["baseline"] == 0.29
    assert {f: paper.reading("expfam", experiment="unseen", family=f)["metavae_many"] for f in ("beta", "weibull", "laplace")} == \
        {"beta": 25, "weibull": 23, "laplace": 27}
    gauss = paper.reading("expfam", experiment="gaussian_sweep", family="gaussian")
    assert (gauss["theta"], gauss["metavae"], gauss["vae_low"], gauss["vae_high"]) == (10, 40, 95, 157)
    assert paper.reading("expfam", experiment="unseen", family="gaussian") is None


def test_shipped_as_package_data():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "data/*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["metavae"]
    assert (Path(paper.__file__).resolve().parents[1] / paper.READINGS_FILE).is_file()
