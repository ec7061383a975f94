"""Helpers for end-to-end tests: marker data, a ``log_weights`` spy, a scripted validation metric.

Marker data: synthetic MNIST-format files whose pixels say where every image came from.

Each 28×28 uint8 image carries

- a constant 6×6 *centre patch* (rows and columns 11..16) whose grey level names the image:
  train image ``i`` has level ``i + 1`` (1..200), test image ``j`` has level ``201 + j`` (201..250);
- a bright 4×4 *blob* (rows 12..15, columns 21..24, level 255), centred 9 px right of the image
  centre (13.5, 13.5).

A rotation about the image centre keeps the centre pixels inside the patch (bilinear reads stay
within it), so their grey level survives exactly; the blob's centroid turns with the image.
Positive angles turn counter-clockwise on screen; the image y axis points down, so the angle of
a point (row r, column c) is ``atan2(-(r - 13.5), c - 13.5)``. Grid values are 20° apart and
the centroid is good to about a degree, so it is snapped to the nearest grid value.

Labels are ``index % 10`` in both parts, so label/image alignment is checkable too.

Everything here is plain numpy arithmetic: no library code decodes the markers.

Spies record what a model is handed (decoded markers, not the library's own bookkeeping), so
tests can check the pipeline by what actually reached the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conftest import write_idx

N_TRAIN, N_TEST = 200, 50
TEST_LEVEL_OFFSET = 200  # test image j has centre level TEST_LEVEL_OFFSET + 1 + j
SIZE, CENTRE = 28, 13.5
PATCH = slice(11, 17)
BLOB_ROWS, BLOB_COLS = slice(12, 16), slice(21, 25)

#: Wu et al. (2020), rotate / sparse: the training rotations in grid order (one decoder each)
#: and the 13 held-out rotations.
ROTATE_SPARSE_TRAIN = (-160.0, -80.0, 0.0, 80.0, 160.0)
ROTATE_SPARSE_HELD_OUT = (-180.0, -140.0, -120.0, -100.0, -60.0, -40.0, -20.0, 20.0, 40.0, 60.0, 100.0, 120.0, 140.0)
ROTATE_GRID = tuple(float(a) for a in range(-180, 180, 20))


def marker_images(n: int, first_level: int) -> np.ndarray:
    """``(n, 28, 28)`` uint8: image k has centre level ``first_level + k`` and the blob."""
    images = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    images[:, PATCH, PATCH] = (first_level + np.arange(n, dtype=np.int64))[:, None, None]
    images[:, BLOB_ROWS, BLOB_COLS] = 255
    return images


def make_marker_root(root: Path) -> Path:
    """A data root with marker MNIST idx files (200 train / 50 test images)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, first in (("train", N_TRAIN, 1), ("t10k", N_TEST, TEST_LEVEL_OFFSET + 1)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", marker_images(n, first))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return root


@dataclass(frozen=True)
class Markers:
    """What the pixels of ``n`` images say: part, base index, label and rotation (degrees)."""

    is_test: np.ndarray  # (n,) bool
    index: np.ndarray  # (n,) int, base index within its part
    angle: np.ndarray  # (n,) float, snapped to the 20° grid

    @property
    def label(self) -> np.ndarray:
        return self.index % 10

    @property
    def key(self) -> np.ndarray:
        """``(n,)`` one integer per base image: train i → i, test j → 1000 + j."""
        return np.where(self.is_test, 1000 + self.index, self.index)

    def __getitem__(self, rows) -> "Markers":
        return Markers(self.is_test[rows], self.index[rows], self.angle[rows])


def _grid_snap(angle: np.ndarray) -> np.ndarray:
    grid = np.asarray(ROTATE_GRID)
    diff = (angle[:, None] - grid[None, :] + 180.0) % 360.0 - 180.0  # circular difference
    nearest = np.abs(diff).argmin(1)
    err = np.abs(diff[np.arange(len(angle)), nearest])
    assert (err < 5.0).all(), f"blob angle off the 20° grid by up to {err.max():.1f}°: not a marker image?"
    return grid[nearest]


def decode(images: torch.Tensor | np.ndarray) -> Markers:
    """Read the markers off ``(n, 1, 28, 28)`` (or ``(n, 28, 28)``) images with values in [0, 1]."""
    img = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    img = img.reshape(-1, SIZE, SIZE).astype(np.float64)
    centre = img[:, 13:15, 13:15].reshape(len(img), 4) * 255.0
    level = np.rint(centre[:, 0])
    assert (np.abs(centre - level[:, None]) < 1e-3).all(), "centre pixels disagree: not a marker image?"
    assert ((level >= 1) & (level <= TEST_LEVEL_OFFSET + N_TEST)).all(), f"centre level out of range: {level.min()}..{level.max()}"
    is_test = level > TEST_LEVEL_OFFSET
    index = np.where(is_test, level - TEST_LEVEL_OFFSET - 1, level - 1).astype(np.int64)
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    outside = np.hypot(rows - CENTRE, cols - CENTRE) > 6.0  # beyond the (rotated) centre patch
    w = img * outside
    mass = w.sum((1, 2))
    assert (mass > 1.0).all(), "no blob found: not a marker image?"
    r = (w * rows).sum((1, 2)) / mass
    c = (w * cols).sum((1, 2)) / mass
    angle = np.degrees(np.arctan2(-(r - CENTRE), c - CENTRE))
    return Markers(is_test, index, _grid_snap(angle))


# --------------------------------------------------------------------------- spies


@dataclass(frozen=True)
class Call:
    """One ``log_weights`` call as the model received it, markers decoded."""

    query: Markers  # (B,)
    elements: Markers  # (P,) every context element handed over
    context_index: np.ndarray  # (B, N) rows of ``elements``
    decoder_index: np.ndarray | None  # (B,)
    num_samples: int
    objective: str
    grad_enabled: bool
    module_training: bool
    pixel_sum: np.ndarray  # (B,) sum of each query's pixel values

    @property
    def context(self) -> Markers:
        """``(B, N)`` markers of each query's context set."""
        return self.elements[self.context_index]


def spy_log_weights(monkeypatch, cls) -> list[Call]:
    """Record every ``cls.log_weights`` call (then run the real one); returns the growing list."""
    calls: list[Call] = []
    original = cls.log_weights

    def spy(self, x, context, num_samples=1, decoder_index=None, objective="marginal"):
        assert hasattr(context, "elements") and hasattr(context, "index"), f"expected a shared-pool context, got {type(context)}"
        calls.append(Call(
            query=decode(x), elements=decode(context.elements), context_index=context.index.detach().cpu().numpy(),
            decoder_index=None if decoder_index is None else decoder_index.detach().cpu().numpy(),
            num_samples=int(num_samples), objective=objective, grad_enabled=torch.is_grad_enabled(),
            module_training=self.training, pixel_sum=x.detach().double().flatten(1).sum(1).numpy(),
        ))
        return original(self, x, context, num_samples, decoder_index=decoder_index, objective=objective)

    monkeypatch.setattr(cls, "log_weights", spy)
    return calls


class ScriptedValidation:
    """Stands in for the trainer's validation metric: returns scripted per-distribution values
    (one row per validation) and snapshots the model's parameters at each validation."""

    def __init__(self, script) -> None:
        self.script = [list(map(float, row)) for row in script]
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, batch, num_distributions, num_importance_samples, seed):
        self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        row = self.script[len(self.snapshots) - 1]
        assert num_distributions == len(row)
        return torch.tensor(row)


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-identical state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
