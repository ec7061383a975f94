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


@pytest.mark.parametrize("text", [
    "probe_accuracy: []\n",
    "probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, metavae: 0.9}]\ninvariance: []\n",
    "probe_accuracy: [{dataset: mnist, family: rotate, split: sparse, source: x, metavae: high}]\ninvariance: []\n",
])
def test_a_malformed_file_is_refused(text):
    with pytest.raises(ValueError, match="paper_readings.yaml"):
        paper.load_readings(text)


def test_shipped_as_package_data():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "data/*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["metavae"]
    assert (Path(paper.__file__).resolve().parents[1] / paper.READINGS_FILE).is_file()
