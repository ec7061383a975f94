"""The invariance distances of paper Table 1 (``metavae.evaluation.invariance``, ``metavae invariance``).

Closed-form checks on stub models whose codes are known functions of the pixels: a linear code
(distances recomputed image by image, value by value, with numpy), a code that is exactly
invariant to rotations by multiples of 90° (zero rotate distance, not zero for scale), and a code
that reads only the context (paired contexts → the distance measures the transformation alone).
Then determinism, the command end to end on a tiny trained run, and bad input → one line.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from conftest import TINY
from metavae.cli import main
from metavae.data.context import Context
from metavae.data.transforms import transform_images
from metavae.errors import ConfigError
from metavae.evaluation import InvarianceConfig, measure_invariance
from metavae.evaluation.invariance import format_invariance_table, invariance_config

TINY_SET = [item for key, value in TINY for item in ("--set", f"{key}={json.dumps(value)}")]

#: small grids (with each family's identity) so the independent computation below stays quick
GRIDS = {"rotate": (-90.0, 0.0, 90.0, 180.0), "scale": (0.6, 1.0, 1.4), "shear": (-40.0, 0.0, 20.0)}


def _images(n: int = 12, size: int = 10, seed: int = 0) -> Tensor:
    """``(n, size, size)`` uint8 images of random blobs, not symmetric."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, size, size, generator=gen) ** 3 * 255).to(torch.uint8)


class LinearCode(nn.Module):
    """r(x, D) = A vec(x) + C mean_{d ∈ D} vec(d), with fixed random A, C."""

    def __init__(self, pixels: int, dim: int = 5, use_context: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.A = scale * torch.randn(dim, pixels, generator=gen)
        self.C = use_context * scale * torch.randn(dim, pixels, generator=gen)

    def representation(self, x: Tensor, context: Context) -> Tensor:
        sets = context.elements[context.index].flatten(2).mean(1)  # (B, pixels)
        return x.flatten(1) @ self.A.T + sets @ self.C.T


class RotationInvariantCode(LinearCode):
    """The linear code of the sum of x's four 90° rotations: exactly invariant to rotations by k·90°."""

    def representation(self, x: Tensor, context: Context) -> Tensor:
        sym = sum(torch.rot90(x, k, dims=(-2, -1)) for k in range(4))
        return sym.flatten(1) @ self.A.T


class ContextOnlyCode(LinearCode):
    """A code of the context set alone."""

    def representation(self, x: Tensor, context: Context) -> Tensor:
        return context.elements[context.index].flatten(2).mean(1) @ self.A.T


def _config(**kwargs) -> InvarianceConfig:
    return InvarianceConfig(**{"examples": 6, "pool_size": 8, **kwargs})


def test_linear_code_against_an_independent_computation():
    """Query images chosen by the measurement are read back from a spy; every distance is then
    recomputed with numpy, one image and one value at a time."""
    images = _images()
    model = LinearCode(100)
    queries: list[Tensor] = []

    class Spy(LinearCode):
        def representation(self, x, context):
            queries.append(x)
            return model.representation(x, context)

    result = measure_invariance(Spy(100), images, context_size=3, config=_config(families=("rotate", "scale")), grids=GRIDS)
    # which base images: the first embedded query group is rotate = -90; find them by their code at rotate 0
    chosen = [i for i in range(len(images))
              if any(torch.equal(transform_images(images[i : i + 1], "rotate", torch.tensor([-90.0]))[0], q)
                     for q in queries[0][:6])]
    assert len(chosen) == 6
    A = model.A.numpy().astype(np.float64)
    for family in ("rotate", "scale"):
        values = GRIDS[family]
        codes = np.array([[A @ transform_images(images[i : i + 1], family, torch.tensor([v]))[0].flatten().numpy()
                           for i in chosen] for v in values])  # (G, B, d)
        base = values.index(1.0 if family == "scale" else 0.0)
        to_base = [np.mean([np.linalg.norm(codes[g, b] - codes[base, b]) for b in range(6)]) for g in range(len(values))]
        between = [np.mean([np.linalg.norm(codes[g, b] - codes[g, c]) for b in range(6) for c in range(6) if b != c])
                   for g in range(len(values))]
        got = result["families"][family]
        expected_distance = np.mean([d for g, d in enumerate(to_base) if g != base])
        assert got["distance"] == pytest.approx(expected_distance, rel=1e-5)
        assert got["between_images_mean"] == pytest.approx(np.mean(between), rel=1e-5)
        assert got["normalised"] == pytest.approx(expected_distance / np.mean(between), rel=1e-5)
        assert list(got["distance_to_base"].values()) == pytest.approx(to_base, rel=1e-5, abs=1e-9)
        assert got["distance_to_base"][f"{values[base]:g}"] == 0.0
        assert list(got["between_images"].values()) == pytest.approx(between, rel=1e-5)
    assert result["context_resampling"] == 0.0  # this code ignores the context
    assert result["code_dim"] == 5


def test_a_rotation_invariant_code_has_zero_rotate_distance_only():
    result = measure_invariance(RotationInvariantCode(100), _images(), context_size=3, config=_config(), grids=GRIDS)
    rotate, scale, shear = (result["families"][f] for f in ("rotate", "scale", "shear"))
    assert rotate["distance"] < 1e-4 * rotate["between_images_mean"]
    assert scale["normalised"] > 0.1 and shear["normalised"] > 0.1
    assert rotate["between_images_mean"] > 1.0  # the code does tell images apart


def test_contexts_are_paired_and_transformed_with_the_query():
    """A code of the context alone: the contexts hold the same base images under every value, so at
    the identity and under a transformation that leaves the pool unchanged the distance is zero;
    resampling the contexts changes the code."""
    images = torch.zeros(12, 10, 10, dtype=torch.uint8)
    images[:, 4:6, 4:6] = torch.arange(12, dtype=torch.uint8).view(12, 1, 1) * 20  # a centred 2×2 square: 90° turns keep it
    result = measure_invariance(ContextOnlyCode(100), images, context_size=3, config=_config(families=("rotate",)), grids=GRIDS)
    assert result["families"]["rotate"]["distance"] < 1e-5
    assert result["families"]["rotate"]["between_images_mean"] > 0.1  # different images get different contexts
    assert result["context_resampling"] > 0.1


def test_each_query_gets_a_context_of_the_same_base_images_under_its_own_value():
    """A spy records what the model is given; every query and every context element is identified
    as (base test image, value). Each query's context holds images of its own value, and under every
    value the same base images (a subset of the pool, the same pool for all queries)."""
    images = _images(12)
    seen: list[tuple[Tensor, Context]] = []

    class Spy(LinearCode):
        def representation(self, x, context):
            seen.append((x, context))
            return super().representation(x, context)

    grid = GRIDS["shear"]
    measure_invariance(Spy(100), images, 3, _config(families=("shear",)), grids=GRIDS)
    catalogue = {(i, v): transform_images(images[i : i + 1], "shear", torch.tensor([v]))[0] for i in range(12) for v in grid}

    def identify(picture: Tensor) -> tuple[int, float]:
        (match,) = [key for key, ref in catalogue.items() if torch.equal(ref, picture)]
        return match

    x, context = seen[0]  # one group: every value at once
    sets: dict[int, dict[float, set[int]]] = {}
    pool: set[int] = set()
    for row in range(x.shape[0]):
        base, value = identify(x[row])
        members = [identify(context.elements[k]) for k in context.index[row].tolist()]
        assert {v for _, v in members} == {value}  # the context is transformed by the query's value
        sets.setdefault(base, {})[value] = {j for j, _ in members}
        pool |= {j for j, _ in members}
    assert len(sets) == 6 and all(set(by_value) == set(grid) for by_value in sets.values())
    assert all(len({frozenset(s) for s in by_value.values()}) == 1 for by_value in sets.values())  # paired across values
    assert len(pool) <= 8  # drawn from one pool of pool_size images


def test_normalisation_removes_the_scale_of_the_code():
    images = _images()
    small = measure_invariance(LinearCode(100, use_context=0.5), images, 3, _config(), grids=GRIDS)
    large = measure_invariance(LinearCode(100, use_context=0.5, scale=7.0), images, 3, _config(), grids=GRIDS)
    for family in GRIDS:
        s, big = small["families"][family], large["families"][family]
        assert big["distance"] == pytest.approx(7 * s["distance"], rel=1e-5)
        assert big["between_images_mean"] == pytest.approx(7 * s["between_images_mean"], rel=1e-5)
        assert big["normalised"] == pytest.approx(s["normalised"], rel=1e-5)
        assert s["normalised"] == pytest.approx(s["distance"] / s["between_images_mean"])


def test_deterministic_and_seeded():
    images = _images(30)
    model = LinearCode(100, use_context=1.0)
    one = measure_invariance(model, images, 3, _config(max_images=7), grids=GRIDS)  # one value per group
    two = measure_invariance(model, images, 3, _config(max_images=10_000), grids=GRIDS)  # all values at once
    assert json.dumps(one, sort_keys=True) == json.dumps(measure_invariance(model, images, 3, _config(max_images=7), grids=GRIDS),
                                                         sort_keys=True)
    for family in GRIDS:
        assert two["families"][family]["distance"] == pytest.approx(one["families"][family]["distance"], rel=1e-6)
    other = measure_invariance(model, images, 3, _config(seed=1), grids=GRIDS)
    assert other["families"]["rotate"]["distance"] != one["families"]["rotate"]["distance"]


def test_a_constant_code_has_no_scale_and_no_ratio(tmp_path):
    from metavae.evaluation.invariance import write_invariance

    class Constant(LinearCode):
        def representation(self, x, context):
            return torch.ones(x.shape[0], 3)

    measured = measure_invariance(Constant(100), _images(), 3, _config(), grids=GRIDS)
    assert all(f["distance"] == 0 and f["between_images_mean"] == 0 and f["normalised"] is None
               for f in measured["families"].values())
    result = {"settings": {**_config().__dict__, "families": list(GRIDS)},
              "runs": [{"run_dir": "r", "model": "m", "dataset": "mnist", "family": "rotate", "split": "sparse", **measured}]}
    for f in measured["families"].values():
        f["paper_distance"] = None
    json_path, csv_path = write_invariance(result, tmp_path)
    json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))  # strict JSON
    assert "—" in format_invariance_table(result) and csv_path.read_text().count(",,") >= 3


def test_default_grids_are_the_papers():
    result = measure_invariance(LinearCode(100), _images(), 3, _config())
    assert len(result["families"]["rotate"]["distance_to_base"]) == 18 and result["families"]["rotate"]["base_value"] == 0.0
    assert len(result["families"]["scale"]["distance_to_base"]) == 15 and result["families"]["scale"]["base_value"] == 1.0
    assert len(result["families"]["shear"]["distance_to_base"]) == 18


@pytest.mark.parametrize("kwargs, message", [
    ({"examples": 13}, "invariance.examples': 13 exceeds the 12 test images"),
    ({"pool_size": 2}, "invariance.pool_size'"),
    ({"pool_size": 13}, "invariance.pool_size'"),
])
def test_sizes_the_images_cannot_serve(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        measure_invariance(LinearCode(100), _images(), 3, _config(**kwargs), grids=GRIDS)


def test_a_model_without_representation_is_refused():
    with pytest.raises(TypeError, match="Linear has no representation"):
        measure_invariance(nn.Linear(2, 2), _images(), 3, _config())


@pytest.mark.parametrize("overrides, message", [
    ([("probe.pool_size", 5)], "only invariance.* keys"),
    ([("invariance.examples", 1)], "invariance.examples': must be ≥ 2"),
    ([("invariance.families", ["rotate", "flip"])], "'flip' is not one of rotate, scale, shear"),
    ([("invariance.exemples", 5)], "unknown config key 'invariance.exemples'"),
])
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        invariance_config(overrides)


# ---------------------------------------------------------------------- the command
def _train(mnist_root: Path, out: Path, family: str) -> None:
    assert main(["--data-dir", str(mnist_root), "train", f"configs/mnist/{family}_interleaved.yaml", "--out", str(out),
                 "--no-progress", *TINY_SET]) == 0


def test_command_end_to_end(mnist_root, tmp_path, capsys):
    _train(mnist_root, tmp_path / "rot", "rotate")
    _train(mnist_root, tmp_path / "sca", "scale")
    out = tmp_path / "inv"
    argv = ["--data-dir", str(mnist_root), "invariance", str(tmp_path / "rot"), str(tmp_path / "sca"), "--out", str(out),
            "--examples", "20", "--set", "invariance.pool_size=30"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "invariance.json").read_text())
    assert [r["family"] for r in result["runs"]] == ["rotate", "scale"] and result["settings"]["examples"] == 20
    for row in result["runs"]:
        assert set(row["families"]) == {"rotate", "scale", "shear"} and row["model"] == "metavae"
        for entry in row["families"].values():
            assert entry["distance"] > 0 and entry["between_images_mean"] > 0 and math.isfinite(entry["normalised"])
    assert result["runs"][0]["families"]["rotate"]["paper_distance"] == 1.65
    assert result["runs"][1]["families"]["scale"]["paper_distance"] == 2.16
    rows = list(csv.DictReader((out / "invariance.csv").read_text().splitlines()))
    assert len(rows) == 6 and rows[0]["trained_family"] == "rotate" and rows[0]["measured_family"] == "rotate"
    assert float(rows[4]["normalised"]) == pytest.approx(result["runs"][1]["families"]["scale"]["normalised"], rel=1e-5)
    assert not list(out.glob(".*tmp"))
    assert format_invariance_table(result) in printed and f"wrote {out / 'invariance.json'}" in printed
    lines = printed.splitlines()
    table = lines[lines.index(format_invariance_table(result).splitlines()[0]):]
    assert table[3].startswith("rotate metavae") and table[4].startswith("  paper (Table 1)") and "1.65" in table[4]
    assert table[5].startswith("scale metavae")
    distance = result["runs"][0]["families"]["shear"]["distance"]
    assert f"{distance:.3f}" in table[3]
    # the same command again gives the same numbers (seeded)
    assert main(argv) == 0
    assert json.loads((out / "invariance.json").read_text())["runs"][0]["families"] == result["runs"][0]["families"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metavae: error: ") and "Traceback" not in err, err
    return err


def test_bad_run_directories_give_one_line(mnist_root, tmp_path, capsys):
    out = ["--out", str(tmp_path / "inv")]
    assert main(["invariance", str(tmp_path / "nowhere"), *out]) == 2
    assert "nowhere does not exist" in _one_line(capsys)
    (tmp_path / "file").write_text("x")
    assert main(["invariance", str(tmp_path / "file"), *out]) == 2
    assert "file is a file" in _one_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["invariance", str(tmp_path / "empty"), *out]) == 2
    assert "no checkpoint at" in _one_line(capsys)
    other = tmp_path / "expfam_run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text("name: expfam\ndata:\n  distributions: 30\n")
    assert main(["invariance", str(other), *out]) == 2
    assert "is not a run on transformed images" in _one_line(capsys)
    assert not (tmp_path / "inv").exists()
    norb = tmp_path / "norb_run"
    (norb / "checkpoints").mkdir(parents=True)
    (norb / "config.yaml").write_text("name: n\ndata:\n  dataset: norb\n  family: elevation\n  split: sparse\n")
    assert main(["invariance", str(norb), *out]) == 2
    assert "trained on the 'elevation' family, not on a transformation of images" in _one_line(capsys)


def test_bad_options_give_one_line(tmp_path, capsys):
    assert main(["invariance", str(tmp_path), "--set", "probe.pool_size=3"]) == 2
    assert "only invariance.* keys" in _one_line(capsys)
    with pytest.raises(SystemExit) as stop:  # argparse's usage error, one line
        main(["invariance", str(tmp_path), "--examples", "0"])
    assert stop.value.code == 2 and "expected a whole number ≥ 1" in capsys.readouterr().err.strip().splitlines()[-1]


def test_more_examples_than_test_images(mnist_root, tmp_path, capsys):
    _train(mnist_root, tmp_path / "rot", "rotate")
    assert main(["--data-dir", str(mnist_root), "invariance", str(tmp_path / "rot"), "--out", str(tmp_path / "inv"),
                 "--examples", "201"]) == 2
    assert "invariance.examples': 201 exceeds the 200 test images" in _one_line(capsys)


def test_a_run_whose_model_has_no_representation(mnist_root, tmp_path, capsys, monkeypatch):
    from metavae.experiments import transformed_images

    _train(mnist_root, tmp_path / "rot", "rotate")
    real = transformed_images.load_run
    monkeypatch.setattr(transformed_images, "load_run", lambda *a, **k: (real(*a, **k)[0], nn.Linear(2, 2), real(*a, **k)[2]))
    assert main(["--data-dir", str(mnist_root), "invariance", str(tmp_path / "rot"), "--out", str(tmp_path / "inv")]) == 2
    assert "its model 'metavae' has no representation" in _one_line(capsys)
